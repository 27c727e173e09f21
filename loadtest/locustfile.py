"""Locust users that ask real SQuAD 2.0 dev questions through the project's client.

`GrpcQAUser` and `HttpQAUser` each hold one `client.QAClient` (gRPC or HTTP) and report every
`answer` call to Locust (`events.request.fire`): request type `grpc`/`http`, name `t5_qa`,
response time in ms, answer length in characters, the exception if it failed. Questions are
drawn at random (seeded) from `--questions` pairs spread over the dev set, which is read from
`../shared/data/squad_v2/dev-v2.0.json.gz` (or `$T5QA_SHARED_DATA`), never copied.

Headless, with the SLO gate and reports: `python -m loadtest.run --help` (`make loadtest`).
With the web UI, on loopback only:

  .venv/bin/locust -f loadtest/locustfile.py --host 127.0.0.1 --web-host 127.0.0.1 \
      --grpc-port 8001 --http-port 8000

Safety: the host must resolve to loopback addresses only (127.0.0.0/8, ::1), otherwise no user
starts; each user stops by itself after `--max-requests-per-user` requests or
`--max-run-seconds` seconds, whatever the UI says.
"""
from __future__ import annotations

import json
import logging
import random
import sys
import time
from pathlib import Path

import gevent
import grpc.experimental.gevent as grpc_gevent

grpc_gevent.init_gevent()  # before any channel exists: otherwise gRPC calls block the whole process

from locust import User, constant, events, task  # noqa: E402
from locust.exception import StopUser  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests.inputs
from client import QAClient  # noqa: E402
from client.tokenizer import load_tokenizer  # noqa: E402
from loadtest.safety import loopback_host  # noqa: E402
from shared_data import squad_pairs  # noqa: E402

log = logging.getLogger("loadtest")
_shared: dict = {}  # tokenizer and questions, loaded once per Locust process


@events.init_command_line_parser.add_listener
def _arguments(parser) -> None:
    group = parser.add_argument_group("T5 QA")
    group.add_argument("--grpc-port", type=int, default=8001, help="Triton gRPC port")
    group.add_argument("--http-port", type=int, default=8000, help="Triton HTTP port")
    group.add_argument("--questions", type=int, default=500, help="distinct SQuAD dev questions to draw from")
    group.add_argument("--max-new-tokens", type=int, default=0, help="0: the server's default")
    group.add_argument("--request-timeout", type=float, default=60.0, help="seconds per request")
    group.add_argument("--max-requests-per-user", type=int, default=100_000, help="each user stops after this many")
    group.add_argument("--max-run-seconds", type=float, default=3600.0,
                       help="each user stops this long after the test started, whatever the UI says")
    group.add_argument("--seed", type=int, default=0, help="question order seed")
    group.add_argument("--summary-json", default="", help="write the final statistics here at exit (the SLO gate's input)")


@events.test_start.add_listener
def _load_shared(environment, **_) -> None:
    try:
        loopback_host(environment.host)
    except ValueError as error:
        log.error("refusing to start: %s", error)
        environment.process_exit_code = 2
        if environment.runner is not None:
            gevent.spawn_later(0, environment.runner.quit)
        return
    options = environment.parsed_options
    if "tokenizer" not in _shared:
        _shared["tokenizer"] = load_tokenizer(None)
        _shared["pairs"] = squad_pairs(options.questions, stride=7)
        logging.getLogger("client").setLevel(logging.ERROR)  # the demo model's per-answer warning
    _shared["started"] = time.monotonic()
    log.info("loaded %d SQuAD dev questions", len(_shared["pairs"]))


def _entry(entry) -> dict:
    return {"type": entry.method or "", "name": entry.name, "requests": entry.num_requests,
            "failures": entry.num_failures, "p50_ms": entry.get_response_time_percentile(0.5),
            "p95_ms": entry.get_response_time_percentile(0.95), "p99_ms": entry.get_response_time_percentile(0.99),
            "max_ms": round(entry.max_response_time or 0, 1), "rps": round(entry.total_rps, 2)}


@events.init.add_listener
def _remember_environment(environment, **_) -> None:
    _shared["environment"] = environment


@events.quit.add_listener
def _write_summary(**_) -> None:
    """Final statistics (Locust's CSV is a snapshot taken every 2 s, so it may miss the end)."""
    environment = _shared.get("environment")
    path = getattr(environment.parsed_options, "summary_json", "") if environment else ""
    if not path:
        return
    stats = environment.stats
    summary = {"total": _entry(stats.total), "entries": [_entry(e) for e in stats.entries.values()],
               "errors": [{"type": e.method, "name": e.name, "error": str(e.error), "occurrences": e.occurrences}
                          for e in stats.errors.values()]}
    Path(path).write_text(json.dumps(summary, indent=2) + "\n")


class _QAUser(User):
    """One client connection asking one question at a time, with no pause between them."""

    abstract = True
    protocol = "grpc"
    wait_time = constant(0)

    def on_start(self) -> None:
        options = self.environment.parsed_options
        try:
            host = loopback_host(self.host)
        except ValueError as error:
            log.error("%s", error)
            raise StopUser() from error
        port = options.grpc_port if self.protocol == "grpc" else options.http_port
        if "tokenizer" not in _shared:  # users started without test_start (e.g. a custom runner)
            _load_shared(self.environment)
        self.qa = QAClient(f"{host}:{port}", self.protocol, tokenizer=_shared["tokenizer"],
                           timeout_s=options.request_timeout)
        self.random = random.Random(options.seed * 1_000_003 + id(self))
        self.sent = 0
        self.max_new_tokens = options.max_new_tokens or None

    def on_stop(self) -> None:
        qa = getattr(self, "qa", None)
        if qa is not None:
            qa.close()  # an open Triton client keeps Locust from exiting
            self.qa = None

    def ask(self) -> None:
        options = self.environment.parsed_options
        if self.sent >= options.max_requests_per_user or \
                time.monotonic() - _shared["started"] > options.max_run_seconds:
            raise StopUser()
        self.sent += 1
        question, context = self.random.choice(_shared["pairs"])
        started = time.perf_counter()
        exception, length = None, 0
        try:
            length = len(self.qa.answer(question, context, self.max_new_tokens).text)
        except Exception as error:  # noqa: BLE001 - every failure is reported to Locust
            exception = error
        self.environment.events.request.fire(
            request_type=self.protocol, name="t5_qa", response_time=(time.perf_counter() - started) * 1000,
            response_length=length, exception=exception, context={"question": question[:80]})


class GrpcQAUser(_QAUser):
    protocol = "grpc"

    @task
    def answer(self) -> None:
        self.ask()


class HttpQAUser(_QAUser):
    protocol = "http"

    @task
    def answer(self) -> None:
        self.ask()
