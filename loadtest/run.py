"""Headless Locust run against a server on loopback, with CSV and HTML reports and an SLO gate.

  python -m loadtest.run --users 8 --spawn-rate 4 --duration 60 --host 127.0.0.1 \\
      --grpc-port 8001 --http-port 8000 --p95-ms 2000          # make loadtest USERS=8 ... P95_MS=2000

Before the load it checks that the server answers one real inference. Reports go to
`<out>/<name>_stats.csv`, `_stats_history.csv`, `_failures.csv`, `_exceptions.csv`,
`<name>.html`, the final statistics in `<name>_summary.json` (Locust's CSV is a snapshot taken
every 2 s) and the verdict in `<name>_gate.json`. Exit codes: 0 the SLO held; 1 the gate failed (no
request, any failed request, or the aggregated p95 above --p95-ms); 2 bad arguments or no
server; 4 Locust overran its time limit and was killed.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from loadtest.safety import loopback_host

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
USER_CLASSES = {"grpc": ["GrpcQAUser"], "http": ["HttpQAUser"], "both": ["GrpcQAUser", "HttpQAUser"]}
EXIT_GATE, EXIT_USAGE, EXIT_TIMEOUT = 1, 2, 4
LOCUST_REPORTS = ("_stats.csv", "_stats_history.csv", "_failures.csv", "_exceptions.csv", ".html")


@dataclass
class LoadSpec:
    """One Locust run: who, how many, how long, where the reports go."""

    host: str = "127.0.0.1"
    grpc_port: int = 8001
    http_port: int = 8000
    users: int = 4
    spawn_rate: float = 2.0
    duration_s: int = 60
    user_class: str = "both"
    max_new_tokens: int = 0
    questions: int = 500
    request_timeout_s: float = 60.0
    out: Path = Path("build/loadtest")
    name: str = "loadtest"

    @property
    def prefix(self) -> Path:
        return self.out / self.name

    @property
    def summary_path(self) -> Path:
        return self.out / f"{self.name}_summary.json"


@dataclass
class LoadResult:
    """What the gate reads from Locust's `_stats.csv`: the aggregated row, and one per name."""

    requests: int = 0
    failures: int = 0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    rps: float = 0.0
    rows: list[dict] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)
    locust_exit: int | None = None
    timed_out: bool = False


def locust_command(spec: LoadSpec) -> list[str]:
    return [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "--users", str(spec.users), "--spawn-rate", str(spec.spawn_rate), "--run-time", f"{spec.duration_s}s",
        "--stop-timeout", str(int(spec.request_timeout_s) + 5), "--host", spec.host,
        "--csv", str(spec.prefix), "--html", str(spec.prefix.with_suffix(".html")), "--only-summary",
        "--grpc-port", str(spec.grpc_port), "--http-port", str(spec.http_port),
        "--max-new-tokens", str(spec.max_new_tokens), "--questions", str(spec.questions),
        "--request-timeout", str(spec.request_timeout_s), "--max-run-seconds", str(spec.duration_s + 30),
        "--summary-json", str(spec.summary_path),
        *USER_CLASSES[spec.user_class],
    ]


def read_summary(path: Path) -> LoadResult | None:
    """Parse the final statistics the locustfile writes at exit (`--summary-json`)."""
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    total = summary["total"]
    result = LoadResult(total["requests"], total["failures"], total["p50_ms"], total["p95_ms"], total["p99_ms"],
                        total["max_ms"], total["rps"], summary["entries"])
    result.errors = summary["errors"]
    return result


def read_stats(path: Path) -> LoadResult:
    """Parse Locust's `_stats.csv` (its `Aggregated` row holds the totals)."""
    result = LoadResult()
    if not path.is_file():
        return result
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            entry = {"type": row["Type"], "name": row["Name"], "requests": int(row["Request Count"]),
                     "failures": int(row["Failure Count"]), "p50_ms": _number(row.get("50%")),
                     "p95_ms": _number(row.get("95%")), "p99_ms": _number(row.get("99%")),
                     "max_ms": _number(row.get("Max Response Time")), "rps": _number(row.get("Requests/s"))}
            if row["Name"] == "Aggregated":
                result.requests, result.failures = entry["requests"], entry["failures"]
                result.p50_ms, result.p95_ms, result.p99_ms = entry["p50_ms"], entry["p95_ms"], entry["p99_ms"]
                result.max_ms, result.rps = entry["max_ms"], entry["rps"]
            else:
                result.rows.append(entry)
    return result


def _number(value: str | None) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):  # "N/A" when there were no requests
        return 0.0


