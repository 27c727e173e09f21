"""The client against a real tritonserver: sync and asyncio, gRPC and HTTP, typed answers,
batch splitting (counted by the server), timeouts, retries with backoff on UNAVAILABLE only
(against a stopped server), reconnection after a restart, the no-answer threshold, the CLI,
and the stand-alone package. A call's `timeout_s` is one deadline for the whole call: it ends
retries and multi-request batches, and each attempt sends the server the time left."""
from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
import zipfile
from concurrent import futures

import grpc as grpcio
import numpy as np
import pytest
import tritonclient.grpc as grpc
from tritonclient.grpc import service_pb2

from client import (AsyncQAClient, InvalidArgument, InvalidInput, QAClient, RequestTimeout, RetryPolicy,
                    ServerError, ServerUnavailable)
from serving.server import TritonServer
from tests.helpers import REPO_ROOT, build_repository, dropping_listener, free_ports, start_server
from tests.inputs import TOKENIZER_JSON, parity_pairs

PAIRS = parity_pairs()
QUESTION = ("Who wrote the novel?", "The novel was written in 1851 by Herman Melville.")
FAST_RETRY = RetryPolicy(attempts=4, initial_backoff_s=0.2, multiplier=2.0, max_backoff_s=4.0, jitter=0.0)
CLIENT_KINDS = [("grpc", False), ("http", False), ("grpc", True), ("http", True)]


@pytest.fixture(scope="module")
def urls(server) -> dict[str, str]:
    return {"grpc": f"127.0.0.1:{server.ports.grpc}", "http": f"127.0.0.1:{server.ports.http}"}


def call(protocol: str, use_async: bool, url: str, prompts, method: str, *args, **settings):
    """Run `method(*args)` on a fresh sync or asyncio client; return its result or raise."""
    if not use_async:
        with QAClient(url, protocol, tokenizer=prompts.tokenizer, **settings) as qa:
            return getattr(qa, method)(*args)

    async def run():
        async with AsyncQAClient(url, protocol, tokenizer=prompts.tokenizer, **settings) as qa:
            return await getattr(qa, method)(*args)
    return asyncio.run(run())


def ensemble_counts(raw) -> tuple[int, int, int]:
    """t5_qa's (rows inferred, requests executed, failed requests) so far, from the server,
    once settled: Triton may record a request's statistics just after answering it."""
    def read() -> tuple[int, int, int]:
        stats = raw.get_inference_statistics("t5_qa", as_json=True)["model_stats"][0]
        return (int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0)),
                int(stats["inference_stats"]["fail"].get("count", 0)))

    previous = read()
    for _ in range(20):
        time.sleep(0.1)
        current = read()
        if current == previous:
            return current
        previous = current
    return previous


@pytest.mark.parametrize("protocol, use_async", CLIENT_KINDS)
def test_every_client_kind_gives_the_same_typed_answers(protocol, use_async, urls, client, prompts):
    pairs = PAIRS[30:42]  # includes a context longer than 512 tokens (index 34)
    expected = client.answer_batch(pairs, max_new_tokens=16)
    answers = call(protocol, use_async, urls[protocol], prompts, "answer_batch", pairs, 16)
    assert [a.token_ids for a in answers] == [e.token_ids for e in expected]
    assert [a.text for a in answers] == [e.text for e in expected]
    for result, reference in zip(answers, expected):
        assert result.score == pytest.approx(reference.score, abs=1e-5) and result.score <= 0
        assert result.model_version == "1" and result.latency_s > 0 and result.demo_model
        assert result.token_count == len(result.token_ids) and 1 <= result.token_count <= 16
        assert result.no_answer == (result.text == "") and result.generated == result.text
    assert [a.windows for a in answers][4] == 2 and answers[4].window is not None


