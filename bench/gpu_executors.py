"""The in-process executors other than PyTorch, measured by `make gpu-check` when the machine
has them: our decode loop over the ONNX graphs on ONNX Runtime's CUDA execution provider
(onnxruntime-gpu, IO binding through `runtime.onnx_runtime.BoundGraph`: the cache stays on the
GPU), and over TensorRT engines with the cache kept on
the GPU as PyTorch tensors (`runtime.arrays.TorchArrays`; the gpu-tensorrt target's path without
Triton around it). Each returns rows of (path, batch-1 ms, batch-16 ms, tokens equal to fp32
`generate`) and the reasons for what it skipped. Not run yet: no GPU has been available."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from contract.graphs import DecoderSignature
from contract.tokens import TokenIds
from runtime.arrays import TorchArrays
from runtime.greedy import greedy_generate, split_feed


class TensorRTGraph:
    """One engine called with PyTorch CUDA tensors (TensorRT 10 name-based I/O)."""

    def __init__(self, plan: Path):
        import tensorrt as trt
        import torch
        self.torch = torch
        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan.read_bytes())
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.dtypes = {trt.float32: torch.float32, trt.int64: torch.int64, trt.bfloat16: torch.bfloat16,
                       trt.float16: torch.float16, trt.bool: torch.bool, trt.int32: torch.int32}
        self.trt = trt

    def __call__(self, feed: dict, outputs: list[str]) -> dict:
        torch = self.torch
        keep = []
        for name, value in feed.items():
            tensor = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(value))
            tensor = tensor.cuda().contiguous()
            keep.append(tensor)
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        results = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            buffer = torch.empty(shape, dtype=self.dtypes[self.engine.get_tensor_dtype(name)], device="cuda")
            self.context.set_tensor_address(name, buffer.data_ptr())
            results[name] = buffer
        if not self.context.execute_async_v3(torch.cuda.current_stream().cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        return {name: results[name] for name in outputs}


def accelerated() -> list[str]:
    """The accelerated runtimes installed here: ONNX Runtime's CUDA EP, TensorRT."""
    import importlib.util

    try:
        import onnxruntime as ort
        found = ["onnxruntime CUDA"] if "CUDAExecutionProvider" in ort.get_available_providers() else []
    except ImportError:
        found = []
    return found + (["TensorRT"] if importlib.util.find_spec("tensorrt") else [])


def measure(workdir: Path, token_ids: TokenIds, single: np.ndarray, batch16: np.ndarray, reference: np.ndarray,
            new: int, runs: int, precision: str, timed: Callable) -> tuple[list[tuple], list[str]]:
    """The ONNX Runtime CUDA and TensorRT paths, where installed."""
    rows, skipped = [], []
    if "onnxruntime CUDA" in accelerated():
        import torch

        from runtime.onnx_runtime import BoundGraph, encode_with, open_session
        encoder = open_session(str(workdir / "encoder_model.onnx"), device="cuda")
        decoder = BoundGraph(str(workdir / "decoder_model_merged.onnx"), device="cuda")
        signature = DecoderSignature.from_inputs({i.name: i.shape for i in decoder.session.get_inputs()})

        def ours_ort(ids: np.ndarray) -> np.ndarray:
            states = torch.from_numpy(encode_with(encoder, ids, np.ones_like(ids))).cuda()
            return greedy_generate(decoder, signature, token_ids, states, np.ones_like(ids), np.full(len(ids), new),
                                   arrays=TorchArrays()).tokens

        tokens = ours_ort(single)[0]
        rows.append(("our loop, ONNX Runtime CUDA EP + IO binding, fp32, cache on the GPU",
                     timed(lambda: ours_ort(single), runs), timed(lambda: ours_ort(batch16), runs),
                     np.array_equal(tokens, reference)))
    else:
        skipped.append("ONNX Runtime CUDA EP: onnxruntime-gpu is not installed")

    try:
        import tensorrt  # noqa: F401
        from export.tensorrt import Limits, build_engines
        engines = Path("build/gpu-check/engines")
        started = time.monotonic()
        build_engines(workdir, engines, precision, Limits(max_batch=16), Path("build/tensorrt/timing.cache"))
        build_s = time.monotonic() - started
        encoder = TensorRTGraph(engines / "t5_encoder/1/model.plan")
        init = TensorRTGraph(engines / "t5_decoder_init/1/model.plan")
        with_past = TensorRTGraph(engines / "t5_decoder/1/model.plan")
        signature = DecoderSignature.from_inputs({**{n: s for n, s in _inputs(workdir / "decoder_with_past_model.onnx").items()},
                                                  "encoder_hidden_states": [-1, -1, _d_model(workdir)]})

        def run_split(feed, outputs):
            first, feed = split_feed(feed, signature)
            return (init if first else with_past)(feed, outputs)

        def ours_trt(ids: np.ndarray) -> np.ndarray:
            states = encoder({"input_ids": ids, "attention_mask": np.ones_like(ids)}, ["last_hidden_state"])
            return greedy_generate(run_split, signature, token_ids, states["last_hidden_state"].float(), np.ones_like(ids),
                                   np.full(len(ids), new), arrays=TorchArrays()).tokens

        tokens = ours_trt(single)[0]
        rows.append((f"our loop, TensorRT {precision}, cache on the GPU (build {build_s:.0f} s)",
                     timed(lambda: ours_trt(single), runs), timed(lambda: ours_trt(batch16), runs),
                     np.array_equal(tokens, reference)))
    except ImportError:
        skipped.append("TensorRT: the tensorrt Python package is not installed")

    return rows, skipped


def _inputs(path: Path) -> dict[str, list]:
    import onnx
    graph = onnx.load(str(path), load_external_data=False).graph
    return {i.name: [d.dim_value or -1 for d in i.type.tensor_type.shape.dim] for i in graph.input}


def _d_model(workdir: Path) -> int:
    return _inputs(workdir / "decoder_model.onnx")["encoder_hidden_states"][2]
