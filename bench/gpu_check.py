"""`make gpu-check`: one script for a machine with an NVIDIA GPU (under 10 minutes on one GPU).

Builds what the machine allows and measures, on the demo t5-base (or `--checkpoint`), one
~180-token SQuAD question with 16 new tokens at batch 1 and 16:
  - PyTorch `generate` on the GPU, fp32 and bf16 (the baselines);
  - our decode loop over the ONNX graphs with ONNX Runtime's CUDA execution provider, if
    onnxruntime-gpu is installed (host arrays between steps);
  - our decode loop over TensorRT engines (bf16 by default) with the cache kept on the GPU as
    PyTorch tensors (`serving.arrays.TorchArrays`), if TensorRT is installed: the gpu-tensorrt
    target's path without Triton around it.
Each path's tokens are compared with fp32 `generate`. Writes docs/gpu-check.md. Paths the
machine cannot run are listed as skipped, with the reason.

Needs, on that machine: a CUDA build of PyTorch in .venv (for example
`.venv/bin/pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126`),
and optionally onnxruntime-gpu and tensorrt-cu12 for the two paths of ours.

Written without access to a GPU: it has not run yet. Expect to fix details on first contact.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

from export.tensorrt import PRECISIONS


def timed(fn, runs: int) -> float:
    import torch
    fn()  # warm-up
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


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


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="build/models/demo-base")
    parser.add_argument("--precision", choices=PRECISIONS, default=PRECISIONS[0], help="TensorRT engines")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--output", type=Path, default=Path("docs/gpu-check.md"))
    args = parser.parse_args()

    import torch
    from transformers import T5ForConditionalGeneration

    from client.tokenizer import load_tokenizer
    from contract.prompt import PromptEncoder
    from contract.tokens import TokenIds
    from export import workdir_for
    from export.demo_model import build_demo_model
    from export.onnx_export import export_model
    from runtime.arrays import NumpyArrays, TorchArrays
    from contract.graphs import DecoderSignature
    from runtime.greedy import greedy_generate, split_feed
    from shared_data import squad_pairs

    rows, skipped = [], []
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU visible to PyTorch (a CPU build of torch, or no GPU): gpu-check "
                         "measures nothing here; see `python -m bench.gpu_check --help`")
    if not Path(args.checkpoint, "config.json").is_file() and args.checkpoint.startswith("build/models/demo-"):
        build_demo_model(args.checkpoint.rsplit("-", 1)[1], Path(args.checkpoint))
    workdir = workdir_for(args.checkpoint, Path("build/onnx"))
    export_model(args.checkpoint, workdir)
    prompts = PromptEncoder.from_tokenizer(load_tokenizer(str(workdir / "tokenizer.json")))
    pairs = squad_pairs(400, stride=7)
    question = min(pairs, key=lambda p: abs(len(prompts.encode(*p)) - 180))
    single = np.array([prompts.encode(*question)])
    batch16 = np.repeat(single, 16, axis=0)
    new = 16

    model = T5ForConditionalGeneration.from_pretrained(args.checkpoint).cuda().eval()
    token_ids = TokenIds.from_model_config(model.config)

    def generate(ids: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(ids).cuda()
        with torch.inference_mode():
            return model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=new,
                                  do_sample=False, num_beams=1)[:, 1:].cpu().numpy()

    reference = generate(single)[0]
    for dtype in ("fp32", "bf16"):
        if dtype == "bf16":
            model = model.to(torch.bfloat16)
        tokens = generate(single)[0]
        rows.append((f"PyTorch generate, {dtype}", timed(lambda: generate(single), args.runs),
                     timed(lambda: generate(batch16), args.runs), np.array_equal(tokens, reference)))
    del model
    torch.cuda.empty_cache()

    import onnxruntime as ort
    if "CUDAExecutionProvider" in ort.get_available_providers():
        options = ort.SessionOptions()
        encoder = ort.InferenceSession(str(workdir / "encoder_model.onnx"), options, providers=["CUDAExecutionProvider"])
        decoder = ort.InferenceSession(str(workdir / "decoder_model_merged.onnx"), options,
                                       providers=["CUDAExecutionProvider"])
        signature = DecoderSignature.from_inputs({i.name: i.shape for i in decoder.get_inputs()})

        def ours_ort(ids: np.ndarray) -> np.ndarray:
            states = encoder.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0]
            run = lambda feed, outputs: dict(zip(outputs, decoder.run(outputs, feed)))  # noqa: E731
            return greedy_generate(run, signature, token_ids, states, np.ones_like(ids), np.full(len(ids), new),
                                   arrays=NumpyArrays()).tokens

        tokens = ours_ort(single)[0]
        rows.append(("our loop, ONNX Runtime CUDA EP, fp32", timed(lambda: ours_ort(single), args.runs),
                     timed(lambda: ours_ort(batch16), args.runs), np.array_equal(tokens, reference)))
    else:
        skipped.append("ONNX Runtime CUDA EP: onnxruntime-gpu is not installed")

    try:
        import tensorrt  # noqa: F401
        from export.tensorrt import Limits, build_engines
        engines = Path("build/gpu-check/engines")
        started = time.monotonic()
        build_engines(workdir, engines, args.precision, Limits(max_batch=16), Path("build/tensorrt/timing.cache"))
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
        rows.append((f"our loop, TensorRT {args.precision}, cache on the GPU (build {build_s:.0f} s)",
                     timed(lambda: ours_trt(single), args.runs), timed(lambda: ours_trt(batch16), args.runs),
                     np.array_equal(tokens, reference)))
    except ImportError:
        skipped.append("TensorRT: the tensorrt Python package is not installed")

    lines = ["# GPU check", "", f"Device: {torch.cuda.get_device_name()}; checkpoint {args.checkpoint}; "
             f"{single.shape[1]} prompt tokens, {new} new tokens; median of {args.runs} runs.", "",
             "| path | batch 1 ms | batch 16 ms | tokens = fp32 generate |", "|---|---|---|---|"]
    lines += [f"| {name} | {one:.1f} | {sixteen:.1f} | {'yes' if same else 'NO'} |" for name, one, sixteen, same in rows]
    lines += ["", *(f"- skipped: {reason}" for reason in skipped)]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _inputs(path: Path) -> dict[str, list]:
    import onnx
    graph = onnx.load(str(path), load_external_data=False).graph
    return {i.name: [d.dim_value or -1 for d in i.type.tensor_type.shape.dim] for i in graph.input}


def _d_model(workdir: Path) -> int:
    return _inputs(workdir / "decoder_model.onnx")["encoder_hidden_states"][2]


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
