"""The precisions each deployment target serves in: the one list that `make export`, `make serve`
(`python -m serving.pipeline build --precision`, `python -m serving.serve --precision`),
`make engines` and `make gpu-check` obey with `PRECISION=`; empty means the target's default,
its first. Light on purpose: no ONNX, no torch.
"""
from __future__ import annotations

from export.tensorrt import PRECISIONS as ENGINE_PRECISIONS

# The precisions each deployment target serves in, its default first.
PRECISIONS: dict[str, tuple[str, ...]] = {
    "cpu": ("fp32", "int8"),  # ONNX Runtime on the CPU: the exported graphs, or their int8 copies
    "gpu-onnxruntime": ("fp32",),  # the exported graphs on ONNX Runtime's CUDA backend
    "gpu-torch": ("bf16", "fp32"),  # the checkpoint on PyTorch (the torch executor's dtype)
    "gpu-tensorrt": ENGINE_PRECISIONS,  # the engines `make engines PRECISION=` builds
}
TORCH_DTYPES = {"bf16": "bfloat16", "fp32": "float32"}
ALL_PRECISIONS = tuple(sorted({p for choices in PRECISIONS.values() for p in choices}))


def check_precision(target: str, precision: str | None) -> str:
    """`precision`, or `target`'s default when None; ValueError naming the problem when the
    target cannot serve it."""
    if target not in PRECISIONS:
        raise ValueError(f"unknown target {target!r}; targets: {', '.join(PRECISIONS)}")
    choices = PRECISIONS[target]
    if precision is None:
        return choices[0]
    if precision not in choices:
        hint = {"int8": " (int8 is ONNX Runtime's dynamic quantization on the CPU: TARGET=cpu)",
                "bf16": " (bf16 is for GPU targets: TensorRT engines and the torch executor)"}
        raise ValueError(f"TARGET={target} cannot serve PRECISION={precision}: it serves "
                         f"{' or '.join(choices)}{hint.get(precision, '')}")
    return precision
