"""TensorRT engines for the gpu-tensorrt target, built from the validated ONNX export.

  python -m export engines --workdir build/onnx/<model> --repository model_repository --precision bf16

Three engines: `t5_encoder`, `t5_decoder_init` (first step, from decoder_model.onnx) and
`t5_decoder` (later steps, from decoder_with_past_model.onnx): the merged decoder's If node
does not build in TensorRT (NVIDIA/TensorRT#2723). One optimization profile each, covering
batch 1..max, inputs of 1..512 tokens and caches of 1..cap positions. The timing cache is
kept and reused between builds.

Precision: `bf16` (the default) or `fp32`. No fp16: T5's activations overflow fp16's range
(transformers #9295) not only in the feed-forward output projection that transformers keeps in
fp32 (`_keep_in_fp32_modules = ["wo"]`, #20683) but in the residual stream its adds and norms
carry, and the ONNX export does not carry the model's clamp (#22097). Keeping every add and
norm in fp32 would leave little of fp16's gain; bf16 has fp32's range at fp16's cost.

Run it where TensorRT and a GPU are (the NGC image, `make engines`); elsewhere it stops with a
message saying what is missing. The engines are checked against ONNX Runtime by
`make gpu-check` (token agreement through the served repository).
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from contract.limits import MAX_DECODER_PAST, MAX_INPUT_TOKENS, TENSORRT_MAX_BATCH

ENGINES = {"t5_encoder": "encoder_model.onnx", "t5_decoder_init": "decoder_model.onnx",
           "t5_decoder": "decoder_with_past_model.onnx"}
PRECISIONS = ("bf16", "fp32")  # engine precisions offered, the default first; see above for fp16


class TensorRTUnavailable(RuntimeError):
    """TensorRT or a CUDA GPU is missing."""


@dataclass(frozen=True)
class Limits:
    max_batch: int = TENSORRT_MAX_BATCH  # serving refuses gpu-tensorrt configs above it
    max_tokens: int = MAX_INPUT_TOKENS
    max_past: int = MAX_DECODER_PAST  # the decode batch's self-attention cache never grows past it


def profile_shapes(inputs: dict[str, list], limits: Limits) -> dict[str, tuple[list[int], list[int], list[int]]]:
    """(min, opt, max) shape of every input, from the symbolic dims Optimum gives them."""
    ranges = {
        "batch_size": (1, max(1, limits.max_batch // 4), limits.max_batch),
        "encoder_sequence_length": (1, 192, limits.max_tokens),
        "decoder_sequence_length": (1, 1, 1),  # one new token per step
        "past_decoder_sequence_length": (1, 16, limits.max_past),
        "past_decoder_sequence_length + decoder_sequence_length": (2, 17, limits.max_past + 1),
    }
    shapes = {}
    for name, dims in inputs.items():
        picked = []
        for dim in dims:
            if isinstance(dim, int) and dim > 0:
                picked.append((dim, dim, dim))
            elif dim in ranges:
                picked.append(ranges[dim])
            else:
                raise ValueError(f"input {name}: no range for dimension {dim!r}")
        shapes[name] = tuple([p[i] for p in picked] for i in range(3))
    return shapes


def symbolic_inputs(onnx_path: Path) -> dict[str, list]:
    import onnx
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return {i.name: [d.dim_value or d.dim_param for d in i.type.tensor_type.shape.dim] for i in graph.input}


def _tensorrt():
    try:
        import tensorrt as trt
    except ImportError as error:
        raise TensorRTUnavailable(
            "TensorRT is not installed: build engines inside the NGC image (`make engines` does) "
            "or `pip install tensorrt-cu12` on a machine with a CUDA GPU") from error
    if shutil.which("nvidia-smi") is None:
        raise TensorRTUnavailable("no NVIDIA driver (nvidia-smi) found: TensorRT engines need a CUDA GPU")
    return trt


def build_engine(onnx_path: Path, plan_path: Path, precision: str, limits: Limits, timing_cache: Path) -> float:
    """Build one engine; return the build time in seconds."""
    trt = _tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    if precision == "bf16":
        config.set_flag(trt.BuilderFlag.BF16)
    profile = builder.create_optimization_profile()
    for name, (low, opt, high) in profile_shapes(symbolic_inputs(onnx_path), limits).items():
        profile.set_shape(name, low, opt, high)
    config.add_optimization_profile(profile)
    started = time.monotonic()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build {onnx_path} (see the log above)")
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    plan_path.write_bytes(bytes(serialized))
    timing_cache.parent.mkdir(parents=True, exist_ok=True)
    timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    return time.monotonic() - started


def build_engines(workdir: Path, repository: Path, precision: str, limits: Limits,
                  timing_cache: Path) -> dict[str, float]:
    """All three engines into `repository/<model>/1/model.plan`; build seconds per engine."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)} (no fp16: T5 overflows it), "
                         f"got {precision!r}")
    missing = [f for f in ENGINES.values() if not (workdir / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{workdir} lacks {', '.join(missing)}: run `make export` first")
    _tensorrt()  # fail before the first build if TensorRT or the GPU is missing
    return {model: build_engine(workdir / onnx_file, repository / model / "1" / "model.plan", precision, limits,
                                timing_cache)
            for model, onnx_file in ENGINES.items()}
