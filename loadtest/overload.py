"""Overload: open-loop arrivals at a multiple of the server's saturation throughput, to check
that back-pressure keeps the accepted requests' latency bounded and the server healthy.

  python -m loadtest.overload --grpc-port 8001 --factor 2 --duration 60      # make overload

1. Saturation: `--users` clients in a closed loop for `--measure` seconds give answers/s
   (or `--saturation` says it).
2. Open loop: Poisson arrivals at `--factor` times that rate for `--duration` seconds, each a
   real SQuAD 2.0 dev question through the project's client over gRPC, without retries, so a
   refusal (UNAVAILABLE: the decoder's queue would make it wait too long) is seen as such.

It reports the accepted answers (latency from arrival: p50, p95, max), the refusals (how many,
how fast), other errors (there must be none), the server's memory (RSS and PSS of tritonserver
and its stubs: at the start, peak, at the end) and whether the server answers afterwards, into
`<out>/<name>.json`. Exit 1 when another error occurred, the refusals' p95 exceeds
`--refusal-p95-ms` (the slowest refusals, `refusal_max_ms`, are those `t5_greedy` turns away
after their encoding), the accepted p95 exceeds `--p95-ms` (when given), or the server does not
answer afterwards; exit 2 for bad arguments or no server. Traffic goes to loopback only.
"""
from __future__ import annotations

import argparse
import logging
import json
import random
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from client import NO_RETRY, QAClient, ServerUnavailable
from client.tokenizer import load_tokenizer
from loadtest.run import EXIT_GATE, EXIT_USAGE
from loadtest.safety import loopback_host
from loadtest.soak import sample
from serving.supervisor import probe
from shared_data import squad_pairs

logging.getLogger("client").setLevel(logging.ERROR)  # the demo model's warning on every answer


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