def test_batches_are_split_into_server_sized_requests(client, raw):
    """20 prompts (19 questions, one with two windows), max_batch_size 8: the server sees
    3 requests and 20 rows; answers come back in input order."""
    pairs = PAIRS[20:39]
    plan = client.plan(pairs)
    assert len(plan.rows) == 20 and [len(c.rows) for c in plan.chunks] == [8, 8, 4]
    rows, requests, _ = ensemble_counts(raw)
    answers = client.answer_batch(pairs, max_new_tokens=4)
    after = ensemble_counts(raw)
    assert (after[0] - rows, after[1] - requests) == (20, 3)
    singles = [client.answer(q, c, max_new_tokens=4) for q, c in pairs]
    assert [a.token_ids for a in answers] == [s.token_ids for s in singles]


def test_async_batches_run_concurrently_and_keep_order(urls, prompts, client):
    pairs = PAIRS[:40]
    done: list[int] = []

    async def run():
        async with AsyncQAClient(urls["grpc"], tokenizer=prompts.tokenizer) as qa:
            return await qa.answer_batch(pairs, 8, concurrency=3, progress=done.append)
    answers = asyncio.run(run())
    assert sum(done) == len(pairs)
    assert [a.token_ids for a in answers] == [a.token_ids for a in client.answer_batch(pairs, 8)]


@pytest.mark.parametrize("protocol, use_async", CLIENT_KINDS)
def test_tiny_timeout_on_a_long_generation_raises_request_timeout(protocol, use_async, urls, prompts, client):
    pairs = PAIRS[:8]
    started = time.monotonic()
    with pytest.raises(RequestTimeout, match="within the 0.01 s timeout") as caught:
        call(protocol, use_async, urls[protocol], prompts, "answer_batch", pairs, 64, 0.01, retry=FAST_RETRY)
    assert isinstance(caught.value, TimeoutError)
    assert time.monotonic() - started < 3, "a timeout is not retried"
    assert client.answer(*QUESTION, max_new_tokens=4).token_count >= 1  # the server is fine


def test_per_call_timeout_overrides_the_clients(urls, prompts):
    with QAClient(urls["grpc"], tokenizer=prompts.tokenizer, timeout_s=120) as qa:
        with pytest.raises(RequestTimeout):
            qa.answer_batch(PAIRS[:8], 64, timeout_s=0.01)
        assert qa.answer(*QUESTION, max_new_tokens=4).token_count >= 1


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_invalid_argument_is_sent_once_and_not_retried(protocol, urls, raw, prompts, caplog):
    too_long = np.full((1, 513), 5, np.int64)
    _, _, failed = ensemble_counts(raw)
    with pytest.raises(grpc.InferenceServerException):
        raw.infer("t5_qa", [_tensor("input_ids", too_long), _tensor("attention_mask", np.ones_like(too_long))])
    _, _, per_request = ensemble_counts(raw)
    per_request -= failed  # how much one refused request adds to the failure count
    with QAClient(urls[protocol], protocol, tokenizer=prompts.tokenizer, retry=FAST_RETRY) as qa:
        with caplog.at_level(logging.WARNING, logger="client"), pytest.raises(InvalidArgument) as caught:
            qa.generate(too_long, np.ones_like(too_long))
    assert "513 tokens; the limit is 512" in str(caught.value)
    assert caught.value.status in ("StatusCode.INVALID_ARGUMENT", "400")
    assert ensemble_counts(raw)[2] - failed == 2 * per_request, "exactly one more refused request"
    assert not [r for r in caplog.records if "retrying" in r.getMessage()]


def _tensor(name: str, value: np.ndarray) -> grpc.InferInput:
    tensor = grpc.InferInput(name, list(value.shape), "INT64")
    tensor.set_data_from_numpy(value)
    return tensor


@pytest.mark.parametrize("protocol, use_async", CLIENT_KINDS)
def test_unreachable_server_is_retried_with_backoff_then_unavailable(protocol, use_async, prompts, caplog):
    url = f"127.0.0.1:{free_ports(1)[0]}"  # nobody listens there
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="client"), pytest.raises(ServerUnavailable) as caught:
        call(protocol, use_async, url, prompts, "answer", *QUESTION, retry=FAST_RETRY)
    elapsed = time.monotonic() - started
    backoff = FAST_RETRY.total_backoff_s()  # 0.2 + 0.4 + 0.8
    assert backoff == pytest.approx(1.4)
    assert backoff <= elapsed < backoff + 2.0
    assert caught.value.attempts == 4 and isinstance(caught.value, ConnectionError)
    assert f"{url} unavailable after 4 attempt(s)" in str(caught.value)
    assert len([r for r in caplog.records if "retrying in" in r.getMessage()]) == 3


