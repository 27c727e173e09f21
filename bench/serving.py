"""`make bench`: the serving benchmark, every system measured in one run on the same inputs.

Systems: (a) a one-request-at-a-time `transformers` server, (b) the same around Optimum's
`ORTModelForSeq2SeqLM`, (c) this project's `t5_qa` over gRPC with iteration-level batching,
and (c') the same server with request-level batching (new requests wait for an empty batch).
Inputs: real SQuAD 2.0 dev questions, `--new-tokens` generated per answer (the demo model
rarely stops early; the tables report the tokens actually generated). Closed loop at each
concurrency (latency p50/p95/p99, answers/s), an open loop with Poisson arrivals at a fraction
of (c)'s saturation throughput for (c) vs (c'), `perf_analyzer` on (c) when it is installed,
server resident memory, and the roofline computed from in-process encoder and step times.

  python -m bench.serving --checkpoint build/models/demo-base      # after `make export`/`make serve`
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from client import QAClient
from client.tokenizer import load_tokenizer
from contract.prompt import PromptEncoder
from runtime.onnx_runtime import OrtSeq2Seq
from serving.repository import write_repository
from serving.server import Ports, TritonServer
from contract.names import TOKENIZER_FILE
from shared_data import squad_pairs

REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            total += int(next(l for l in status.splitlines() if l.startswith("VmRSS:")).split()[1])
        except (OSError, StopIteration):
            pass
    return total / 1024


def process_tree(root: int) -> list[int]:
    pids, frontier = [root], [root]
    while frontier:
        parent = frontier.pop()
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]) == parent:
                    pids.append(int(pid))
                    frontier.append(int(pid))
            except (OSError, IndexError, ValueError):
                pass
    return pids


class Baseline:
    """A one-request-at-a-time HTTP server (`bench.baseline_server`) in a subprocess."""

    def __init__(self, engine: str, checkpoint: str):
        self.name = {"transformers": "(a) transformers, one at a time",
                     "optimum": "(b) optimum ORT, one at a time"}[engine]
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.baseline_server", "--engine", engine, "--model", checkpoint,
             "--onnx-dir", str(REPO_ROOT / "build/bench" / ("optimum-" + checkpoint.strip("/").replace("/", "--"))),
             "--port", str(self.port)], cwd=REPO_ROOT)

    def call(self, ids: np.ndarray, new_tokens: int) -> int:
        body = json.dumps({"input_ids": ids.tolist(), "max_new_tokens": new_tokens}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/generate", body,
                                         {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=600) as r:
            return len(json.loads(r.read())["output_ids"][0])

    def wait_ready(self, probe: np.ndarray) -> None:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited")
            try:
                self.call(probe, 1)
                return
            except OSError:
                time.sleep(1)
        raise TimeoutError(self.name)

    def rss(self) -> float:
        return rss_mb([self.process.pid])

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


class Triton:
    """This project's server over a copy of the exported repository, with `batching` chosen."""

    def __init__(self, repository: Path, batching: str, workdir: Path):
        self.name = {"iteration": "(c) t5_qa, iteration-level batching",
                     "request": "(c') t5_qa, request-level batching"}[batching]
        copy = workdir / f"repository-{batching}"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(repository, copy, copy_function=os.link, ignore=shutil.ignore_patterns("__pycache__"))
        write_repository(copy, "cpu", batching=batching)
        self.server = TritonServer(copy, Ports(free_port(), free_port(), free_port()), address="127.0.0.1",
                                   log_file=workdir / f"triton-{batching}.log").start()
        self.url = f"127.0.0.1:{self.server.ports.grpc}"
        self.local = threading.local()

    def call(self, ids: np.ndarray, new_tokens: int) -> int:
        if not hasattr(self.local, "client"):
            self.local.client = QAClient(self.url, tokenizer=TOKENIZER)
        _, lengths, _ = self.local.client.generate(ids, np.ones_like(ids), new_tokens)
        return int(lengths[0, 0])

    def wait_ready(self, probe: np.ndarray) -> None:
        self.server.wait_ready(600)
        self.call(probe, 1)

    def rss(self) -> float:
        return rss_mb(process_tree(self.server.process.pid))

    def stop(self) -> None:
        self.server.stop()


@dataclass
class Run:
    system: str
    mode: str  # "closed c=N" or "open λ=…"
    latencies_ms: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    wall_s: float = 0.0
    errors: int = 0

    def row(self) -> dict:
        lat = sorted(self.latencies_ms)
        pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]  # noqa: E731
        return {"system": self.system, "mode": self.mode, "answers": len(lat), "errors": self.errors,
                "p50_ms": round(statistics.median(lat)), "p95_ms": round(pick(0.95)), "p99_ms": round(pick(0.99)),
                "answers_per_s": round(len(lat) / self.wall_s, 3),
                "mean_new_tokens": round(statistics.mean(self.tokens), 1)}