class Outcomes:
    """What happened to each request, from its arrival."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.accepted: list[float] = []  # seconds to the answer
        self.refused: list[float] = []  # seconds to UNAVAILABLE
        self.errors: list[str] = []

    def ask(self, client: QAClient, pair: tuple[str, str], arrival: float, max_new_tokens: int | None) -> None:
        try:
            client.answer(*pair, max_new_tokens)
            outcome = self.accepted
        except ServerUnavailable:
            outcome = self.refused
        except Exception as error:  # noqa: BLE001 - every other outcome is reported as an error
            with self.lock:
                self.errors.append(f"{type(error).__name__}: {error}")
            return
        with self.lock:
            outcome.append(time.monotonic() - arrival)


def saturation(client: QAClient, pairs: list[tuple[str, str]], users: int, seconds: float,
               max_new_tokens: int | None) -> float:
    """Answers per second of `users` clients asking back to back for `seconds`."""
    outcomes, end = Outcomes(), time.monotonic() + seconds

    def user(offset: int) -> None:
        for k in range(offset, 10**9, users):
            if time.monotonic() >= end:
                return
            outcomes.ask(client, pairs[k % len(pairs)], time.monotonic(), max_new_tokens)

    started = time.monotonic()
    with ThreadPoolExecutor(users) as pool:
        list(pool.map(user, range(users)))
    if outcomes.errors or not outcomes.accepted:
        raise RuntimeError(f"cannot measure saturation: {len(outcomes.accepted)} answers, errors {outcomes.errors[:3]}")
    return len(outcomes.accepted) / (time.monotonic() - started)


def open_loop(client: QAClient, pairs: list[tuple[str, str]], rate: float, seconds: float,
              max_new_tokens: int | None, seed: int = 0) -> Outcomes:
    """Poisson arrivals at `rate` per second for `seconds`; waits for every answer."""
    outcomes, rng = Outcomes(), random.Random(seed)
    with ThreadPoolExecutor(512) as pool:
        start = at = time.monotonic()
        index = 0
        while (at := at + rng.expovariate(rate)) - start < seconds:
            time.sleep(max(0.0, at - time.monotonic()))
            pool.submit(outcomes.ask, client, pairs[index % len(pairs)], at, max_new_tokens)
            index += 1
    return outcomes


def memory_while(work, grpc_port: int, interval_s: float = 2.0):
    """Run `work()` while sampling the server's memory; (result, samples)."""
    samples, done = [sample(grpc_port)], threading.Event()

    def watch() -> None:
        while not done.wait(interval_s):
            samples.append(sample(grpc_port))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        return work(), samples
    finally:
        done.set()
        watcher.join()
        samples.append(sample(grpc_port))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.overload", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="server host; loopback only (default 127.0.0.1)")
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--factor", type=float, default=2.0, help="arrival rate over saturation (default 2)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of open-loop arrivals (default 60)")
    parser.add_argument("--saturation", type=float, default=None, help="answers/s at saturation (default: measure)")
    parser.add_argument("--users", type=int, default=16, help="closed-loop clients measuring saturation (default 16)")
    parser.add_argument("--measure", type=float, default=30.0, help="seconds measuring saturation (default 30)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="per request (default: the server's)")
    parser.add_argument("--request-timeout", type=float, default=300.0, help="seconds per request (default 300)")
    parser.add_argument("--refusal-p95-ms", type=float, default=1000.0,
                        help="95th percentile of the refusals' latency allowed (default 1000)")
    parser.add_argument("--p95-ms", type=float, default=None, help="fail if the accepted answers' p95 exceeds this")
    parser.add_argument("--tokenizer", default=None,
                        help="tokenizer.json path or Hub id (default: $T5QA_TOKENIZER, then the served model's own "
                             "under ./model_repository, then the Hub's t5-base)")
    parser.add_argument("--questions", type=int, default=500, help="distinct SQuAD dev questions (default 500)")
    parser.add_argument("--out", type=Path, default=Path("build/loadtest"), help="report folder")
    parser.add_argument("--name", default="overload", help="report file name (default overload)")
    args = parser.parse_args(argv)
    try:
        url = f"{loopback_host(args.host)}:{args.grpc_port}"
    except ValueError as error:
        print(f"overload: {error}", file=sys.stderr)
        return EXIT_USAGE
    if (reason := probe(url, timeout_s=60)) is not None:
        print(f"overload: the server at {url} does not answer: {reason}", file=sys.stderr)
        return EXIT_USAGE
    pairs = squad_pairs(args.questions, stride=7)
    try:
        tokenizer = load_tokenizer(args.tokenizer)
    except Exception as error:  # noqa: BLE001 - tokenizers/huggingface_hub raise several kinds
        print(f"overload: cannot load the tokenizer {args.tokenizer or ''}: {error}", file=sys.stderr)
        return EXIT_USAGE
    with QAClient(url, retry=NO_RETRY, timeout_s=args.request_timeout, tokenizer=tokenizer) as client:
        rate = args.saturation or saturation(client, pairs, args.users, args.measure, args.max_new_tokens)
        outcomes, memory = memory_while(
            lambda: open_loop(client, pairs, args.factor * rate, args.duration, args.max_new_tokens), args.grpc_port)
    healthy = probe(url, timeout_s=60)
    report = {
        "saturation_answers_per_s": round(rate, 3), "arrival_rate_per_s": round(args.factor * rate, 3),
        "duration_s": args.duration, "accepted": len(outcomes.accepted), "refused": len(outcomes.refused),
        "errors": outcomes.errors[:20], "error_count": len(outcomes.errors),
        "accepted_p50_ms": round(1000 * statistics.median(outcomes.accepted)) if outcomes.accepted else None,
        "accepted_p95_ms": round(1000 * percentile(outcomes.accepted, 0.95)),
        "accepted_max_ms": round(1000 * max(outcomes.accepted, default=0.0)),
        "refusal_p95_ms": round(1000 * percentile(outcomes.refused, 0.95)),
        "refusal_max_ms": round(1000 * max(outcomes.refused, default=0.0)),
        "rss_mib": {"start": memory[0]["rss_kib"] // 1024, "peak": max(m["rss_kib"] for m in memory) // 1024,
                    "end": memory[-1]["rss_kib"] // 1024},
        "pss_mib": {"start": memory[0]["pss_kib"] // 1024, "peak": max(m["pss_kib"] for m in memory) // 1024,
                    "end": memory[-1]["pss_kib"] // 1024},
        "healthy_afterwards": healthy is None,
    }
    problems = [f"{len(outcomes.errors)} requests failed otherwise than refused: {outcomes.errors[:3]}"] * bool(outcomes.errors)
    if report["refusal_p95_ms"] > args.refusal_p95_ms:
        problems.append(f"refusals took {report['refusal_p95_ms']} ms at p95 (limit {args.refusal_p95_ms:g})")
    if args.p95_ms is not None and report["accepted_p95_ms"] > args.p95_ms:
        problems.append(f"accepted p95 {report['accepted_p95_ms']} ms exceeds {args.p95_ms:g}")
    if healthy is not None:
        problems.append(f"the server does not answer afterwards: {healthy}")
    report["problems"] = problems
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    if problems:
        print("OVERLOAD CHECK FAILED: " + "; ".join(problems), file=sys.stderr)
        return EXIT_GATE
    return 0


if __name__ == "__main__":
    sys.exit(main())