@pytest.fixture(scope="module")
def spare_repository(tmp_path_factory, checkpoint, exports):
    return build_repository(checkpoint, tmp_path_factory.mktemp("spare"), exports)


def test_stopped_server_gives_unavailable_and_the_same_client_reconnects_after_restart(
        spare_repository, tmp_path, prompts, caplog):
    server = start_server(spare_repository, tmp_path / "first.log")
    restarted = None
    try:
        with QAClient(f"127.0.0.1:{server.ports.grpc}", tokenizer=prompts.tokenizer, retry=FAST_RETRY) as qa:
            before = qa.answer(*QUESTION, max_new_tokens=6)
            assert server.stop() == 0
            started = time.monotonic()
            with caplog.at_level(logging.WARNING, logger="client"), pytest.raises(ServerUnavailable) as caught:
                qa.answer(*QUESTION, max_new_tokens=6)
            assert FAST_RETRY.total_backoff_s() <= time.monotonic() - started < FAST_RETRY.total_backoff_s() + 2.0
            assert caught.value.attempts == 4
            restarted = TritonServer(spare_repository, server.ports, address="127.0.0.1", exit_timeout_s=10,
                                     log_file=tmp_path / "second.log").start()
            restarted.wait_ready(timeout_s=180)
            after = qa.answer(*QUESTION, max_new_tokens=6)  # same client object, same channel
            assert after.token_ids == before.token_ids
    finally:
        server.stop()
        if restarted:
            restarted.stop()


def test_no_answer_threshold(urls, prompts, client):
    plain = client.answer_batch(PAIRS[:24], max_new_tokens=8)
    answered = sorted(a.score for a in plain if a.text)
    assert len(answered) >= 4, "need answers on both sides of the threshold"
    threshold = answered[len(answered) // 2]
    with QAClient(urls["grpc"], tokenizer=prompts.tokenizer, no_answer_threshold=threshold) as qa:
        strict = qa.answer_batch(PAIRS[:24], max_new_tokens=8)
    for before, after in zip(plain, strict):
        assert after.generated == before.text and after.token_ids == before.token_ids
        below = bool(before.text) and before.score < threshold
        assert after.below_threshold == below
        assert after.text == ("" if below else before.text) and after.no_answer == (below or before.no_answer)
    assert any(a.below_threshold for a in strict) and any(a.text for a in strict)


@pytest.mark.parametrize("protocol, use_async", CLIENT_KINDS)
def test_health(protocol, use_async, urls, prompts):
    report = call(protocol, use_async, urls[protocol], prompts, "health")
    assert report["live"] and report["ready"] and report["model_ready"] and report["triton_version"]
    dead = call(protocol, use_async, f"127.0.0.1:{free_ports(1)[0]}", prompts, "health", 2.0)
    assert not dead["live"] and dead["error"]


def test_server_errors_are_typed(urls, prompts):
    with QAClient(urls["grpc"], model="no_such_model", tokenizer=prompts.tokenizer, retry=FAST_RETRY) as qa:
        with pytest.raises(ServerError, match="no_such_model"):
            qa.answer(*QUESTION)


def test_retry_policy_backoff():
    policy = RetryPolicy(attempts=6, initial_backoff_s=0.25, multiplier=2.0, max_backoff_s=1.5)
    assert [policy.backoff_s(k) for k in range(1, 6)] == [0.25, 0.5, 1.0, 1.5, 1.5]
    assert policy.total_backoff_s() == pytest.approx(4.75)
    for bad in (dict(attempts=0), dict(multiplier=0.5), dict(jitter=1.0)):
        with pytest.raises(ValueError):
            RetryPolicy(**bad)


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "client", *args], cwd=REPO_ROOT, input=stdin, capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, T5QA_TOKENIZER=str(TOKENIZER_JSON)))


