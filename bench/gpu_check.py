"""`make gpu-check`: the served GPU path measured on a machine with an NVIDIA GPU, in one command.

Builds a random-weight t5-base (`export.demo_model`), exports it through the one build pipeline
and serves it with the `gpu-torch` target (the checkpoint's encoder in `t5_encoder`, its decoder
inside `t5_greedy`, caches on the GPU) on the tritonserver of `make setup`, once in float32 and
once in bfloat16. For each it measures, over gRPC with the project's client:
  - token agreement with fp32 `generate` on SQuAD 2.0 dev prompts (fp32: every answer must be
    identical; bf16: the share of identical tokens);
  - p50 latency of one ~180-token question at concurrency 1;
  - answers/s at concurrency 1, 16, 64, 256 (closed loop), and at each the decode step's time,
    its mean batch and the orchestration overhead (`t5_greedy`'s counters);
  - the server's GPU memory (nvidia-smi) and resident memory (summed RSS and PSS).
and the same question through `transformers` `generate` on that GPU (fp32 and bf16: latency at
batch 1, answers/s at batch 16 and 64). Where onnxruntime-gpu or TensorRT are installed it also
measures those executors in-process (`bench.gpu_executors`). Writes docs/gpu-check.md and
docs/gpu-check.json.

On a GPU machine without network or .venv, run it from the kit that `make gpu-kit` builds here
(`bench.gpu_kit`: `tar -xJf t5qa-gpu-kit.tar.xz && t5qa-gpu-kit/run`), which needs only Python with
PyTorch (CUDA), transformers and tokenizers there. In a checkout, `make gpu-check` needs a CUDA build
of PyTorch in .venv (`make setup` pins torch==2.13.0, CPU-only from this project's index:
`.venv/bin/pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126`).
`--device cpu --size tiny` runs the whole script on the CPU on a tiny model (the cpu target with
the torch executor): `make test` runs it so from the kit, in a fresh venv holding only what the
GPU machine has (tests/server/test_gpu_check.py).
Not run on a GPU yet: no GPU has been available to this project.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import shutil
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bench.serving import closed_loop, free_port, memory_mb, scheduler_counters
from client import QAClient
from contract.files import REPOSITORY
from export.tensorrt import PRECISIONS
from shared_data import squad_pairs

REPO_ROOT = Path(__file__).resolve().parents[1]
LEVELS = (1, 16, 64, 256)


def synchronize(device: str) -> None:
    if device == "cuda":
        import torch
        torch.cuda.synchronize()


def timed_ms(fn, runs: int, device: str) -> float:
    """Median wall time of `fn` in ms, after one warm-up call."""
    fn()
    synchronize(device)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def gpu_memory_mib(pids: list[int]) -> int | None:
    """GPU memory used by `pids` (nvidia-smi), None without a GPU."""
    if shutil.which("nvidia-smi") is None:
        return None
    out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True).stdout
    used = [int(mib) for pid, mib in (line.split(",") for line in out.splitlines() if line.strip())
            if int(pid) in pids]
    return sum(used)


def agreement(ours: list[list[int]], reference: list[list[int]]) -> dict:
    """Identical answers, and identical tokens position by position over the longer answer."""
    same_tokens = total = 0
    for a, b in zip(ours, reference):
        total += max(len(a), len(b))
        same_tokens += sum(x == y for x, y in zip(a, b))
    return {"answers": len(reference), "identical_answers": sum(a == b for a, b in zip(ours, reference)),
            "token_agreement": round(same_tokens / max(total, 1), 4)}


class Served:
    """The checkpoint served with the torch executor in `dtype` (gpu-torch, or cpu for a dry run)."""

    def __init__(self, checkpoint: Path, workdir: Path, device: str, dtype: str, tokenizer):
        from serving.pipeline import build, copy_code
        from serving.repository import cuda_pool_for
        from serving.server import Ports, TritonServer

        self.name = f"Triton gpu-torch, {dtype}" if device == "cuda" else f"Triton cpu + torch executor, {dtype}"
        target = "gpu-torch" if device == "cuda" else "cpu"
        repository = workdir / f"repository-{dtype}"
        shutil.rmtree(repository, ignore_errors=True)
        copy_code(REPO_ROOT / REPOSITORY, repository)
        build(str(checkpoint), repository, target, workdir / "onnx", executor="torch", dtype=dtype)
        pool = cuda_pool_for(repository, target)
        self.server = TritonServer(repository, Ports(free_port(), free_port(), free_port()), address="127.0.0.1",
                                   log_file=workdir / f"triton-{dtype}.log",
                                   extra_args=(f"--cuda-memory-pool-byte-size=0:{pool}",) if pool else ()).start()
        self.server.wait_ready(600)
        self.url, self.tokenizer, self.local = f"127.0.0.1:{self.server.ports.grpc}", tokenizer, threading.local()

    def call(self, ids: np.ndarray, new_tokens: int) -> int:
        """One request (`bench.serving.closed_loop`'s system interface); returns its token count."""
        return len(self.answer(ids, new_tokens))

    def answer(self, ids: np.ndarray, new_tokens: int) -> list[int]:
        if not hasattr(self.local, "client"):
            self.local.client = QAClient(self.url, tokenizer=self.tokenizer)
        tokens, lengths, _ = self.local.client.generate(ids, np.ones_like(ids), new_tokens)
        return tokens[0, : lengths[0, 0]].tolist()

    def stop(self) -> None:
        self.server.stop()


def measure_served(served: Served, prompts: list[np.ndarray], reference: list[list[int]], question: np.ndarray,
                   new: int, runs: int, levels: tuple[int, ...], rounds: int) -> dict:
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda ids: served.answer(ids, new), prompts))
    result = {"system": served.name, **agreement(answers, reference),
              "p50_ms_c1": round(timed_ms(lambda: served.answer(question, new), runs, "cpu"), 1), "levels": []}
    for level in levels:
        before = scheduler_counters(served.server.ports.metrics)
        run = closed_loop(served, [question] * 4, level, level * rounds, new)
        after = scheduler_counters(served.server.ports.metrics)
        delta = {k: after[k] - before[k] for k in after}
        iterations = max(delta["iterations"], 1)
        result["levels"].append({
            "concurrency": level, "answers_per_s": run.row()["answers_per_s"], "p50_ms": run.row()["p50_ms"],
            "mean_new_tokens": run.row()["mean_new_tokens"], "errors": run.errors, "step_ms": round(1000 * delta["graph_seconds"] / iterations, 2),
            "mean_batch": round(delta["row_steps"] / iterations, 1),
            "overhead": round(1 - delta["graph_seconds"] / max(delta["busy_seconds"], 1e-9), 3)})
    pids = served.server.processes()
    rss, pss = memory_mb(pids)
    result.update(server_rss_mib=round(rss), server_pss_mib=round(pss), server_gpu_mib=gpu_memory_mib(pids))
    return result