def scheduler_counters(metrics_port: int) -> dict[str, float]:
    """t5_greedy's custom metrics (serving.scheduler counters) from Triton's metrics endpoint."""
    import re
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    return {key: float(re.search(rf"^t5_greedy_{key}_total(?:{{[^}}]*}})? (\S+)$", text, re.M).group(1))
            for key in ("iterations", "row_steps", "graph_seconds", "busy_seconds")}


def closed_loop(system, inputs: list[np.ndarray], concurrency: int, count: int, new_tokens: int) -> Run:
    run = Run(system.name, f"closed c={concurrency}")
    counter = iter(range(count))
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                index = next(counter, None)
            if index is None:
                return
            start = time.perf_counter()
            try:
                tokens = system.call(inputs[index % len(inputs)], new_tokens)
            except Exception:  # noqa: BLE001 - counted, reported
                run.errors += 1
                continue
            with lock:
                run.latencies_ms.append((time.perf_counter() - start) * 1000)
                run.tokens.append(tokens)

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    run.wall_s = time.perf_counter() - start
    return run


def open_loop(system, inputs: list[np.ndarray], rate: float, duration_s: float, new_tokens: int, seed: int) -> Run:
    """Poisson arrivals at `rate`/s for `duration_s`; latency counts from the arrival time."""
    run = Run(system.name, f"open λ={rate:.2f}/s")
    rng = random.Random(seed)
    lock = threading.Lock()

    def one(arrival: float, index: int) -> None:
        try:
            tokens = system.call(inputs[index % len(inputs)], new_tokens)
        except Exception:  # noqa: BLE001
            with lock:
                run.errors += 1
            return
        with lock:
            run.latencies_ms.append((time.perf_counter() - arrival) * 1000)
            run.tokens.append(tokens)

    start = time.perf_counter()
    with ThreadPoolExecutor(64) as pool:
        at, index = start, 0
        while at - start < duration_s:
            at += rng.expovariate(rate)
            time.sleep(max(0.0, at - time.perf_counter()))
            pool.submit(one, at, index)
            index += 1
    run.wall_s = time.perf_counter() - start
    return run


def roofline(repository: Path, inputs: list[np.ndarray], new_tokens: int, concurrency: int) -> dict:
    """Answers/s if the server did nothing but one encoder call per request (not batched) and
    `new_tokens` decode steps at batch `concurrency`, timed in-process with ONNX Runtime."""
    from contract.tokens import TokenIds
    from runtime.greedy import DecodeBatch, Sequence
    tokens = TokenIds.from_dict(json.loads((repository / "export_manifest.json").read_text())["token_ids"])
    ort = OrtSeq2Seq(str(repository / "t5_encoder/1/model.onnx"), str(repository / "t5_decoder/1/model.onnx"))
    encoder_ms = []
    for ids in inputs[:5]:
        start = time.perf_counter()
        ort.encode(ids, np.ones_like(ids))
        encoder_ms.append((time.perf_counter() - start) * 1000)
    rows = [Sequence(ort.encode(ids, np.ones_like(ids))[0], np.ones(ids.shape[1], np.int64), 10_000)
            for ids in (inputs * concurrency)[:concurrency]]
    step_ms: dict[int, float] = {}
    for batch_size in sorted({1, concurrency}):
        batch = DecodeBatch(ort.run_decoder, ort.signature, tokens)
        batch.admit([Sequence(r.states, r.mask, 10_000) for r in rows[:batch_size]])
        times = []
        for _ in range(new_tokens):
            start = time.perf_counter()
            batch.step()
            times.append((time.perf_counter() - start) * 1000)
        step_ms[batch_size] = statistics.median(times)
    encoder = statistics.median(encoder_ms)
    seconds = (concurrency * encoder + new_tokens * step_ms[concurrency]) / 1000
    return {"encoder_ms": round(encoder, 1), "step_ms": {str(k): round(v, 1) for k, v in step_ms.items()},
            "answers_per_s": round(concurrency / seconds, 3), "concurrency": concurrency}