def test_cli_batch_jsonl(urls, client, tmp_path):
    lines = [json.dumps({"id": "first", "question": PAIRS[0][0], "context": PAIRS[0][1]}),
             json.dumps({"question": "", "context": "x"}), "not json", "",
             json.dumps({"question": PAIRS[34][0], "context": PAIRS[34][1]}), json.dumps({"question": "q"})]
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(lines) + "\n")
    done = run_cli("batch", str(source), "-o", str(tmp_path / "out.jsonl"), "--url", urls["grpc"],
                   "--max-new-tokens", "8")
    assert done.returncode == 2, done.stderr
    assert "3 of 5 input lines were invalid" in done.stderr and "2/2 questions" in done.stderr
    assert done.stderr.count("DEMO model") == 1
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == ["first", 2, 3, 5, 6]
    assert records[1]["error"] == "line 2: question is empty" and "not JSON" in records[2]["error"]
    assert records[4]["error"] == "line 6: missing context"
    expected = client.answer_batch([PAIRS[0], PAIRS[34]], 8)
    for record, result in zip((records[0], records[3]), expected):
        assert record["answer"] == result.text and record["tokens"] == result.token_count
        assert record["score"] == pytest.approx(result.score, abs=1e-5) and record["model_version"] == "1"
    assert records[3]["windows"] == 2


def test_cli_ask_and_health(urls):
    ask = run_cli("ask", "-q", QUESTION[0], "-c", QUESTION[1], "--url", urls["http"], "--protocol", "http",
                  "--max-new-tokens", "4", "--json")
    assert ask.returncode == 0, ask.stderr
    assert json.loads(ask.stdout)["tokens"] <= 4
    health = run_cli("health", "--url", urls["grpc"])
    assert health.returncode == 0 and json.loads(health.stdout)["model_ready"] is True
    dead = run_cli("health", "--url", f"127.0.0.1:{free_ports(1)[0]}", "--timeout", "2")
    assert dead.returncode == 1 and json.loads(dead.stdout)["live"] is False
    unreachable = run_cli("ask", "-q", "Who?", "-c", "Bob.", "--url", f"127.0.0.1:{free_ports(1)[0]}", "--retries", "1")
    assert unreachable.returncode == 1 and "ServerUnavailable" in unreachable.stderr


@pytest.mark.parametrize("command, needed", [
    ("ask", ["--question", "--context", "--context-file", "--no-answer-threshold", "--long-context", "--stride",
             "--timeout", "--retries", "--json"]),
    ("batch", ["input", "--output", "--concurrency", "--quiet", '"question"', '"error"', "Exit status"]),
    ("health", ["--url", "--protocol", "--timeout", '"model_ready"', "Exit 0 when ready"]),
])
def test_cli_help_documents_every_command(command, needed):
    done = run_cli(command, "--help")
    assert done.returncode == 0
    for text in needed:
        assert text in " ".join(done.stdout.split()), f"{command} --help does not mention {text}"


