"""Soak: saturating load for a long time while recording the server's memory.

  python -m loadtest.soak --duration 600 --users 16 --grpc-port 8001 --http-port 8000   # make soak DURATION=600

Runs the Locust users of `loadtest/locustfile.py` with no pause between requests (by default
16 users, half gRPC, half HTTP: twice the server's max batch size, enough to keep every model
instance busy) against a server on loopback. Every `--interval` seconds it records the
resident memory of that tritonserver (found by its `--grpc-port` flag in /proc) plus all its
Python backend stubs into `<out>/<name>_memory.csv`: elapsed_s, loaded (whether Locust was
still sending: the samples after it stopped show what memory the server gives back),
server_pid, processes, rss_kib, pss_kib (RSS counts memory shared between processes, such as
the stubs' shared-memory regions, once per process that maps it; PSS splits it between them,
so PSS is the machine's real cost), then rss_kib and pss_kib per process
(`tritonserver`, and each stub by its model's name).

It fails (exit 1) if any request failed, if no request completed, if the server's pid changed
or it vanished (a crash or a supervisor restart), if the aggregated p95 exceeds --p95-ms (when
given), or if the RSS grew by more than --max-growth after warm-up. Growth is the trend of every
sample after --warmup: the Theil-Sen line (the median of the slopes between all pairs of samples,
`scipy.stats.theilslopes`) from the first such sample to the last, against its level at the first.
A leak raises that line; the swings of a batching server (several requests admitted together and
leaving together: +-300 MiB within a minute on t5-base) do not, where the medians of two short
windows judged which phase of the swings each window caught (docs/operations.md, "Soak").
Exit 2: bad arguments or no server. The verdict and figures go to `<out>/<name>_gate.json`.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import threading
import time
from dataclasses import asdict

from scipy.stats import theilslopes

from loadtest.run import (EXIT_GATE, EXIT_USAGE, LoadResult, add_load_arguments, gate, run_locust,
                          server_answers, spec_from_arguments, summary)
from serving.server import find_server_pid, memory_kib, server_processes, stub_pids

COLUMNS = ("elapsed_s", "loaded", "server_pid", "processes", "rss_kib", "pss_kib")


def sample(grpc_port: int) -> dict:
    """One memory sample of the tritonserver on `grpc_port` and its children (zeros if gone),
    with each process's RSS and PSS under `<name>_rss_kib` / `<name>_pss_kib`."""
    pid = find_server_pid(grpc_port=grpc_port)
    if pid is None:
        return {"server_pid": 0, "processes": 0, "rss_kib": 0, "pss_kib": 0}
    names = {pid: "tritonserver", **stub_pids(pid)}
    pids = server_processes(pid)
    parts = {p: memory_kib(p) for p in pids}
    row = {"server_pid": pid, "processes": len(pids), "rss_kib": sum(m["rss"] for m in parts.values()),
           "pss_kib": sum(m["pss"] for m in parts.values())}
    for p, memory in parts.items():
        name = names.get(p, f"pid{p}")
        row[f"{name}_rss_kib"], row[f"{name}_pss_kib"] = memory["rss"], memory["pss"]
    return row


MIN_JUDGED_SAMPLES = 10  # samples after warm-up below which a trend says nothing
MAX_TREND_SAMPLES = 2000  # Theil-Sen takes every pair: longer records (2.8 h at 5 s) are thinned to this


