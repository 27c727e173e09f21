"""Faults under load, each on its own tritonserver (the shared `server` fixture is never hurt):

* a Python backend stub is killed (`kill -9`) under load: every request ends in time, with a
  correct answer or a clear error; `serving.supervisor` notices (Triton itself never restarts
  a stub and keeps reporting the model READY) and restarts the server; the same client
  objects answer correctly again;
* SIGTERM under load: requests in flight finish with correct answers within the exit timeout,
  later ones are refused at once with a clean error, the server exits 0;
* a restart on the same ports: the same client objects reconnect by themselves;
* a hostile HTTP request that makes Triton 2.51 segfault: the supervisor restores service.

Load comes from a few client threads on loopback, each bounded in requests and time.
"""
from __future__ import annotations

import json
import logging
import os
import re
import signal
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pytest

from client import QAClient
from client.errors import QAError
from serving.server import TritonServer
from serving.supervisor import Supervisor, probe
from tests.helpers import build_repository, dropping_listener, expected_tokens, hf_generate, start_server
from tests.inputs import squad_pairs

NEW_TOKENS = 16
GOOD_PAIR = ("Who wrote the novel?", "The novel was written in 1851 by Herman Melville.")
REQUEST_TIMEOUT_S = 20.0
# The longest a call may take, retries included (the client may retry an unreachable server
# with backoff), before we call it a hang.
HANG_LIMIT_S = 60.0
# A request refused or failed because of the fault: each message names what happened.
CLEAN_ERROR = re.compile(
    r"not healthy|Server is stopping|stopped accepting|unknown model|no available versions|failed to connect|"
    r"Connection refused|connection (reset|closed|aborted)|unavailable|UNAVAILABLE|Socket closed|"
    r"Broken pipe|RemoteDisconnected|ECONNREFUSED|ECONNRESET|errno 111|Errno 104|"
    # a request inside the stub that was killed is never answered: the client's deadline ends it
    r"no answer from \S+ within the [\d.]+ s timeout", re.IGNORECASE)

@dataclass
class Outcome:
    thread: int
    index: int  # into the pairs
    started: float  # monotonic
    seconds: float
    tokens: tuple[int, ...] | None = None  # the answer's token ids, None if the call raised
    error: str = ""