def measure_generate(model, question: np.ndarray, new: int, runs: int, device: str, name: str) -> dict:
    import torch

    def generate(batch: int):
        ids = torch.from_numpy(np.repeat(question, batch, axis=0)).to(device)
        with torch.inference_mode():
            return model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new,
                                  min_new_tokens=new, do_sample=False, num_beams=1)

    row = {"system": name, "p50_ms_c1": round(timed_ms(lambda: generate(1), runs, device), 1)}
    for batch in (16, 64):
        row[f"answers_per_s_batch{batch}"] = round(1000 * batch / timed_ms(lambda: generate(batch), max(runs // 4, 1),
                                                                           device), 1)
    return row


def report(results: dict) -> str:
    lines = ["# GPU check", "", f"`python -m bench.gpu_check {' '.join(results['argv'])}` on {results['device_name']}; "
             f"checkpoint {results['checkpoint']} (random weights); question of {results['question_tokens']} tokens, "
             f"{results['new_tokens']} new tokens; agreement on {results['prompts']} SQuAD 2.0 dev prompts; "
             + ", ".join(f"{k} {v}" for k, v in results["versions"].items()) + ".", "",
             "| system | identical answers | token agreement | p50 ms (c=1) | server GPU MiB | server RSS MiB "
             "| server PSS MiB |", "|---|---|---|---|---|---|---|"]
    for r in results["served"]:
        lines.append(f"| {r['system']} | {r['identical_answers']}/{r['answers']} | {r['token_agreement']:.2%} | "
                     f"{r['p50_ms_c1']} | {r['server_gpu_mib']} | {r['server_rss_mib']} | {r.get('server_pss_mib', '')} |")
    lines += ["", "| system | concurrency | answers/s | p50 ms | new tokens | decode step ms | mean batch | overhead "
              "| errors |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results["served"]:
        lines += [f"| {r['system']} | {x['concurrency']} | {x['answers_per_s']} | {x['p50_ms']} | {x['mean_new_tokens']} "
                  f"| {x['step_ms']} | {x['mean_batch']} | {x['overhead']:.1%} | {x['errors']} |" for x in r["levels"]]
    lines += ["", "| transformers `generate` (all new tokens) | p50 ms (batch 1) | answers/s batch 16 | answers/s batch 64 |",
              "|---|---|---|---|"]
    lines += [f"| {g['system']} | {g['p50_ms_c1']} | {g['answers_per_s_batch16']} | {g['answers_per_s_batch64']} |"
              for g in results["generate"]]
    if results["executors"]:
        lines += ["", "| in-process executor | batch 1 ms | batch 16 ms | tokens = fp32 generate |", "|---|---|---|---|"]
        lines += [f"| {n} | {a:.1f} | {b:.1f} | {'yes' if same else 'NO'} |" for n, a, b, same in results["executors"]]
    lines += ["", *(f"- skipped: {reason}" for reason in results["skipped"])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="cpu: a dry run of the script")
    parser.add_argument("--size", choices=("base", "tiny"), default="base", help="demo model built (default base)")
    parser.add_argument("--prompts", type=int, default=64, help="SQuAD dev prompts for token agreement (default 64)")
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--runs", type=int, default=20, help="timed runs per latency figure (default 20)")
    parser.add_argument("--levels", type=int, nargs="+", default=list(LEVELS), help="concurrency levels")
    parser.add_argument("--rounds", type=int, default=4, help="answers per client at each level (default 4)")
    parser.add_argument("--precision", choices=PRECISIONS, default=PRECISIONS[0], help="TensorRT engines, if any")
    parser.add_argument("--workdir", type=Path, default=Path("build/gpu-check"), help="models, exports, repositories")
    parser.add_argument("--output", type=Path, default=Path("docs/gpu-check.md"), help="report; JSON beside it")
    args = parser.parse_args(argv)

    import torch
    from transformers import T5ForConditionalGeneration

    from client.tokenizer import load_tokenizer
    from contract.prompt import PromptEncoder
    from contract.tokens import TokenIds
    from export import workdir_for
    from export.demo_model import build_demo_model
    from export.reference import greedy_reference

    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"gpu-check: no CUDA GPU visible to PyTorch {torch.__version__} (a CPU build of torch, or no GPU): "
              "install a CUDA build into .venv (see --help), or run the script on the CPU with "
              "`--device cpu --size tiny`", file=sys.stderr)
        return 2
    checkpoint = args.workdir / "models" / f"demo-{args.size}"
    if not (checkpoint / "config.json").is_file():
        build_demo_model(args.size, checkpoint)
    args.workdir.mkdir(parents=True, exist_ok=True)
    results = {"argv": sys.argv[1:] if argv is None else argv, "checkpoint": str(checkpoint),
               "device_name": torch.cuda.get_device_name() if args.device == "cuda" else "CPU (dry run)",
               "new_tokens": args.new_tokens, "served": [], "generate": [], "executors": [], "skipped": [],
               "versions": {name: importlib.metadata.version(name) for name in ("torch", "transformers", "numpy")}}
    prompts = PromptEncoder.from_tokenizer(load_tokenizer(str(checkpoint)))
    pairs = [p for p in squad_pairs(4 * args.prompts, stride=3) if len(prompts.encode(*p)) <= prompts.max_tokens]
    inputs = [np.array([prompts.encode(*p)]) for p in pairs[: args.prompts]]
    asked = min(range(len(inputs)), key=lambda i: abs(inputs[i].shape[1] - 180))
    question = inputs[asked]
    results.update(prompts=len(inputs), question_tokens=int(question.shape[1]))

    model = T5ForConditionalGeneration.from_pretrained(checkpoint).to(args.device).eval()
    reference = [greedy_reference(model, ids, np.ones_like(ids), args.new_tokens).answer(0) for ids in inputs]
    results["generate"].append(measure_generate(model, question, args.new_tokens, args.runs, args.device,
                                                "generate, float32"))
    model = model.to(torch.bfloat16)
    results["generate"].append(measure_generate(model, question, args.new_tokens, args.runs, args.device,
                                                "generate, bfloat16"))
    token_ids = TokenIds.from_model_config(model.config)
    del model
    for dtype in ("float32", "bfloat16"):
        system = Served(checkpoint, args.workdir, args.device, dtype, prompts.tokenizer)
        try:
            results["served"].append(measure_served(system, inputs, reference, question, args.new_tokens, args.runs,
                                                    tuple(args.levels), args.rounds))
        finally:
            system.stop()
    if args.device == "cuda":
        from bench.gpu_executors import accelerated, measure
        try:  # the served path needs no ONNX; these executors run the exported graphs
            from export.onnx_export import export_model
        except ImportError as error:
            export_model, missing = None, f"no ONNX exporter ({error})"
        if not accelerated():
            export_model, missing = None, "neither onnxruntime-gpu nor tensorrt is installed"
        if export_model is None:
            results["skipped"].append(f"in-process ONNX Runtime CUDA and TensorRT executors: {missing}")
        else:
            exported = workdir_for(str(checkpoint), args.workdir / "onnx")
            export_model(str(checkpoint), exported)
            rows, skipped = measure(exported, token_ids, question, np.repeat(question, 16, axis=0),
                                    np.array(reference[asked]), args.new_tokens, args.runs, args.precision,
                                    lambda fn, runs: timed_ms(fn, runs, "cuda"))
            results["executors"], results["skipped"] = rows, results["skipped"] + skipped
    else:
        results["skipped"].append("in-process ONNX Runtime CUDA and TensorRT executors: no GPU (dry run)")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report(results))
    args.output.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    print(report(results))
    fp32 = results["served"][0]
    if fp32["identical_answers"] != fp32["answers"]:
        print(f"GPU CHECK FAILED: fp32 served answers differ from generate "
              f"({fp32['identical_answers']}/{fp32['answers']} identical)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