def perf_analyzer(url: str, ids: np.ndarray, new_tokens: int, levels: list[int], workdir: Path) -> list[dict] | None:
    binary = REPO_ROOT / ".tools/perf_analyzer/perf_analyzer"
    if not binary.is_file():
        return None
    data = workdir / "perf_input.json"
    data.write_text(json.dumps({"data": [{"input_ids": {"content": ids[0].tolist(), "shape": [ids.shape[1]]},
                                          "attention_mask": {"content": [1] * ids.shape[1], "shape": [ids.shape[1]]},
                                          "max_new_tokens": {"content": [new_tokens], "shape": [1]}}]}))
    rows = []
    for level in levels:
        csv = workdir / f"perf_c{level}.csv"
        env = dict(os.environ, LD_LIBRARY_PATH=str(binary.parent))
        subprocess.run([str(binary), "-m", "t5_qa", "-u", url, "-i", "grpc", "--input-data", str(data),
                        "--concurrency-range", str(level), "--measurement-mode", "count_windows",
                        "--measurement-request-count", str(max(8, 2 * level)), "--stability-percentage", "50",
                        "--max-trials", "3", "-f", str(csv)], check=True, env=env, capture_output=True, timeout=900)
        header, values = csv.read_text().splitlines()[:2]
        record = dict(zip(header.split(","), values.split(",")))
        rows.append({"concurrency": level, "answers_per_s": float(record["Inferences/Second"]),
                     "p50_ms": round(float(record["p50 latency"]) / 1000), "p95_ms": round(float(record["p95 latency"]) / 1000),
                     "p99_ms": round(float(record["p99 latency"]) / 1000)})
    return rows


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    closed = [r for r in rows if r["mode"].startswith("closed")]
    systems = list(dict.fromkeys(r["system"] for r in closed))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for system in systems:
        mine = [r for r in closed if r["system"] == system]
        levels = [int(r["mode"].split("=")[1]) for r in mine]
        left.plot(levels, [r["answers_per_s"] for r in mine], marker="o", label=system)
        right.plot(levels, [r["p95_ms"] for r in mine], marker="o", label=system)
    for axis, title in ((left, "throughput (answers/s)"), (right, "p95 latency (ms)")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("concurrency")
        axis.set_title(title)
        axis.grid(alpha=0.3)
    left.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


TOKENIZER = None


def main() -> None:
    global TOKENIZER
    parser = argparse.ArgumentParser(prog="python -m bench.serving", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="build/models/demo-base", help="checkpoint the repository was exported from")
    parser.add_argument("--repository", type=Path, default=Path("model_repository"), help="exported model repository")
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=2, help="requests per level = this x concurrency (min 8)")
    parser.add_argument("--open-seconds", type=float, default=60.0)
    parser.add_argument("--open-load", type=float, default=0.8, help="open-loop rate as a fraction of saturation")
    parser.add_argument("--output", type=Path, default=Path("docs"))
    parser.add_argument("--skip-baselines", action="store_true")
    args = parser.parse_args()

    workdir = REPO_ROOT / "build/bench"
    workdir.mkdir(parents=True, exist_ok=True)
    TOKENIZER = load_tokenizer(str(args.repository / TOKENIZER_FILE))
    prompts = PromptEncoder.from_tokenizer(TOKENIZER)
    inputs = [np.array([prompts.encode(q, c)], dtype=np.int64) for q, c in squad_pairs(64, stride=181)]
    rows: list[dict] = []
    rss: dict[str, float] = {}
    extra: dict = {"prompt_tokens_median": statistics.median(i.shape[1] for i in inputs)}

    def measure(system) -> None:
        system.wait_ready(inputs[0])
        for ids in inputs[:2]:
            system.call(ids, args.new_tokens)  # warm-up
        for level in args.concurrency:
            before = scheduler_counters(system.server.ports.metrics) if isinstance(system, Triton) else None
            run = closed_loop(system, inputs, level, max(8, args.requests * level), args.new_tokens)
            rows.append(run.row())
            if before is not None:  # the scheduler's own work per iteration, at this concurrency
                after = scheduler_counters(system.server.ports.metrics)
                delta = {k: after[k] - before[k] for k in after}
                iterations = max(delta["iterations"], 1)
                rows[-1]["mean_batch"] = round(delta["row_steps"] / iterations, 2)
                rows[-1]["graph_ms_per_step"] = round(1000 * delta["graph_seconds"] / iterations, 1)
                rows[-1]["overhead_ms_per_step"] = round(1000 * (delta["busy_seconds"] - delta["graph_seconds"])
                                                         / iterations, 2)
            print(json.dumps(rows[-1]), flush=True)
        rss[system.name] = round(system.rss())

    systems = [] if args.skip_baselines else ["transformers", "optimum"]
    for engine in systems:
        baseline = Baseline(engine, args.checkpoint)
        try:
            measure(baseline)
        finally:
            baseline.stop()
    saturation = {}
    for batching in ("iteration", "request"):
        triton = Triton(args.repository, batching, workdir)
        try:
            measure(triton)
            saturation[batching] = max(r["answers_per_s"] for r in rows if r["system"] == triton.name)
            if batching == "iteration":
                extra["perf_analyzer"] = perf_analyzer(triton.url, inputs[0], args.new_tokens, args.concurrency, workdir)
                rate = args.open_load * saturation["iteration"]
                extra["open_rate"] = rate
            run = open_loop(triton, inputs, extra["open_rate"], args.open_seconds, args.new_tokens, seed=7)
            rows.append(run.row())
            print(json.dumps(rows[-1]), flush=True)
        finally:
            triton.stop()
    extra["roofline"] = roofline(args.repository, inputs, args.new_tokens, max(args.concurrency))
    extra["rss_mb"] = rss
    extra["open_load"] = args.open_load
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "benchmarks.json").write_text(json.dumps({"rows": rows, **extra}, indent=2) + "\n")
    plot(rows, args.output / "benchmarks.png")
    from bench.report import render
    command = "make bench" if args.checkpoint == "build/models/demo-base" else "python -m bench.serving " + " ".join(sys.argv[1:])
    (args.output / "benchmarks.md").write_text(render(json.loads((args.output / "benchmarks.json").read_text()), command) + "\n")
    print(json.dumps(extra, indent=2))


if __name__ == "__main__":
    main()
