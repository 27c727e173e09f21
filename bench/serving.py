"""`make bench`: the serving benchmark, every system measured in one run on the same inputs.

Systems (`--systems`, keys in brackets): [a] a one-request-at-a-time `transformers` server,
[b] the same around Optimum's `ORTModelForSeq2SeqLM`, [c] this project's `t5_qa` over gRPC with
iteration-level batching, [cr] (c') the same server with request-level batching (new requests wait
for an empty batch), [d] CTranslate2 fp32 and [d8] (d') CTranslate2 int8, each with its own
batching (`bench.baseline_server`), and [c8] `t5_qa` int8 with iteration-level batching (skipped,
with a note, while `serving.pipeline.build` has no `precision`).
Inputs: real SQuAD 2.0 dev questions, `--new-tokens` generated per answer (the demo model
rarely stops early; the tables report the tokens actually generated). Every system is started
first and kept up; then `--repetitions` rounds, in each of which every concurrency level c in
turn and at it every system in turn runs one closed loop of whole rounds of requests (every
client sends the same number), at least max(`--min-answers`, `--requests` x c) answers per level
over the rounds: this 2-core machine drifts by up to 2x for minutes at a time, and in turn the
drift falls on every system alike. answers/s is the median of a system's runs with their
min-max, latency percentiles pool every answer. The roofline (encoder and step times in-process)
is measured at the start of each round. Then `perf_analyzer` on (c) when it is installed, an
open loop with Poisson arrivals at a fraction of (c)'s saturation throughput for (c) vs (c'), in
windows that alternate between the two, and server resident memory (right after each system's
last run, and again once the servers have been idle for SETTLE_S). The defaults take about 20
minutes on 2 cores with the demo t5-base (all servers up at once: about 10 GB).

  python -m bench.serving --checkpoint build/models/demo-base      # after `make export`/`make serve`
  python -m bench.serving --systems d d8 --concurrency 1 --min-answers 2 --repetitions 1 --output /tmp/bench
"""
from __future__ import annotations

import argparse
import importlib.metadata
import inspect
import json
import math
import os
import platform
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

from bench.graphs import median_step_ms, open_graphs, repository_tokens
from client import QAClient
from client.tokenizer import load_tokenizer
from contract.prompt import PromptEncoder
from runtime.scheduler import IDLE_AFTER_S
from serving.repository import write_repository
from serving.server import Ports, TritonServer, total_memory_kib
from contract.names import TOKENIZER_FILE
from shared_data import squad_pairs

REPO_ROOT = Path(__file__).resolve().parents[1]
SETTLE_S = IDLE_AFTER_S + 2.0  # idle this long after the load, t5_greedy has released its free heap


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def memory_mb(pids: list[int]) -> tuple[float, float]:
    """Resident (RSS) and proportional (PSS) memory of `pids` together, in MB
    (`serving.server.total_memory_kib`: PSS counts the pages they share once)."""
    total = total_memory_kib(pids)
    return total["rss"] / 1024, total["pss"] / 1024


SYSTEMS = {  # --systems key -> the name the tables show
    "a": "(a) transformers, one at a time",
    "b": "(b) optimum ORT, one at a time",
    "d": "(d) CTranslate2 fp32, batched",
    "d8": "(d') CTranslate2 int8, batched",
    "c": "(c) t5_qa, iteration-level batching",
    "cr": "(c') t5_qa, request-level batching",
    "c8": "(c8) t5_qa int8, iteration-level batching",
}
BASELINES = {"a": ["--engine", "transformers"], "b": ["--engine", "optimum"],
             "d": ["--engine", "ctranslate2", "--compute-type", "float32"],
             "d8": ["--engine", "ctranslate2", "--compute-type", "int8"]}
INT8_REPOSITORY = "repository-int8"  # under build/bench


def slug(checkpoint: str) -> str:
    return checkpoint.strip("/").replace("/", "--")