def memory_verdict(rows: list[dict], warmup_s: float, max_growth: float) -> tuple[dict, list[str]]:
    """Growth of RSS after warm-up (the trend of its samples), and the problems found in the record."""
    problems = []
    pids = {r["server_pid"] for r in rows}
    if 0 in pids:
        problems.append("the server was not running at some samples")
    if len(pids - {0}) > 1:
        problems.append(f"the server restarted during the soak (pids {sorted(pids - {0})})")
    after = [r for r in rows if r["elapsed_s"] >= warmup_s and r["rss_kib"]]
    figures = {"samples": len(rows), "judged_samples": len(after),
               "peak_rss_mib": round(max((r["rss_kib"] for r in rows), default=0) / 1024, 1)}
    if len(after) < MIN_JUDGED_SAMPLES:
        problems.append(f"too short to judge memory: {len(after)} samples after the {warmup_s:.0f} s warm-up, "
                        f"need {MIN_JUDGED_SAMPLES}")
        return figures, problems
    thinned = after[::math.ceil(len(after) / MAX_TREND_SAMPLES)]
    seconds = [r["elapsed_s"] for r in thinned]
    slope, intercept, low, high = theilslopes([r["rss_kib"] for r in thinned], seconds, 0.90)
    span = seconds[-1] - seconds[0]
    start = intercept + slope * seconds[0]
    growth = slope * span / start
    figures.update(start_rss_mib=round(start / 1024, 1), end_rss_mib=round((start + slope * span) / 1024, 1),
                   growth_percent=round(100 * growth, 2),
                   growth_ci90_percent=[round(100 * low * span / start, 2), round(100 * high * span / start, 2)])
    if growth > max_growth:
        problems.append(f"RSS grew {100 * growth:.1f}% after warm-up (trend {start / 1024:.0f} -> "
                        f"{(start + slope * span) / 1024:.0f} MiB over {span:.0f} s), more than {100 * max_growth:g}%")
    return figures, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_load_arguments(parser, users=16, duration=600, name="soak")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between memory samples (default 5)")
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds before memory counts (default: duration/5, between 30 and 120)")
    parser.add_argument("--max-growth", type=float, default=0.05, help="allowed RSS growth (default 0.05 = 5%%)")
    parser.add_argument("--settle", type=float, default=15.0,
                        help="seconds of samples after the load stops, recorded but not judged (default 15)")
    args = parser.parse_args(argv)
    try:
        spec = spec_from_arguments(args)
    except ValueError as error:
        print(f"soak: {error}", file=sys.stderr)
        return EXIT_USAGE
    warmup = args.warmup if args.warmup is not None else min(120.0, max(30.0, spec.duration_s / 5))
    if find_server_pid(grpc_port=spec.grpc_port) is None:
        print(f"soak: no tritonserver with --grpc-port={spec.grpc_port} on this machine "
              "(the soak reads its memory from /proc, so the server must run here)", file=sys.stderr)
        return EXIT_USAGE
    reason = server_answers(spec)
    if reason is not None:
        print(f"soak: the server at {spec.host}:{spec.grpc_port} does not answer: {reason}", file=sys.stderr)
        return EXIT_USAGE

    spec.out.mkdir(parents=True, exist_ok=True)
    outcome: dict[str, LoadResult] = {}
    load = threading.Thread(target=lambda: outcome.setdefault("result", run_locust(spec)), daemon=True)
    memory_csv = spec.out / f"{spec.name}_memory.csv"
    rows: list[dict] = []
    started = time.monotonic()
    load.start()
    with memory_csv.open("w", newline="") as f:
        writer = None
        settle = max(1, int(args.settle / args.interval))  # samples of what the server gives back once idle
        while load.is_alive() or settle:  # run_locust kills Locust past its deadline, so this ends
            elapsed = time.monotonic() - started
            row = {"elapsed_s": round(elapsed, 1), "loaded": load.is_alive() and elapsed <= spec.duration_s,
                   **sample(spec.grpc_port)}
            rows.append(row)
            if writer is None:  # the columns of the processes there at the start
                writer = csv.DictWriter(f, [*COLUMNS, *sorted(set(row) - set(COLUMNS))], restval=0,
                                        extrasaction="ignore")
                writer.writeheader()
            writer.writerow(row)
            f.flush()
            if load.is_alive():
                load.join(args.interval)
            else:
                settle -= 1
                time.sleep(args.interval)
    result = outcome.get("result", LoadResult())
    problems = gate(result, args.p95_ms)
    # Only the loaded part counts: drop samples taken after Locust's run time (its shutdown).
    loaded = [r for r in rows if r["loaded"]]
    figures, memory_problems = memory_verdict(loaded, warmup, args.max_growth)
    problems += memory_problems
    verdict = {"passed": not problems, "problems": problems, "warmup_s": warmup,
               "max_growth": args.max_growth, **figures, **{k: v for k, v in asdict(result).items() if k != "rows"}}
    (spec.out / f"{spec.name}_gate.json").write_text(json.dumps(verdict, indent=2) + "\n")
    print(summary(result))
    print(f"memory: {memory_csv} ({figures.get('samples', 0)} samples); trend after warm-up "
          f"{figures.get('start_rss_mib', '?')} -> {figures.get('end_rss_mib', '?')} MiB, "
          f"growth {figures.get('growth_percent', '?')}% (90% interval {figures.get('growth_ci90_percent', '?')}), "
          f"peak {figures.get('peak_rss_mib', '?')} MiB")
    if problems:
        print("SOAK FAILED: " + "; ".join(problems), file=sys.stderr)
        return EXIT_GATE
    print(f"soak passed: {result.requests} requests in {spec.duration_s} s ({result.rps:.1f}/s), 0 failures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