@dataclass
class Load:
    """`threads` client threads asking `pairs` round-robin until stopped (bounded in count and time)."""

    url_of: Callable[[int], tuple[str, str]]  # thread number -> (url, protocol)
    tokenizer: object
    pairs: list[tuple[str, str]]
    threads: int = 4
    max_requests: int = 2_000
    max_seconds: float = 150.0
    outcomes: list[Outcome] = field(default_factory=list)
    clients: dict[int, QAClient] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.stop_event = threading.Event()
        self.workers = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(self.threads)]

    def _run(self, n: int) -> None:
        url, protocol = self.url_of(n)
        deadline = time.monotonic() + self.max_seconds
        qa = self.clients[n] = QAClient(url, protocol, tokenizer=self.tokenizer, timeout_s=REQUEST_TIMEOUT_S)
        try:
            for k in range(self.max_requests):
                if self.stop_event.is_set() or time.monotonic() > deadline:
                    return
                index = (k * self.threads + n) % len(self.pairs)
                started = time.monotonic()
                try:
                    answer = qa.answer(*self.pairs[index], NEW_TOKENS)
                    self.outcomes.append(Outcome(n, index, started, time.monotonic() - started, answer.token_ids))
                except Exception as error:  # noqa: BLE001 - an untyped error is itself a finding
                    kind = type(error).__name__ if isinstance(error, QAError) else f"UNTYPED {type(error).__module__}."
                    self.outcomes.append(Outcome(n, index, started, time.monotonic() - started, None,
                                                 f"{kind}{type(error).__name__}: {error}"))
                    time.sleep(0.05)
        finally:
            qa.close()

    def start(self) -> "Load":
        for worker in self.workers:
            worker.start()
        return self

    def wait_for(self, condition, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert time.monotonic() < deadline, f"timed out after {timeout_s:.0f} s waiting for {what}; {self.last()}"
            time.sleep(0.1)

    def last(self) -> str:
        """Each thread's latest outcome, for failure messages."""
        latest = {o.thread: o for o in list(self.outcomes)}
        return "; ".join(f"thread {n}: {'ok' if o.tokens else o.error[:200]}" for n, o in sorted(latest.items()))

    def successes_after(self, moment: float, thread: int | None = None) -> list[Outcome]:
        return [o for o in list(self.outcomes)
                if o.tokens is not None and o.started > moment and thread in (None, o.thread)]

    def stop(self) -> None:
        self.stop_event.set()
        for worker in self.workers:
            worker.join(HANG_LIMIT_S + REQUEST_TIMEOUT_S)
        assert not any(w.is_alive() for w in self.workers), "a client thread hung"


@pytest.fixture(scope="module")
def pairs() -> list[tuple[str, str]]:
    return squad_pairs(12, stride=211)


@pytest.fixture(scope="module")
def references(pairs, prompts, hf_model) -> list[tuple[int, ...]]:
    rows = []
    for question, context in pairs:
        ids = np.array([prompts.encode(question, context)], dtype=np.int64)
        rows.append(expected_tokens(hf_generate(hf_model, ids, np.ones_like(ids), NEW_TOKENS)[0]))
    return rows


@pytest.fixture(autouse=True, scope="module")
def quiet_client_log():
    logging.getLogger("client").setLevel(logging.ERROR)  # the demo model's warning on every answer


@pytest.fixture
def own_server(tmp_path, checkpoint, exports):
    """A fresh server over its own copy of the repository; stopped (or killed) afterwards."""
    servers: list[TritonServer] = []

    def make() -> TritonServer:
        server = start_server(build_repository(checkpoint, tmp_path, exports), tmp_path / "tritonserver.log")
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop(timeout_s=20)


def check_outcomes(outcomes: list[Outcome], references: list[tuple[int, ...]]) -> dict[str, int]:
    """Every call ended in time, and with the right answer or a clean error."""
    counts = {"correct": 0, "clean errors": 0}
    for o in outcomes:
        assert o.seconds < HANG_LIMIT_S, f"a call took {o.seconds:.1f} s: {o}"
        if o.tokens is not None:
            assert o.tokens == references[o.index], f"wrong answer for pair {o.index}"
            counts["correct"] += 1
        else:
            assert not o.error.startswith("UNTYPED"), f"the client raised an error that is not a QAError: {o.error}"
            assert CLEAN_ERROR.search(o.error), f"unclear error: {o.error}"
            counts["clean errors"] += 1
    return counts


def run_supervisor(supervisor: Supervisor, seconds: float) -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()
    thread = threading.Thread(target=supervisor.run, args=(stop, time.monotonic() + seconds), daemon=True)
    thread.start()
    return thread, stop


@pytest.mark.parametrize("model", ["t5_greedy", "t5_validate"])
def test_killed_stub_under_load_is_recovered_by_the_supervisor(model, own_server, prompts, pairs, references):
    server = own_server()
    grpc_url, http_url = f"127.0.0.1:{server.ports.grpc}", f"127.0.0.1:{server.ports.http}"
    load = Load(lambda n: (http_url, "http") if n == 3 else (grpc_url, "grpc"), prompts.tokenizer, pairs).start()
    said: list[str] = []
    supervisor = Supervisor(server, interval_s=1.0, probe_timeout_s=10.0, failures_to_restart=2, max_restarts=3,
                            ready_timeout_s=120.0, say=said.append)
    old_server_pid, stubs = server.pid, server.stub_pids(model)
    assert len(stubs) == 1, f"expected one stub for {model}, found {stubs}"
    try:
        load.wait_for(lambda: len(load.successes_after(0)) >= 8, 60, "answers before the fault")
        # Triton alone: the stub stays dead, the model stays READY, every request fails.
        killed_at = time.monotonic()
        os.kill(next(iter(stubs)), signal.SIGKILL)
        load.wait_for(lambda: any(o.error and o.started > killed_at for o in load.outcomes), 30,
                      "a request to fail after the kill")
        time.sleep(1.0)
        # Either the stub died alone (Triton keeps saying READY while every request fails), or
        # it took tritonserver down with it (t5_greedy answers through a response sender from
        # its scheduler thread: Triton then aborts on a boost::interprocess::lock_exception).
        server_died = server.process.poll() is not None
        if not server_died:
            assert server.ready(), "/v2/health/ready should still say ready: it cannot see a dead stub"
            assert probe(grpc_url, timeout_s=10) is not None, "a real inference must see it"

        watcher, stop_watch = run_supervisor(supervisor, 150)
        load.wait_for(lambda: supervisor.total_restarts >= 1 and server.pid not in (None, old_server_pid), 120,
                      "the supervisor's restart")
        restarted_at = time.monotonic()
        # The same client objects (gRPC and HTTP) answer again, correctly.
        load.wait_for(lambda: all(load.successes_after(restarted_at, n) for n in range(load.threads)), 90,
                      "every client to answer after the restart")
        stop_watch.set()
        watcher.join(60)
    finally:
        load.stop()
    counts = check_outcomes(load.outcomes, references)
    assert counts["clean errors"] >= 1 and counts["correct"] >= 12, counts
    assert supervisor.total_restarts == 1, said
    reason = "tritonserver is not running" if server_died else f"stub of {model} died"
    assert any(reason in line for line in said), said
    print(f"killing the {model} stub {'took tritonserver down' if server_died else 'left the model dead'}: {said}")
    new_stubs = server.stub_pids(model)
    assert new_stubs and not set(new_stubs) & set(stubs), "the restarted server runs a new stub"
    assert probe(grpc_url, timeout_s=10) is None


def test_sigterm_under_grpc_load_drains_in_flight_and_refuses_new(own_server, prompts, pairs, references):
    """gRPC clients only: with an HTTP client connected, Triton 2.51 spends the exit timeout
    waiting for the HTTP connections (see the xfail test below)."""
    server = own_server()
    url = f"127.0.0.1:{server.ports.grpc}"
    load = Load(lambda n: (url, "grpc"), prompts.tokenizer, pairs, threads=4).start()
    try:
        load.wait_for(lambda: len(load.successes_after(0)) >= 8, 60, "answers before SIGTERM")
        term_at = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        code = server.process.wait(server.exit_timeout_s + 10)
        exited_at = time.monotonic()
        load.wait_for(lambda: any(o.started > exited_at for o in load.outcomes), 30, "a request after the exit")
    finally:
        load.stop()
    assert code == 0
    assert exited_at - term_at <= server.exit_timeout_s + 5
    log = server.log_file.read_text()
    in_flight = [int(n) for n in re.findall(r"Model 't5_qa' \(version 1\) has (\d+) in-flight inferences", log)]
    counts = check_outcomes(load.outcomes, references)
    assert in_flight and max(in_flight) >= 1, "no request was in flight at SIGTERM: nothing was drained"
    drained = [o for o in load.outcomes if o.started < term_at < o.started + o.seconds and o.tokens is not None]
    assert drained, "requests in flight at SIGTERM must complete with their answers"
    late = [o for o in load.outcomes if o.started > term_at + 0.5]  # sent well after SIGTERM
    assert late and all(o.tokens is None for o in late), "the server must refuse requests once it is stopping"
    assert all(o.seconds < 15 for o in late), "new requests must be refused promptly, not hang"
    assert counts["clean errors"] >= 1


@pytest.mark.xfail(strict=True, reason="Triton 2.51: on SIGTERM it waits for open HTTP connections to close, for up "
                                       "to the whole exit timeout, serving on them; then exits at once (code 1, or "
                                       "SIGSEGV with requests in flight). Drain HTTP clients before stopping it.")
def test_sigterm_with_an_idle_http_keepalive_client_exits_promptly(own_server, prompts, pairs, references):
    server = own_server()
    with QAClient(f"127.0.0.1:{server.ports.http}", "http", tokenizer=prompts.tokenizer, timeout_s=10) as qa:
        assert qa.answer(*pairs[0], NEW_TOKENS).token_ids == references[0]  # leaves a keep-alive connection
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        code = server.process.wait(server.exit_timeout_s + 10)
        elapsed = time.monotonic() - started
    assert code == 0 and elapsed < server.exit_timeout_s / 2, f"exit code {code} after {elapsed:.1f} s"


def test_client_reconnects_after_a_restart_on_the_same_ports(own_server, prompts, pairs, references):
    server = own_server()
    clients = [QAClient(f"127.0.0.1:{server.ports.grpc}", "grpc", tokenizer=prompts.tokenizer, timeout_s=10),
               QAClient(f"127.0.0.1:{server.ports.http}", "http", tokenizer=prompts.tokenizer, timeout_s=10)]
    try:
        for qa in clients:
            assert qa.answer(*pairs[0], NEW_TOKENS).token_ids == references[0]
        server.stop()  # exit code 1: Triton 2.51 waits out its exit timeout for the idle HTTP connection
        for qa in clients:
            started = time.monotonic()
            with pytest.raises(QAError) as caught:
                qa.answer(*pairs[1], NEW_TOKENS)
            assert CLEAN_ERROR.search(str(caught.value)), str(caught.value)
            assert time.monotonic() - started < HANG_LIMIT_S
        server.start()
        server.wait_ready(120)
        for qa in clients:
            attempts, deadline = 0, time.monotonic() + 60
            while True:  # bounded: the client's own retries may already make the first try succeed
                attempts += 1
                try:
                    assert qa.answer(*pairs[2], NEW_TOKENS).token_ids == references[2]
                    break
                except QAError:
                    assert time.monotonic() < deadline, f"{qa.protocol} client did not reconnect in 60 s"
                    time.sleep(0.5)
            assert attempts <= 5, f"{qa.protocol} client needed {attempts} attempts to reconnect"
    finally:
        for qa in clients:
            qa.close()


def test_http_request_that_crashes_triton_is_survived_with_the_supervisor(own_server, prompts, pairs, references):
    """Triton 2.51's HTTP JSON parser allocates declared-shape x element-size bytes before it
    looks at the data; when that allocation fails (here INT64 [1, 2**62]), tritonserver dies
    with SIGSEGV. Whatever Triton does, the service must come back."""
    server = own_server()
    said: list[str] = []
    supervisor = Supervisor(server, interval_s=1.0, probe_timeout_s=10.0, failures_to_restart=2,
                            ready_timeout_s=120.0, say=said.append)
    old_pid = server.pid
    body = json.dumps({"inputs": [
        {"name": "input_ids", "shape": [1, 2**62], "datatype": "INT64", "data": [822, 10, 5, 1]},
        {"name": "attention_mask", "shape": [1, 4], "datatype": "INT64", "data": [1, 1, 1, 1]}]}).encode()
    watcher, stop_watch = run_supervisor(supervisor, 120)
    try:
        request = urllib.request.Request(f"http://127.0.0.1:{server.ports.http}/v2/models/t5_qa/infer", data=body)
        try:
            urllib.request.urlopen(request, timeout=30).close()
        except (urllib.error.URLError, ConnectionError, OSError):
            pass  # refused (400/500) or the connection dropped with the crash
        deadline = time.monotonic() + 120
        with QAClient(f"127.0.0.1:{server.ports.grpc}", tokenizer=prompts.tokenizer, timeout_s=10) as qa:
            while True:
                try:
                    assert qa.answer(*pairs[3], NEW_TOKENS).token_ids == references[3]
                    break
                except QAError:
                    assert time.monotonic() < deadline, f"no correct answer within 120 s; supervisor: {said}"
                    time.sleep(0.5)
    finally:
        stop_watch.set()
        watcher.join(60)
    crashed = server.pid != old_pid
    print(f"tritonserver {'crashed and was restarted' if crashed else 'survived'}; supervisor said: {said}")
    if crashed:
        assert supervisor.total_restarts == 1 and "exit code -11" in " ".join(said), said


def test_http_client_types_a_dropped_connection(prompts):
    """A loopback listener that accepts and closes every connection (what a crashing or
    restarting server does to in-flight requests): the client must raise its typed error
    (a raw geventhttpclient HTTPConnectionClosed escaped before the client mapped it)."""
    with dropping_listener(max_connections=100, max_seconds=60) as url:
        with QAClient(url, "http", tokenizer=prompts.tokenizer, timeout_s=5) as qa:
            started = time.monotonic()
            with pytest.raises(QAError):
                qa.answer(*GOOD_PAIR, NEW_TOKENS)
            assert time.monotonic() - started < HANG_LIMIT_S
