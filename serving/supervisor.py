"""Keep a tritonserver answering: probe it with a real inference, restart it when it stops.

Triton does not restart a Python backend stub that died (out-of-memory kill, segfault): the
model stays READY, `/v2/health/ready` stays 200, and every request to it fails with "Stub
process ... is not healthy". So health here means *a real answer*: every `interval` seconds
the supervisor sends a small `t5_qa` request (a fixed 9-token prompt, 2 new tokens) with a
deadline. It restarts the server through `TritonServer.stop()` / `start()` on the same ports
after `failures` consecutive failed probes, or at once when the tritonserver process has
exited or one of the stubs it had when it became ready is gone from /proc. In-flight requests
get the exit timeout to finish, except after a stub died: Triton cannot unload that model and
would wait out its whole exit timeout, so the server gets `dead_stub_grace_s` (5 s) and is
then killed. At most `max_restarts` restarts in `restart_window` seconds; past that it gives
up (exit code 3), so that a server that cannot come up is not restarted forever and the outer
orchestrator (systemd, Kubernetes) sees it.

The probe must wait longer than the worst queueing delay under load (default 30 s): a probe
that times out because the server is merely busy would restart a healthy server.

`make serve` runs its server under a Supervisor. On its own:

  python -m serving.supervisor probe --url 127.0.0.1:8001          # exit 0 healthy, 1 not
  python -m serving.supervisor serve --repository model_repository  # start and supervise

`probe` also serves as a Kubernetes exec liveness probe.
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from serving.server import Ports, TritonServer, stop_on_signals

# "question: Who? context: Bob.</s>" in T5 ids; any in-vocabulary ids would do.
PROBE_IDS = np.array([[822, 10, 2645, 58, 2625, 10, 5762, 5, 1]], dtype=np.int64)
PROBE_NEW_TOKENS = 2
EXIT_GAVE_UP = 3


def probe(url: str, model: str = "t5_qa", timeout_s: float = 30.0) -> str | None:
    """One real inference over gRPC; None if it answered sensibly, else why not."""
    import tritonclient.grpc as grpc
    from tritonclient.utils import InferenceServerException

    inputs = []
    for name, value in (("input_ids", PROBE_IDS), ("attention_mask", np.ones_like(PROBE_IDS)),
                        ("max_new_tokens", np.array([[PROBE_NEW_TOKENS]], dtype=np.int32))):
        tensor = grpc.InferInput(name, list(value.shape), "INT32" if value.dtype == np.int32 else "INT64")
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    try:
        with grpc.InferenceServerClient(url) as client:
            result = client.infer(model, inputs, client_timeout=timeout_s)
    except InferenceServerException as error:
        return f"{error.status() or 'error'}: {error.message()}"
    lengths = result.as_numpy("output_lengths")
    ids = result.as_numpy("output_ids")
    if lengths is None or ids is None or lengths.shape != (1, 1) or not 1 <= int(lengths[0, 0]) <= PROBE_NEW_TOKENS:
        return f"malformed answer: output_lengths {None if lengths is None else lengths.tolist()}"
    return None


def _stderr(message: str) -> None:
    print(f"[supervisor] {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


class SupervisorGaveUp(RuntimeError):
    """The server needed more restarts than allowed in the window."""


@dataclass
class Supervisor:
    """Probes `server` and restarts it; `run()` until `stop` is set (or `deadline`)."""

    server: TritonServer
    interval_s: float = 10.0
    probe_timeout_s: float = 30.0
    failures_to_restart: int = 3
    max_restarts: int = 5
    restart_window_s: float = 600.0
    ready_timeout_s: float = 600.0
    model: str = "t5_qa"
    say: Callable[[str], None] = _stderr
    dead_stub_grace_s: float = 5.0  # drain time when a stub died (Triton would wait its whole exit timeout)
    restarts: deque = field(default_factory=deque)  # monotonic times of restarts in the window
    consecutive_failures: int = 0
    total_restarts: int = 0
    stubs: dict[int, str] = field(default_factory=dict)  # the server's stubs when it became ready

    def __post_init__(self) -> None:
        self.stubs = self.server.stub_pids()

    def dead_stubs(self) -> list[str]:
        """Models whose stub, seen when the server became ready, is gone."""
        alive = self.server.stub_pids()
        return sorted(model for pid, model in self.stubs.items() if pid not in alive)

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.server.ports.grpc}"

    def check(self) -> tuple[str | None, bool]:
        """Why the server is unhealthy (None if healthy), and whether that is certain without
        waiting for more probes (the process exited, or a stub died: Triton restarts neither)."""
        if self.server.process is None or self.server.process.poll() is not None:
            code = None if self.server.process is None else self.server.process.returncode
            return f"tritonserver is not running (exit code {code})", True
        dead = self.dead_stubs()
        if dead:
            return f"the Python backend stub of {', '.join(dead)} died", True
        return probe(self.url, self.model, self.probe_timeout_s), False

    def restart(self, reason: str) -> None:
        now = time.monotonic()
        while self.restarts and now - self.restarts[0] > self.restart_window_s:
            self.restarts.popleft()
        if len(self.restarts) >= self.max_restarts:
            raise SupervisorGaveUp(f"{len(self.restarts)} restarts in the last {self.restart_window_s:.0f} s; "
                                   f"giving up (last failure: {reason})")
        self.restarts.append(now)
        self.total_restarts += 1
        dead = self.dead_stubs() if self.server.pid else []
        self.say(f"restarting tritonserver (restart {self.total_restarts}): {reason}"
                 + (f"; dead stub(s): {', '.join(dead)}" if dead else ""))
        started = time.monotonic()
        try:
            # A dead stub cannot be unloaded: Triton would wait its whole exit timeout for it.
            self.server.restart(self.ready_timeout_s, self.dead_stub_grace_s if dead else None)
        except (RuntimeError, TimeoutError, OSError) as error:  # the next step sees it down and retries
            self.say(f"restart failed: {error}")
            self.server.stop()
            return
        self.consecutive_failures = 0
        self.stubs = self.server.stub_pids()
        self.say(f"tritonserver ready again after {time.monotonic() - started:.1f} s (pid {self.server.pid})")

    def step(self) -> None:
        """One check, and a restart if it failed `failures_to_restart` times in a row, or at
        once if the process or a stub is gone."""
        reason, certain = self.check()
        if reason is None:
            if self.consecutive_failures:
                self.say(f"probe ok after {self.consecutive_failures} failure(s)")
            self.consecutive_failures = 0
            return
        self.consecutive_failures += 1
        self.say(f"probe failed ({self.consecutive_failures}/{self.failures_to_restart}): {reason}")
        if certain or self.consecutive_failures >= self.failures_to_restart:
            self.restart(reason)

    def run(self, stop: threading.Event, deadline: float | None = None) -> None:
        """Probe every `interval_s` until `stop` is set or the monotonic `deadline` passes.
        Raises SupervisorGaveUp when the restart budget is spent."""
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            started = time.monotonic()
            self.step()
            stop.wait(max(0.0, self.interval_s - (time.monotonic() - started)))


def add_supervisor_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("supervision")
    group.add_argument("--probe-interval", type=float, default=10.0, help="seconds between probes (default 10)")
    group.add_argument("--probe-timeout", type=float, default=30.0,
                       help="seconds a probe may take; above the worst queueing delay (default 30)")
    group.add_argument("--probe-failures", type=int, default=3,
                       help="consecutive failed probes that trigger a restart (default 3)")
    group.add_argument("--max-restarts", type=int, default=5,
                       help="restarts allowed per --restart-window before giving up (default 5)")
    group.add_argument("--restart-window", type=float, default=600.0, help="seconds (default 600)")


def supervisor_from_arguments(server: TritonServer, args: argparse.Namespace) -> Supervisor:
    return Supervisor(server, interval_s=args.probe_interval, probe_timeout_s=args.probe_timeout,
                      failures_to_restart=args.probe_failures, max_restarts=args.max_restarts,
                      restart_window_s=args.restart_window)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.supervisor", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    once = commands.add_parser("probe", help="one real inference; exit 0 if it answered, 1 if not")
    once.add_argument("--url", default="127.0.0.1:8001", help="gRPC address")
    once.add_argument("--model", default="t5_qa")
    once.add_argument("--timeout", type=float, default=30.0, help="seconds")
    serve = commands.add_parser("serve", help="start tritonserver over a ready repository and supervise it")
    serve.add_argument("--repository", type=Path, default=Path("model_repository"))
    serve.add_argument("--address", default="0.0.0.0")
    serve.add_argument("--http-port", type=int, default=8000)
    serve.add_argument("--grpc-port", type=int, default=8001)
    serve.add_argument("--metrics-port", type=int, default=8002)
    serve.add_argument("--exit-timeout", type=int, default=30, help="seconds in-flight requests get on shutdown")
    serve.add_argument("--log-file", type=Path, default=None)
    add_supervisor_arguments(serve)
    args = parser.parse_args(argv)

    if args.command == "probe":
        reason = probe(args.url, args.model, args.timeout)
        print("ok" if reason is None else f"unhealthy: {reason}", file=sys.stdout if reason is None else sys.stderr)
        return 0 if reason is None else 1

    server = TritonServer(args.repository, Ports(args.http_port, args.grpc_port, args.metrics_port),
                          address=args.address, exit_timeout_s=args.exit_timeout, log_file=args.log_file)
    stop = stop_on_signals()
    server.start()
    try:
        server.wait_ready()
        _stderr(f"tritonserver ready (pid {server.pid}); probing {args.grpc_port} every {args.probe_interval:g} s")
        supervisor_from_arguments(server, args).run(stop)
    except SupervisorGaveUp as error:
        _stderr(str(error))
        return EXIT_GAVE_UP
    finally:
        code = server.stop()
        _stderr(f"tritonserver stopped (exit code {code})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