def run_locust(spec: LoadSpec, grace_s: float = 60.0) -> LoadResult:
    """Run Locust to completion (killing it `grace_s` after its expected end) and read its CSV."""
    spec.out.mkdir(parents=True, exist_ok=True)
    for suffix in LOCUST_REPORTS:  # only Locust's own: the soak writes its memory record beside them
        Path(f"{spec.prefix}{suffix}").unlink(missing_ok=True)
    spec.summary_path.unlink(missing_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    limit = spec.duration_s + spec.request_timeout_s + grace_s
    process = subprocess.Popen(locust_command(spec), env=env, start_new_session=True)
    timed_out = False
    try:
        process.wait(limit)
    except subprocess.TimeoutExpired:
        timed_out = True
        print(f"loadtest: Locust still running {limit:.0f} s after start; killing it", file=sys.stderr)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except BaseException:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise
    result = read_summary(spec.summary_path) or read_stats(Path(f"{spec.prefix}_stats.csv"))
    result.locust_exit, result.timed_out = process.returncode, timed_out
    return result


def gate(result: LoadResult, p95_ms: float | None) -> list[str]:
    """The SLO's violations (empty: it held)."""
    problems = []
    if result.timed_out:
        problems.append("Locust overran its time limit and was killed")
    if result.requests == 0:
        problems.append("no request completed (is the server up on these ports? see Locust's log above)")
    if result.failures:
        problems.append(f"{result.failures} of {result.requests} requests failed (see the _failures.csv report)")
    if p95_ms is not None and result.requests and result.p95_ms > p95_ms:
        problems.append(f"p95 {result.p95_ms:.0f} ms exceeds the {p95_ms:g} ms threshold")
    return problems


def summary(result: LoadResult) -> str:
    lines = [f"{'type':6} {'name':10} {'requests':>9} {'failures':>9} {'p50 ms':>8} {'p95 ms':>8} "
             f"{'p99 ms':>8} {'max ms':>8} {'req/s':>7}"]
    for row in [*result.rows, {"type": "", "name": "Aggregated", **{k: v for k, v in asdict(result).items()
                                                                     if k not in ("rows", "errors")}}]:
        lines.append(f"{row['type']:6} {row['name']:10} {row['requests']:>9} {row['failures']:>9} "
                     f"{row['p50_ms']:>8.0f} {row['p95_ms']:>8.0f} {row['p99_ms']:>8.0f} {row['max_ms']:>8.0f} "
                     f"{row['rps']:>7.2f}")
    for error in result.errors:
        lines.append(f"error x{error['occurrences']}: {error['type']} {error['name']}: {error['error'][:300]}")
    return "\n".join(lines)


def server_answers(spec: LoadSpec, timeout_s: float = 60.0) -> str | None:
    """None if the server at the spec's gRPC port answers a real inference, else why not."""
    from serving.supervisor import probe
    return probe(f"{spec.host}:{spec.grpc_port}", timeout_s=timeout_s)


def add_load_arguments(parser: argparse.ArgumentParser, users: int, duration: int, name: str) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="server host; loopback only (default 127.0.0.1)")
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--users", type=int, default=users, help=f"concurrent users (default {users})")
    parser.add_argument("--spawn-rate", type=float, default=max(1, users // 2), help="users started per second")
    parser.add_argument("--duration", type=int, default=duration, help=f"seconds of load (default {duration})")
    parser.add_argument("--user-class", choices=sorted(USER_CLASSES), default="both",
                        help="gRPC users, HTTP users, or both in equal numbers (default both)")
    parser.add_argument("--max-new-tokens", type=int, default=0, help="per request; 0: the server's default")
    parser.add_argument("--questions", type=int, default=500, help="distinct SQuAD dev questions (default 500)")
    parser.add_argument("--request-timeout", type=float, default=60.0, help="seconds per request (default 60)")
    parser.add_argument("--p95-ms", type=float, default=None, help="fail if the aggregated p95 exceeds this")
    parser.add_argument("--out", type=Path, default=Path("build/loadtest"), help="report folder")
    parser.add_argument("--name", default=name, help=f"report file prefix (default {name})")


def spec_from_arguments(args: argparse.Namespace) -> LoadSpec:
    if args.users < 1 or args.duration < 1 or args.spawn_rate <= 0:
        raise ValueError("--users, --duration and --spawn-rate must be positive")
    return LoadSpec(loopback_host(args.host), args.grpc_port, args.http_port, args.users, args.spawn_rate,
                    args.duration, args.user_class, args.max_new_tokens, args.questions, args.request_timeout,
                    args.out, args.name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_load_arguments(parser, users=4, duration=60, name="loadtest")
    args = parser.parse_args(argv)
    try:
        spec = spec_from_arguments(args)
    except ValueError as error:
        print(f"loadtest: {error}", file=sys.stderr)
        return EXIT_USAGE
    reason = server_answers(spec)
    if reason is not None:
        print(f"loadtest: the server at {spec.host}:{spec.grpc_port} does not answer: {reason}", file=sys.stderr)
        return EXIT_USAGE
    started = time.monotonic()
    result = run_locust(spec)
    problems = gate(result, args.p95_ms)
    verdict = {"passed": not problems, "problems": problems, "p95_threshold_ms": args.p95_ms,
               "wall_s": round(time.monotonic() - started, 1), **asdict(result)}
    spec.prefix.with_name(f"{spec.name}_gate.json").write_text(json.dumps(verdict, indent=2) + "\n")
    print(summary(result))
    print(f"reports: {spec.prefix}_stats.csv, {spec.prefix}.html")
    if problems:
        print("SLO FAILED: " + "; ".join(problems), file=sys.stderr)
        return EXIT_TIMEOUT if result.timed_out else EXIT_GATE
    print(f"SLO passed: {result.requests} requests, 0 failures, p95 {result.p95_ms:.0f} ms"
          + (f" <= {args.p95_ms:g} ms" if args.p95_ms is not None else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