class Baseline:
    """A baseline HTTP server (`bench.baseline_server`) in a subprocess; its exports and
    conversions are kept under build/bench/ and reused."""

    def __init__(self, key: str, checkpoint: str):
        self.name = SYSTEMS[key]
        self.port = free_port()
        workdir = REPO_ROOT / "build/bench"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.baseline_server", *BASELINES[key], "--model", checkpoint,
             "--onnx-dir", str(workdir / f"optimum-{slug(checkpoint)}"),
             "--ct2-dir", str(workdir / f"ct2-{'int8' if key == 'd8' else 'float32'}-{slug(checkpoint)}"),
             "--port", str(self.port)], cwd=REPO_ROOT)

    def call(self, ids: np.ndarray, new_tokens: int) -> int:
        body = json.dumps({"input_ids": ids.tolist(), "max_new_tokens": new_tokens}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/generate", body,
                                         {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=600) as r:
            return len(json.loads(r.read())["output_ids"][0])

    def wait_ready(self, probe: np.ndarray) -> None:
        deadline = time.monotonic() + 900  # a first start exports or converts the checkpoint
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited")
            try:
                self.call(probe, 1)
                return
            except OSError:
                time.sleep(1)
        raise TimeoutError(self.name)

    def memory(self) -> tuple[float, float]:
        return memory_mb([self.process.pid])

    def counters(self) -> dict[str, int]:
        """Decoding calls and rows so far (GET /stats)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/stats", timeout=10) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


class Triton:
    """This project's server. With `configure`, over a copy of the exported `repository` with
    `batching` written into its configs; without, over `repository` as it is."""

    def __init__(self, repository: Path, batching: str, workdir: Path, name: str | None = None,
                 configure: bool = True):
        self.name = name or SYSTEMS["c" if batching == "iteration" else "cr"]
        if configure:
            copy = workdir / f"repository-{batching}"
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(repository, copy, copy_function=os.link, ignore=shutil.ignore_patterns("__pycache__"))
            write_repository(copy, "cpu", batching=batching)
            repository = copy
        self.server = TritonServer(repository, Ports(free_port(), free_port(), free_port()), address="127.0.0.1",
                                   log_file=workdir / f"triton-{repository.name}.log").start()
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

    def memory(self) -> tuple[float, float]:
        return memory_mb(self.server.processes())

    def stop(self) -> None:
        self.server.stop()


def int8_repository(checkpoint: str, source: Path, workdir: Path) -> tuple[Path, dict] | None:
    """The checkpoint built for the cpu target in int8 into build/bench/repository-int8 (with its
    export manifest), or None with a printed note while `build` has no `precision` parameter."""
    from serving.pipeline import build, copy_code
    if "precision" not in inspect.signature(build).parameters:
        print("note: (c8) skipped: serving.pipeline.build() does not take precision= yet", flush=True)
        return None
    repository = workdir / INT8_REPOSITORY
    shutil.rmtree(repository, ignore_errors=True)
    copy_code(source, repository)
    return repository, build(checkpoint, repository, "cpu", precision="int8")


def int8_agreement(manifest: dict) -> dict:
    """The export manifest's int8 agreement figures: every entry under `validation` whose key
    names int8 (e.g. `int8_agreement`), flattened to dotted keys; empty when there is none."""
    found: dict = {}

    def walk(node: object, path: str, inside: bool) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{path}.{key}" if path else str(key), inside or "int8" in str(key).lower())
        elif inside:
            found[path] = node
    walk(manifest.get("validation", {}), "validation", False)
    return found


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
        pick = lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))]) if lat else None  # noqa: E731
        return {"system": self.system, "mode": self.mode, "answers": len(lat), "errors": self.errors,
                "p50_ms": round(statistics.median(lat)) if lat else None, "p95_ms": pick(0.95), "p99_ms": pick(0.99),
                "answers_per_s": round(self.answers_per_s(), 3),
                "mean_new_tokens": round(statistics.mean(self.tokens), 1) if self.tokens else 0}

    def answers_per_s(self) -> float:
        return len(self.latencies_ms) / self.wall_s if self.wall_s > 0 else 0.0


def round_size(concurrency: int, minimum: int, per_client: int, repetitions: int) -> int:
    """Requests in each of `repetitions` closed-loop runs at `concurrency`: whole rounds (a
    multiple of `concurrency`), together at least max(`minimum`, `per_client` x `concurrency`)."""
    total = max(minimum, per_client * concurrency)
    return concurrency * math.ceil(total / (repetitions * concurrency))


def spread(values: list[float]) -> dict[str, float]:
    """Median, min and max of repeated measurements."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def combine(runs: list[Run]) -> dict:
    """One table row from repeated runs of one level: latency percentiles, answers and tokens
    over all the runs' answers; answers/s the median of the runs, with their min and max (and
    the runs' p50 latencies' min and max)."""
    pooled = Run(runs[0].system, runs[0].mode, [x for r in runs for x in r.latencies_ms],
                 [t for r in runs for t in r.tokens], sum(r.wall_s for r in runs), sum(r.errors for r in runs))
    rates = spread([r.answers_per_s() for r in runs])
    p50s = [r.row()["p50_ms"] for r in runs if r.latencies_ms]
    return {**pooled.row(), "answers_per_s": round(rates["median"], 3), "answers_per_s_min": round(rates["min"], 3),
            "answers_per_s_max": round(rates["max"], 3), "p50_ms_min": min(p50s, default=None),
            "p50_ms_max": max(p50s, default=None), "repetitions": len(runs)}


def scheduler_counters(metrics_port: int) -> dict[str, float]:
    """t5_greedy's custom metrics (serving.scheduler counters) from Triton's metrics endpoint."""
    import re
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    return {key: float(re.search(rf"^t5_greedy_{key}_total(?:{{[^}}]*}})? (\S+)$", text, re.M).group(1))
            for key in ("iterations", "row_steps", "graph_seconds", "encoder_seconds", "busy_seconds")}


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


def open_loops(systems: list, inputs: list[np.ndarray], rate: float, windows: int, seconds: float,
               new_tokens: int) -> list[dict]:
    """`windows` open loops of `seconds` per system, the systems in turn within each round (c,
    c', c, c', ...) and every system of a round given the same arrivals (seed = the round), so
    that the machine's drift falls on all of them alike. One row per system: the latencies of its
    windows pooled, each window's p95 beside them (`p95_ms_windows`) and, for this project's
    servers, `t5_greedy`'s counters over its windows."""
    runs: dict[str, list[Run]] = {system.name: [] for system in systems}
    before = {s.name: scheduler_counters(s.server.ports.metrics) for s in systems if isinstance(s, Triton)}
    for window in range(windows):
        for system in systems:
            runs[system.name].append(open_loop(system, inputs, rate, seconds, new_tokens, seed=window))
            print(json.dumps({**runs[system.name][-1].row(), "window": window}), flush=True)
    rows = []
    for system in systems:
        row = {**combine(runs[system.name]), "p95_ms_windows": [r.row()["p95_ms"] for r in runs[system.name]]}
        if system.name in before:
            row.update(step_counters(before[system.name], scheduler_counters(system.server.ports.metrics)))
        rows.append(row)
    return rows


def roofline(repository: Path, inputs: list[np.ndarray], new_tokens: int, concurrency: int) -> dict:
    """Answers/s if the server did nothing but what each request needs alone (one encoder call,
    not batched, and the decoder's first call, which projects the prompt into every layer's
    cross-attention keys and values) and `new_tokens` decode steps at batch `concurrency`, timed
    in-process with ONNX Runtime. The first call's share is its time at batch 1 less a step's.
    Beside it, the floor under a lone answer: the same encoder and first calls, and steps no
    faster than reading the decoder's weights (`bench.memory_speed`)."""
    from bench.memory_speed import step_floor
    from runtime.greedy import DecodeBatch, Sequence
    tokens, ort = repository_tokens(repository), open_graphs(repository)
    encoder_ms, first_ms = [], []
    for ids in inputs[:5]:
        start = time.perf_counter()
        states = ort.encode(ids, np.ones_like(ids))
        encoder_ms.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        DecodeBatch(ort.run_decoder, ort.signature, tokens).admit(
            [Sequence(states[0], np.ones(ids.shape[1], np.int64), 10_000)])
        first_ms.append((time.perf_counter() - start) * 1000)
    rows = [Sequence(ort.encode(ids, np.ones_like(ids))[0], np.ones(ids.shape[1], np.int64), 10_000)
            for ids in (inputs * concurrency)[:concurrency]]
    step_ms: dict[int, float] = {}
    for batch_size in sorted({1, concurrency}):
        batch = DecodeBatch(ort.run_decoder, ort.signature, tokens)
        batch.admit([Sequence(r.states, r.mask, 10_000) for r in rows[:batch_size]])
        step_ms[batch_size] = median_step_ms(batch, new_tokens)
    encoder = statistics.median(encoder_ms)
    cross = max(statistics.median(first_ms) - step_ms[1], 0.0)
    seconds = (concurrency * (encoder + cross) + new_tokens * step_ms[concurrency]) / 1000
    floor = step_floor(repository)
    return {"encoder_ms": round(encoder, 1), "cross_projection_ms": round(cross, 1),
            "step_ms": {str(k): round(v, 1) for k, v in step_ms.items()},
            "answers_per_s": round(concurrency / seconds, 3), "concurrency": concurrency, **floor,
            "lone_answer_floor_ms": round(encoder + cross + new_tokens * floor["step_floor_ms"], 1)}


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
        csv.unlink(missing_ok=True)
        done = subprocess.run([str(binary), "-m", "t5_qa", "-u", url, "-i", "grpc", "--input-data", str(data),
                               "--concurrency-range", str(level), "--measurement-mode", "count_windows",
                               "--measurement-request-count", str(max(8, 2 * level)), "--stability-percentage", "50",
                               "--max-trials", "3", "-f", str(csv)], env=env, capture_output=True, text=True,
                              timeout=900)
        if done.returncode or not csv.is_file():  # e.g. no stable window in 3 trials: reported, not fatal
            tail = (done.stdout + done.stderr).strip().splitlines()[-1:] or [f"exit {done.returncode}"]
            rows.append({"concurrency": level, "answers_per_s": "-", "p50_ms": "-", "p95_ms": "-", "p99_ms": "-",
                         "error": tail[0][:160]})
            continue
        header, values = csv.read_text().splitlines()[:2]
        record = dict(zip(header.split(","), values.split(",")))
        rows.append({"concurrency": level, "answers_per_s": float(record["Inferences/Second"]),
                     "p50_ms": round(float(record["p50 latency"]) / 1000),
                     "p95_ms": round(float(record["p95 latency"]) / 1000),
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
        rates = [r["answers_per_s"] for r in mine]
        low = [rate - r.get("answers_per_s_min", rate) for rate, r in zip(rates, mine)]
        high = [r.get("answers_per_s_max", rate) - rate for rate, r in zip(rates, mine)]
        left.errorbar(levels, rates, yerr=[low, high], marker="o", capsize=3, label=system)
        right.plot(levels, [r["p95_ms"] for r in mine], marker="o", label=system)
    for axis, title in ((left, "throughput (answers/s, median and min-max of runs)"), (right, "p95 latency (ms)")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("concurrency")
        axis.set_title(title)
        axis.grid(alpha=0.3)
    left.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


TOKENIZER = None


@dataclass
class Plan:
    """What every system is measured with."""

    inputs: list[np.ndarray]
    new_tokens: int
    levels: list[int]
    min_answers: int
    per_client: int
    repetitions: int


def step_counters(before: dict[str, float], after: dict[str, float]) -> dict:
    """t5_greedy's own work per scheduler iteration between two readings of its counters."""
    delta = {k: after[k] - before[k] for k in after}
    iterations = max(delta["iterations"], 1)
    return {"mean_batch": round(delta["row_steps"] / iterations, 2),
            "graph_ms_per_step": round(1000 * delta["graph_seconds"] / iterations, 1),
            "encoder_ms_per_step": round(1000 * delta["encoder_seconds"] / iterations, 1),
            "overhead_ms_per_step": round(1000 * (delta["busy_seconds"] - delta["graph_seconds"]
                                                  - delta["encoder_seconds"]) / iterations, 2)}


def counters(system) -> dict[str, float]:
    """Cumulative counters: t5_greedy's (`scheduler_counters`) or a baseline's decoding calls and rows."""
    return scheduler_counters(system.server.ports.metrics) if isinstance(system, Triton) else system.counters()


def counter_figures(system, delta: dict[str, float]) -> dict:
    """What `delta`, counters summed over a level's runs, says: t5_greedy's work per iteration
    (`step_counters`), or a baseline's requests per decoding call."""
    if isinstance(system, Triton):
        return step_counters(dict.fromkeys(delta, 0.0), delta)
    return {"mean_batch": round(delta["rows"] / max(delta["calls"], 1), 2)}


def rounds(systems: dict, plan: Plan, on_round, on_last_run) -> list[dict]:
    """`plan.repetitions` rounds; in each, every level in turn, and at each level every system
    in turn (one closed-loop run each), so that the machine's slow and fast phases fall on all
    of them alike. `on_round(index)` runs before each round; `on_last_run(system)` right after
    a system's last run. One row per system and level: `combine` of its runs, with its
    counters over them."""
    runs: dict[tuple[str, int], list[Run]] = {(key, level): [] for key in systems for level in plan.levels}
    summed: dict[tuple[str, int], dict[str, float]] = {}
    for index in range(plan.repetitions):
        on_round(index)
        for level in plan.levels:
            size = round_size(level, plan.min_answers, plan.per_client, plan.repetitions)
            for key, system in systems.items():
                before = counters(system)
                runs[key, level].append(closed_loop(system, plan.inputs, level, size, plan.new_tokens))
                after = counters(system)
                total = summed.setdefault((key, level), dict.fromkeys(after, 0.0))
                for name in after:
                    total[name] += after[name] - before[name]
                print(json.dumps({**runs[key, level][-1].row(), "round": index}), flush=True)
                if index == plan.repetitions - 1 and level == plan.levels[-1]:
                    on_last_run(system)
    return [{**combine(runs[key, level]), **counter_figures(system, summed[key, level])}
            for key, system in systems.items() for level in plan.levels]


def start(key: str, args: argparse.Namespace, workdir: Path, extra: dict):
    """The system named by `key`, started; None when it cannot run here (with a printed note)."""
    if key in BASELINES:
        return Baseline(key, args.checkpoint)
    if key != "c8":
        return Triton(args.repository, "iteration" if key == "c" else "request", workdir)
    built = int8_repository(args.checkpoint, args.repository, workdir)
    if built is None:
        extra["skipped"] = {**extra.get("skipped", {}), SYSTEMS[key]: "serving.pipeline.build has no precision yet"}
        return None
    extra["int8_agreement"] = int8_agreement(built[1])
    return Triton(built[0], "iteration", workdir, SYSTEMS[key], configure=False)


def run_all(args: argparse.Namespace, plan: Plan, workdir: Path) -> tuple[list[dict], dict]:
    """Every selected system started and kept up, then measured in `rounds` (with the roofline
    measured in-process at the start of each round; the one with the median answers/s is the
    one reported), resident memory right after each system's last run; then on (c)
    perf_analyzer, and the open loop on (c) and (c') in alternating windows (`open_loops`) at
    `--open-load` of (c)'s saturation; last, memory once idle (SETTLE_S), (c)'s read with the
    other servers stopped (their shared libraries would otherwise split its PSS)."""
    extra: dict = {"schedule": "rounds", "rss_mb": {}, "pss_mb": {}, "settled_rss_mb": {}, "settled_pss_mb": {},
                   "open_load": args.open_load, "open_windows": args.open_windows, "open_seconds": args.open_seconds}
    selected = [k for k in SYSTEMS if k in args.systems and not (args.skip_baselines and k in BASELINES)]
    systems: dict = {}
    rooflines: list[dict] = []

    def memory(into: str, system) -> None:
        rss, pss = system.memory()
        extra[f"{into}rss_mb"][system.name], extra[f"{into}pss_mb"][system.name] = round(rss), round(pss)

    def roofline_now(_round: int) -> None:
        if "c" in systems:
            rooflines.append(roofline(args.repository, plan.inputs, plan.new_tokens, max(plan.levels)))

    try:
        for key in selected:
            system = start(key, args, workdir, extra)
            if system is None:
                continue
            systems[key] = system
            system.wait_ready(plan.inputs[0])
            for ids in plan.inputs[:2]:
                system.call(ids, plan.new_tokens)  # warm-up
        rows = rounds(systems, plan, roofline_now, lambda system: memory("", system))
        if "c" in systems:
            ours = systems["c"]
            extra["perf_analyzer"] = perf_analyzer(ours.url, plan.inputs[0], plan.new_tokens, plan.levels, workdir)
            extra["open_rate"] = args.open_load * max(r["answers_per_s"] for r in rows if r["system"] == ours.name)
            if args.open_seconds > 0 and args.open_windows > 0:
                rows += open_loops([systems[k] for k in ("c", "cr") if k in systems], plan.inputs, extra["open_rate"],
                                   args.open_windows, args.open_seconds, plan.new_tokens)
        time.sleep(SETTLE_S)
        for key in [k for k in systems if k != "c"] + [k for k in systems if k == "c"]:
            memory("settled_", systems[key])  # (c) last, alone
            systems.pop(key).stop()
    finally:
        for system in systems.values():
            system.stop()
    if rooflines:
        extra["roofline"] = sorted(rooflines, key=lambda r: r["answers_per_s"])[len(rooflines) // 2]
        extra["roofline_answers_per_s_runs"] = [r["answers_per_s"] for r in rooflines]
    return rows, extra


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.serving", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="build/models/demo-base",
                        help="checkpoint the repository was exported from")
    parser.add_argument("--repository", type=Path, default=Path("model_repository"), help="exported model repository")
    parser.add_argument("--systems", nargs="+", choices=list(SYSTEMS), default=list(SYSTEMS), metavar="KEY",
                        help="systems to measure, in this order: "
                             + ", ".join(f"{k} = {v}" for k, v in SYSTEMS.items()))
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=4,
                        help="answers per client at each level: a level has max(--min-answers, this x concurrency)")
    parser.add_argument("--min-answers", type=int, default=16, help="fewest answers at any concurrency level")
    parser.add_argument("--repetitions", type=int, default=3,
                        help="closed-loop runs per level (each whole rounds of requests), for the run-to-run spread")
    parser.add_argument("--open-windows", type=int, default=3,
                        help="open-loop windows per system, (c) and (c') in turn (0 here or in "
                             "--open-seconds: no open loop)")
    parser.add_argument("--open-seconds", type=float, default=40.0, help="length of each open-loop window")
    parser.add_argument("--open-load", type=float, default=0.8, help="open-loop rate as a fraction of saturation")
    parser.add_argument("--output", type=Path, default=Path("docs"), help="where benchmarks.{json,md,png} go")
    parser.add_argument("--skip-baselines", action="store_true", help="leave out a, b, d and d8")
    return parser


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine() -> dict:
    """What the figures were measured on (they change with it: ONNX Runtime's int8 kernels, for one,
    are 2.4x faster with VNNI): the CPU count, model name and int8 dot-product flag."""
    from export.quantize import cpuinfo_fields, int8_dot
    return {"cpus": os.cpu_count(), "cpu": cpuinfo_fields().get("model name") or platform.machine(),
            "int8_dot": int8_dot()}


def load_inputs(repository: Path, checkpoint: str) -> list[np.ndarray]:
    """64 SQuAD 2.0 dev prompts, tokenized with the repository's tokenizer (else the checkpoint's)."""
    global TOKENIZER
    path = repository / TOKENIZER_FILE
    TOKENIZER = load_tokenizer(str(path if path.is_file() else Path(checkpoint) / "tokenizer.json"))
    prompts = PromptEncoder.from_tokenizer(TOKENIZER)
    return [np.array([prompts.encode(q, c)], dtype=np.int64) for q, c in squad_pairs(64, stride=181)]


def main() -> None:
    args = build_parser().parse_args()
    began = time.monotonic()
    workdir = REPO_ROOT / "build/bench"
    workdir.mkdir(parents=True, exist_ok=True)
    inputs = load_inputs(args.repository, args.checkpoint)
    plan = Plan(inputs, args.new_tokens, args.concurrency, args.min_answers, args.requests, args.repetitions)
    rows, extra = run_all(args, plan, workdir)
    extra.update(prompt_tokens_median=statistics.median(i.shape[1] for i in inputs), repetitions=args.repetitions,
                 duration_s=round(time.monotonic() - began), ctranslate2_version=package_version("ctranslate2"),
                 machine=machine())
    args.output.mkdir(parents=True, exist_ok=True)
    try:  # matplotlib is a bench requirement (make bench installs it); without it, the tables only
        plot(rows, args.output / "benchmarks.png")
        extra["plotted"] = True
    except ImportError as error:
        print(f"bench: no plot ({error}); pip install -r requirements/bench.txt for it", file=sys.stderr)
        extra["plotted"] = False
    (args.output / "benchmarks.json").write_text(json.dumps({"rows": rows, **extra}, indent=2) + "\n")
    from bench.report import render
    defaults = vars(build_parser().parse_args([]))
    changed = {k for k, v in vars(args).items() if v != defaults[k]} - {"repository"}
    command = "make bench" if not changed else "python -m bench.serving " + " ".join(sys.argv[1:])
    data = json.loads((args.output / "benchmarks.json").read_text())
    (args.output / "benchmarks.md").write_text(render(data, command) + "\n")
    print(json.dumps(extra, indent=2))


if __name__ == "__main__":
    main()