def test_client_package_builds_alone_with_three_dependencies(tmp_path):
    source = tmp_path / "client"
    for package in ("client", "contract"):  # the client's wheel carries the contract beside it
        shutil.copytree(REPO_ROOT / package, tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist")], check=True, capture_output=True, timeout=300)
    wheel = next((tmp_path / "dist").glob("*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if n.endswith("METADATA"))).decode()
        entry_points = archive.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    modules = {n.split("/", 1)[1] for n in names if n.startswith("client/")}
    assert {"__init__.py", "__main__.py", "api.py", "aio.py", "tokenizer.py", "errors.py"} <= modules
    assert {"contract/prompt.py", "contract/limits.py", "contract/names.py"} <= set(names)
    requires = sorted(line.split(":", 1)[1].strip().split("<")[0].split(">")[0]
                      for line in metadata.splitlines() if line.startswith("Requires-Dist:"))
    assert requires == ["numpy", "tokenizers", "tritonclient[grpc,http]"]
    assert "t5qa = client.__main__:main" in entry_points
    installed = tmp_path / "site-packages"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(installed)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    imported = subprocess.run([sys.executable, "-c", "import sys, client, client.aio, client.__main__; "
                               "print(sorted({m.split('.')[0] for m in sys.modules} & "
                               "{'torch', 'transformers', 'serving', 'runtime', 'export'}), client.__file__)"],
                              cwd=elsewhere, env=dict(os.environ, PYTHONPATH=str(installed)), capture_output=True,
                              text=True, timeout=60)
    assert imported.returncode == 0, imported.stderr
    found, location = imported.stdout.split()
    assert found == "[]", "the client must not import torch, transformers or server code"
    assert location.startswith(str(installed)), "imported from the wheel, not from the project"


def test_text_that_is_not_utf8_is_refused_naming_the_field(client):
    with pytest.raises(InvalidInput, match="question is not valid UTF-8: surrogates not allowed at character 12"):
        client.answer("Who wrote it\udcff?", "Bob wrote it.")


@pytest.mark.parametrize("use_async", [False, True])
def test_connection_closed_mid_request_is_unavailable(use_async, prompts):
    """A listener that reads each request and closes the connection (as a crashing server
    does): the HTTP clients retry, then raise `ServerUnavailable`."""
    with dropping_listener() as url:
        with pytest.raises(ServerUnavailable) as caught:
            call("http", use_async, url, prompts, "answer", *QUESTION,
                 retry=RetryPolicy(attempts=2, initial_backoff_s=0.1, jitter=0.0), timeout_s=10)
        assert caught.value.attempts == 2


# --- the call's deadline (issue 14): retries, batches and what each attempt sends ---

MANY_RETRIES = RetryPolicy(attempts=50, initial_backoff_s=0.1, multiplier=1.5, max_backoff_s=0.5, jitter=0.0)


def timed(protocol: str, use_async: bool, url: str, prompts, method: str, *args, warm: bool = True, **settings):
    """Run `method(*args)` on a fresh client (`warm`: its served config read first, so that the
    time is the call's own); return what it returned or raised, the seconds it took and, when
    `warm`, the same client's answer to a short question asked afterwards."""
    async def run(qa, is_async: bool):
        async def wait(result):
            return await result if is_async else result
        if warm:
            await wait(qa.model_config() if is_async else qa.model_config)
        started = time.monotonic()
        try:
            result = await wait(getattr(qa, method)(*args))
        except Exception as error:  # noqa: BLE001 - the tests look at it
            result = error
        seconds = time.monotonic() - started
        after = await wait(qa.answer(*QUESTION, max_new_tokens=4)) if warm else None
        return result, seconds, after

    if not use_async:
        with QAClient(url, protocol, tokenizer=prompts.tokenizer, **settings) as qa:
            return asyncio.run(run(qa, False))

    async def run_async():
        async with AsyncQAClient(url, protocol, tokenizer=prompts.tokenizer, **settings) as qa:
            return await run(qa, True)
    return asyncio.run(run_async())


@pytest.mark.parametrize("protocol, use_async", CLIENT_KINDS)
def test_the_deadline_ends_retries_against_an_unreachable_server(protocol, use_async, prompts):
    """50 attempts would take over 20 s of backoff; the 2 s deadline ends them with RequestTimeout."""
    assert MANY_RETRIES.total_backoff_s() > 20
    url = f"127.0.0.1:{free_ports(1)[0]}"  # nobody listens there
    error, seconds, _ = timed(protocol, use_async, url, prompts, "answer", *QUESTION, warm=False, retry=MANY_RETRIES,
                              timeout_s=2.0)
    assert isinstance(error, RequestTimeout) and not isinstance(error, ConnectionError), repr(error)
    assert seconds <= 2.0 + 1.0
    assert 1 < error.attempts < MANY_RETRIES.attempts and error.timeout_s == 2.0
    assert f"no answer from {url} within the 2 s timeout: {error.attempts} attempt(s) over" in str(error)
    assert "would start past the deadline" in str(error)


@pytest.mark.parametrize("use_async", [False, True])
def test_the_deadline_ends_retries_against_a_connection_dropping_listener(use_async, prompts):
    with dropping_listener() as url:
        error, seconds, _ = timed("http", use_async, url, prompts, "answer", *QUESTION, warm=False,
                                  retry=MANY_RETRIES, timeout_s=1.5)
    assert isinstance(error, RequestTimeout), repr(error)
    assert seconds <= 1.5 + 1.0 and 1 < error.attempts < MANY_RETRIES.attempts


@contextlib.contextmanager
def busy_server(client, plan, threads: int = 4):
    """Keeps `threads` requests of `plan` (answered without a timeout) in flight on the server."""
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            client.answer_plan(plan, 64)

    workers = [threading.Thread(target=load, daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    try:
        time.sleep(0.2)
        yield
    finally:
        stop.set()
        for worker in workers:
            worker.join(60)


@pytest.mark.parametrize("protocol, use_async", CLIENT_KINDS)
def test_a_tiny_deadline_bounds_a_slow_real_call(protocol, use_async, urls, prompts, client):
    """8 long prompts (one request), 64 new tokens, on a server kept busy by 4 more such
    requests: longer than 0.05 s. With a 0.05 s timeout the request is sent once, the call raises
    RequestTimeout at the deadline, and the same client answers the next question."""
    plan = client.plan(PAIRS[:8])  # tokenized here: the call's time is the server's
    assert len(plan.chunks) == 1
    with busy_server(client, plan):
        done, baseline, _ = timed(protocol, use_async, urls[protocol], prompts, "answer_plan", plan, 64)
        error, seconds, after = timed(protocol, use_async, urls[protocol], prompts, "answer_plan", plan, 64, 0.05,
                                      retry=MANY_RETRIES)
    assert not isinstance(done, Exception) and baseline > 1.5 * 0.05, (done, baseline)
    assert isinstance(error, RequestTimeout), repr(error)
    assert seconds <= 0.05 + 1.0 and seconds < baseline
    assert error.attempts == 1 and "within the 0.05 s timeout: 1 attempt(s)" in str(error)
    assert after.token_count >= 1


@pytest.mark.parametrize("use_async", [False, True])
def test_the_timeout_bounds_the_whole_batch_not_each_chunk(use_async, urls, prompts, client):
    """A batch of 10 equal server-sized chunks sent one after the other: with a timeout of half
    what the whole batch takes (its faster of two runs: a request abandoned by an earlier test
    may still run), which every chunk fits in, the call raises RequestTimeout midway."""
    plan = client.plan([PAIRS[3]] * 80)
    assert len(plan.chunks) == 10
    runs = []
    for _ in range(2):
        marks = [time.monotonic()]
        client.answer_plan(plan, 32, progress=lambda _: marks.append(time.monotonic()))
        runs.append(marks)
    marks = min(runs, key=lambda m: m[-1] - m[0])
    chunks = [end - start for start, end in zip(marks, marks[1:])]
    timeout_s = round((marks[-1] - marks[0]) / 2, 3)
    assert max(chunks) < timeout_s, (chunks, timeout_s)

    async def run_async():
        async with AsyncQAClient(urls["grpc"], tokenizer=prompts.tokenizer) as qa:
            await qa.model_config()
            return await qa.answer_plan(plan, 32, timeout_s, concurrency=1)

    started = time.monotonic()
    with pytest.raises(RequestTimeout) as caught:
        if use_async:
            asyncio.run(run_async())
        else:
            with QAClient(urls["grpc"], tokenizer=prompts.tokenizer) as qa:
                qa.model_config
                qa.answer_plan(plan, 32, timeout_s)
    seconds = time.monotonic() - started
    assert seconds <= timeout_s + 1.0
    assert 1 < caught.value.attempts < len(plan.chunks), "some chunks were answered, not all"
    assert f"within the {timeout_s:g} s timeout: {caught.value.attempts} attempt(s)" in str(caught.value)


class HttpRecorder(http.server.BaseHTTPRequestHandler):
    """Answers GET (the served config, copied from the real server) and records each inference's
    `timeout` parameter, then closes the connection without answering: a server going away."""

    config: bytes = b""
    records: list = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.config)))
        self.end_headers()
        self.wfile.write(self.config)

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        header = body[:int(self.headers.get("Inference-Header-Content-Length", len(body)))]
        self.records.append((time.monotonic(), None, json.loads(header).get("parameters", {}).get("timeout")))
        self.close_connection = True

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def recording_server(protocol: str, urls, raw, grpc_status=grpcio.StatusCode.UNAVAILABLE):
    """A stand-in that records what each attempt sends: (arrival, gRPC deadline's time
    remaining, Triton `timeout` parameter in microseconds); every inference fails UNAVAILABLE
    (over gRPC: `grpc_status`)."""
    records: list = []
    if protocol == "http":
        with urllib.request.urlopen(f"http://{urls['http']}/v2/models/t5_qa/config", timeout=10) as reply:
            handler = type("Recorder", (HttpRecorder,), {"config": reply.read(), "records": records})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"127.0.0.1:{server.server_address[1]}", records
        finally:
            server.shutdown()
            server.server_close()
        return
    config = raw.get_model_config("t5_qa").SerializeToString()

    def infer(request, context):
        records.append((time.monotonic(), context.time_remaining(), request.parameters["timeout"].int64_param))
        context.abort(grpc_status, grpc_status.name)

    server = grpcio.server(futures.ThreadPoolExecutor(4))
    server.add_generic_rpc_handlers([grpcio.method_handlers_generic_handler("inference.GRPCInferenceService", {
        "ModelConfig": grpcio.unary_unary_rpc_method_handler(lambda request, context: config),
        "ModelInfer": grpcio.unary_unary_rpc_method_handler(
            infer, request_deserializer=service_pb2.ModelInferRequest.FromString)})])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", records
    finally:
        server.stop(0)


@pytest.mark.parametrize("protocol, use_async", CLIENT_KINDS)
def test_each_attempt_sends_the_time_left(protocol, use_async, urls, raw, prompts):
    """Attempts at about 0, 0.3, 0.9 and 2.1 s of a 3 s call: each one's gRPC deadline and
    Triton `timeout` parameter are what is left of the 3 s when it is sent, not 3 s each."""
    ids = np.full((1, 9), 5, np.int64)
    policy = RetryPolicy(attempts=4, initial_backoff_s=0.3, multiplier=2.0, jitter=0.0)
    with recording_server(protocol, urls, raw) as (url, records):
        started = time.monotonic()
        with pytest.raises(ServerUnavailable) as caught:
            call(protocol, use_async, url, prompts, "generate", ids, np.ones_like(ids), None, 3.0, retry=policy)
    assert caught.value.attempts == 4 and len(records) == 4
    sent = [timeout_us / 1e6 for _, _, timeout_us in records]
    assert sent == sorted(sent, reverse=True) and sent[-1] < 1.5
    for (arrival, deadline_left, _), left in zip(records, sent):
        assert left <= 3.0
        assert left == pytest.approx(3.0 - (arrival - started), abs=0.25)
        if protocol == "grpc":
            assert deadline_left == pytest.approx(left, abs=0.1)


@pytest.mark.parametrize("use_async", [False, True])
def test_a_call_the_server_cancels_is_retried_then_unavailable(use_async, urls, raw, prompts):
    """CANCELLED, which gRPC core gives the calls still waiting for a handler when a server shuts
    down (as tritonserver does at SIGTERM under load): retried like UNAVAILABLE, then
    `ServerUnavailable` naming what happened, not a bare "CANCELLED"."""
    ids = np.full((1, 9), 5, np.int64)
    with recording_server("grpc", urls, raw, grpcio.StatusCode.CANCELLED) as (url, records):
        with pytest.raises(ServerUnavailable) as caught:
            call("grpc", use_async, url, prompts, "generate", ids, np.ones_like(ids), None, 10.0, retry=FAST_RETRY)
    assert caught.value.attempts == 4 and len(records) == 4
    assert caught.value.status == "StatusCode.CANCELLED"
    assert f"{url} cancelled the call without answering, as a gRPC server shutting down does (CANCELLED)" \
        in str(caught.value)


def test_a_timeout_must_be_positive(prompts):
    with QAClient(f"127.0.0.1:{free_ports(1)[0]}", tokenizer=prompts.tokenizer) as qa:
        for bad in (0, -1.0):
            with pytest.raises(InvalidInput, match="timeout_s must be > 0"):
                qa.answer(*QUESTION, timeout_s=bad)
