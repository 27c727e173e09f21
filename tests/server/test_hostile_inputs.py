"""Hostile and malformed input, beyond `test_bad_input.py`: raw protocol messages that no
well-behaved client builds (declared shapes that lie about the data, overflowing shapes,
invalid datatypes, duplicate or 10 KB tensor names, missing payloads, 100,000-token rows,
10,000-row batches), malformed HTTP bodies, and hostile text through the client (empty,
whitespace, control characters, 100 KB contexts, 10,000 questions, text that is not UTF-8).

Each must be refused with INVALID_ARGUMENT (HTTP 400; Triton answers 500 for bodies its JSON
parser rejects) or the client's typed error, with a message naming the problem; and after each
the server must still be healthy and answer a valid request exactly like `transformers`.

Limits in force (and where they are set): max batch 8 rows per request
(`serving.repository.TARGETS[...].max_batch_size`), 512 input tokens per row and 1..64 new
tokens (`serving.limits`); the client splits larger batches and truncates long contexts.
"""
from __future__ import annotations

import json
import logging
import struct
import time
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from client.errors import InvalidInput, QAError
from tests.helpers import expected_tokens, hf_generate

GOOD = ("Who wrote the novel?", "The novel was written in 1851 by Herman Melville.")
NEW_TOKENS = 8


@pytest.fixture(scope="module")
def stub(server):
    # Triton echoes a bad tensor name in its error; 10 KB of it would exceed gRPC's default
    # 8 KB metadata limit (the caller would see RESOURCE_EXHAUSTED instead of the error).
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1),
               ("grpc.max_metadata_size", 1 << 20)]
    with grpc.insecure_channel(f"127.0.0.1:{server.ports.grpc}", options=options) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


@pytest.fixture(scope="module")
def good_ids(prompts) -> np.ndarray:
    return np.array([prompts.encode(*GOOD)], dtype=np.int64)


@pytest.fixture(scope="module")
def reference(hf_model, good_ids) -> tuple[int, ...]:
    return expected_tokens(hf_generate(hf_model, good_ids, np.ones_like(good_ids), NEW_TOKENS)[0])


@pytest.fixture
def still_correct(stub, good_ids, reference):
    """After the test: the server is ready and answers a valid request exactly."""
    yield
    assert stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=10).ready
    result = stub.ModelInfer(infer_request(good_ids, np.ones_like(good_ids), NEW_TOKENS), timeout=60)
    raw = {output.name: content for output, content in zip(result.outputs, result.raw_output_contents)}
    ids = np.frombuffer(raw["output_ids"], dtype=np.int64)
    length = int(np.frombuffer(raw["output_lengths"], dtype=np.int32)[0])
    assert tuple(int(t) for t in ids[:length]) == reference


def infer_request(ids: np.ndarray, mask: np.ndarray, new_tokens: int | None = None) -> service_pb2.ModelInferRequest:
    tensors = [("input_ids", "INT64", list(ids.shape), ids.tobytes()),
               ("attention_mask", "INT64", list(mask.shape), mask.tobytes())]
    if new_tokens is not None:
        tensors.append(("max_new_tokens", "INT32", [len(ids), 1], np.full((len(ids), 1), new_tokens, np.int32).tobytes()))
    return raw_request(tensors, outputs=("output_ids", "output_lengths", "output_scores"))


def raw_request(tensors: list[tuple[str, str, list[int], bytes | None]], outputs: tuple[str, ...] = (),
                model: str = "t5_qa") -> service_pb2.ModelInferRequest:
    """A ModelInferRequest exactly as given: declared shapes and payloads need not agree."""
    request = service_pb2.ModelInferRequest(model_name=model)
    for name, datatype, shape, _ in tensors:
        tensor = request.inputs.add()
        tensor.name, tensor.datatype = name, datatype
        tensor.shape.extend(shape)
    request.raw_input_contents.extend(payload for *_, payload in tensors if payload is not None)
    for name in outputs:
        request.outputs.add().name = name
    return request


IDS = np.array([[822, 10, 2645, 58, 2625, 10, 5762, 5, 1]], dtype=np.int64)
MASK = np.ones_like(IDS)


def ids(shape: list[int], payload: bytes = IDS.tobytes(), datatype: str = "INT64", name: str = "input_ids"):
    return (name, datatype, shape, payload)


def mask(shape: list[int] = [1, 9], payload: bytes = MASK.tobytes()):  # noqa: B006 - never mutated
    return ("attention_mask", "INT64", shape, payload)


def new_tokens(value: np.ndarray, datatype: str = "INT32", shape: list[int] | None = None):
    return ("max_new_tokens", datatype, shape or list(value.shape), value.tobytes())


BIG_ROWS = np.full((8, 100_000), 5, dtype=np.int64)
TEN_THOUSAND = np.repeat(IDS, 10_000, axis=0)

# name -> (tensors, requested outputs, model, expected gRPC code, substrings of the message)
RAW_CASES = {
    "negative declared shape": ([ids([1, -9]), mask()], (), "t5_qa", "INVALID_ARGUMENT",
                                ["input byte size mismatch for input 'input_ids'"]),
    "declared shape larger than data": ([ids([1, 10]), mask()], (), "t5_qa", "INVALID_ARGUMENT",
                                        ["input byte size mismatch for input 'input_ids'", "Expected 80, got 72"]),
    "2**40 elements declared, 9 sent": ([ids([1, 2**40]), mask()], (), "t5_qa", "INVALID_ARGUMENT",
                                        ["input byte size mismatch for input 'input_ids'"]),
    "shape whose product overflows int64": ([ids([2**62, 2**62]), mask()], (), "t5_qa", "INVALID_ARGUMENT",
                                            ["input_ids", "batch size does not match"]),
    "zero rows with a row of mask": ([ids([0, 9], b""), mask()], (), "t5_qa", "INVALID_ARGUMENT",
                                     ["batch size does not match"]),
    "datatype that does not exist": ([ids([1, 9], datatype="INT65"), mask()], (), "t5_qa", "INVALID_ARGUMENT",
                                     ["input 'input_ids' data-type is '<invalid>'", "expects 'INT64'"]),
    "BYTES token ids": ([ids([1, 9], datatype="BYTES"), mask()], (), "t5_qa", "INVALID_ARGUMENT",
                        ["input 'input_ids' data-type is 'BYTES'"]),
    "INT32 token ids": ([ids([1, 9], IDS.astype(np.int32).tobytes(), "INT32"), mask()], (), "t5_qa",
                        "INVALID_ARGUMENT", ["input 'input_ids' data-type is 'INT32'", "expects 'INT64'"]),
    "INT64 max_new_tokens": ([ids([1, 9]), mask(), new_tokens(np.array([[4]], np.int64), "INT64")], (), "t5_qa",
                             "INVALID_ARGUMENT", ["input 'max_new_tokens' data-type is 'INT64'"]),
    "max_new_tokens of shape [1, 2]": ([ids([1, 9]), mask(), new_tokens(np.array([[4, 4]], np.int32))], (), "t5_qa",
                                       "INVALID_ARGUMENT", ["unexpected shape for input 'max_new_tokens'"]),
    "max_new_tokens for 2 rows, 1 row sent": ([ids([1, 9]), mask(), new_tokens(np.array([[4], [4]], np.int32))],
                                              (), "t5_qa", "INVALID_ARGUMENT", ["batch size does not match"]),
    "max_new_tokens INT32 minimum": ([ids([1, 9]), mask(), new_tokens(np.array([[-2**31]], np.int32))], (), "t5_qa",
                                     "INVALID_ARGUMENT", ["max_new_tokens must be between 1 and 64, got -2147483648"]),
    "attention_mask holding 2": ([ids([1, 9]), mask(payload=(MASK * 2).tobytes())], (), "t5_qa", "INVALID_ARGUMENT",
                                 ["attention_mask may hold only 0 and 1"]),
    "unknown output requested": ([ids([1, 9]), mask()], ("output_bogus",), "t5_qa", "INVALID_ARGUMENT",
                                 ["unexpected inference output 'output_bogus'"]),
    "input given twice": ([ids([1, 9]), ids([1, 9]), mask()], (), "t5_qa", "INVALID_ARGUMENT",
                          ["input 'input_ids' already exists in request"]),
    "10 KB input name": ([ids([1, 9], name="x" * 10_000), ids([1, 9]), mask()], (), "t5_qa", "INVALID_ARGUMENT",
                         ["unexpected inference input 'xxxx"]),
    "payload missing": ([ids([1, 9]), mask(payload=None)], (), "t5_qa", "INVALID_ARGUMENT",
                        ["unable to find data for input tensor 'attention_mask'"]),
    "8 rows of 100,000 tokens (6.4 MB)": ([ids([8, 100_000], BIG_ROWS.tobytes()),
                                           mask([8, 100_000], np.ones_like(BIG_ROWS).tobytes())], (), "t5_qa",
                                          "INVALID_ARGUMENT", ["input_ids has 100000 tokens; the limit is 512"]),
    "10,000 rows in one request": ([ids([10_000, 9], TEN_THOUSAND.tobytes()),
                                    mask([10_000, 9], np.ones_like(TEN_THOUSAND).tobytes())], (), "t5_qa",
                                   "INVALID_ARGUMENT", ["batch-size must be <= 8"]),
    "model name with path traversal": ([ids([1, 9]), mask()], (), "../../etc/passwd", "NOT_FOUND",
                                       ["unknown model: '../../etc/passwd'"]),
}


@pytest.mark.parametrize("case", list(RAW_CASES))
def test_raw_grpc_message_is_refused(case, stub, still_correct):
    tensors, outputs, model, code, fragments = RAW_CASES[case]
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(raw_request(tensors, outputs, model), timeout=60)
    assert caught.value.code().name == code, caught.value.details()
    for fragment in fragments:
        assert fragment in caught.value.details()
    assert time.monotonic() - started < 30


def _json_input(name: str, shape: list, data: list, datatype: str = "INT64") -> dict:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


_L = IDS.ravel().tolist()
_M = [1] * 9
_BINARY_HEADER = json.dumps({"inputs": [
    {"name": "input_ids", "shape": [1, 9], "datatype": "INT64", "parameters": {"binary_data_size": 7200}},
    {"name": "attention_mask", "shape": [1, 9], "datatype": "INT64", "parameters": {"binary_data_size": 72}}]}).encode()

# name -> (body, extra headers, expected HTTP status, substrings of the error)
HTTP_CASES = {
    "truncated JSON": (b'{"inputs": [', {}, 500, ["failed to parse the request JSON"]),
    "JSON that is not an object": (b"[1, 2, 3]", {}, 500, ["Unable to parse 'inputs'"]),
    "shape that does not match the data": (
        json.dumps({"inputs": [_json_input("input_ids", [1, 10], _L), _json_input("attention_mask", [1, 9], _M)]}),
        {}, 500, ["Shape does not match true shape of 'data'"]),
    "negative shape": (
        json.dumps({"inputs": [_json_input("input_ids", [1, -9], _L), _json_input("attention_mask", [1, 9], _M)]}),
        {}, 500, ["Unable to parse 'shape'"]),
    "floats as token ids": (
        json.dumps({"inputs": [_json_input("input_ids", [1, 9], [0.5] * 9), _json_input("attention_mask", [1, 9], _M)]}),
        {}, 500, ["Unable to parse 'data'"]),
    "integers beyond int64": (
        json.dumps({"inputs": [_json_input("input_ids", [1, 9], [2**70] * 9), _json_input("attention_mask", [1, 9], _M)]}),
        {}, 500, ["Unable to parse 'data'"]),
    "binary size larger than sent": (_BINARY_HEADER + IDS.tobytes() + MASK.tobytes(),
                                     {"Inference-Header-Content-Length": str(len(_BINARY_HEADER))}, 400,
                                     ["unexpected size for input 'input_ids'"]),
    "header length larger than the body": (_BINARY_HEADER + IDS.tobytes() + MASK.tobytes(),
                                           {"Inference-Header-Content-Length": "999999"}, 400,
                                           ["inference header size should be in range"]),
    "tensor name that is not UTF-8": (b'{"inputs":[{"name":"\xff\xfe","shape":[1],"datatype":"INT64","data":[1]}]}', {},
                                      400, ["missing required input(s) ['input_ids','attention_mask']"]),
    "max_new_tokens of 10**9": (
        json.dumps({"inputs": [_json_input("input_ids", [1, 9], _L), _json_input("attention_mask", [1, 9], _M),
                               _json_input("max_new_tokens", [1, 1], [10**9], "INT32")]}),
        {}, 400, ["max_new_tokens must be between 1 and 64, got 1000000000"]),
}


@pytest.mark.parametrize("case", list(HTTP_CASES))
def test_malformed_http_body_is_refused(case, server, still_correct):
    body, headers, status, fragments = HTTP_CASES[case]
    request = urllib.request.Request(f"http://127.0.0.1:{server.ports.http}/v2/models/t5_qa/infer",
                                     data=body.encode() if isinstance(body, str) else body,
                                     headers={"Content-Type": "application/json", **headers})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=60)
    # Triton echoes a non-UTF-8 tensor name back raw, so its JSON error may not be valid UTF-8.
    message = json.loads(caught.value.read().decode("utf-8", "replace"))["error"]
    assert caught.value.code == status, message
    for fragment in fragments:
        assert fragment in message


# --- hostile text through the client -------------------------------------------------------

@pytest.fixture(scope="module")
def quiet_client(client):
    logging.getLogger("client").setLevel(logging.ERROR)  # the demo model's warning on every answer
    return client


@pytest.mark.parametrize("question, context, message", [
    ("", "Bob.", "question is empty"),
    ("Who?", "", "context is empty"),
    (" \t\n\u00a0\u3000", "Bob.", "question is empty"),
    ("Who?", "\n\n\t  \r\n", "context is empty"),
    (b"Who?", "Bob.", "question must be a string, got bytes"),
    ("Who?", None, "context must be a string, got NoneType"),
    ("why " * 5000, "Bob.", "question is too long"),
], ids=["empty question", "empty context", "whitespace question", "whitespace context", "bytes question",
        "None context", "20 KB question"])
def test_client_refuses_unusable_text(quiet_client, question, context, message, still_correct):
    with pytest.raises(InvalidInput, match=message):
        quiet_client.answer(question, context)


def test_client_refuses_text_that_is_not_utf8(quiet_client, still_correct):
    with pytest.raises(InvalidInput, match="UTF-8"):
        quiet_client.answer("Who wrote it\udcff?", "Bob wrote it.")


def test_control_characters_are_answered(quiet_client, prompts, hf_model, still_correct):
    question, context = "Who\x00 wrote\x07 it\x1b[31m?", "Bob\x08 wrote \u202eit\ufeff in\r 1851.\x7f"
    answer = quiet_client.answer(question, context, NEW_TOKENS)
    row = np.array([prompts.encode(question, context)], dtype=np.int64)
    assert answer.token_ids == expected_tokens(hf_generate(hf_model, row, np.ones_like(row), NEW_TOKENS)[0])


def test_100_kb_context_is_answered(quiet_client, still_correct):
    context = ("The novel was written in 1851 by Herman Melville. " * 2100)[:100_000]
    assert len(context.encode()) >= 100_000
    started = time.monotonic()
    answer = quiet_client.answer("Who wrote the novel?", context, NEW_TOKENS)
    assert 1 <= len(answer.token_ids) <= NEW_TOKENS
    assert time.monotonic() - started < 120


def test_ten_thousand_questions_are_split_and_answered_in_order(quiet_client, prompts, hf_model, still_correct):
    pairs = [(f"Who is number {i}?", f"Number {i} is Bob, and {i + 1} is Alice.") for i in range(10_000)]
    started = time.monotonic()
    answers = quiet_client.answer_batch(pairs, 1)
    elapsed = time.monotonic() - started
    assert len(answers) == len(pairs)
    for i in (0, 1, 4_999, 9_998, 9_999):
        row = np.array([prompts.encode(*pairs[i])], dtype=np.int64)
        assert answers[i].token_ids == expected_tokens(hf_generate(hf_model, row, np.ones_like(row), 1)[0]), i
    assert elapsed < 240, f"10,000 questions took {elapsed:.0f} s"


@pytest.mark.parametrize("limit", [0, -1, 65, 10**9])
def test_client_refuses_new_token_limits_for_batches(quiet_client, limit):
    with pytest.raises(QAError, match=f"max_new_tokens must be between 1 and 64, got {limit}"):
        quiet_client.answer_batch([GOOD, GOOD], limit)


# --- the text endpoint (t5_qa_text): malformed string tensors and hostile text -------------
# (tests/server/test_text_endpoint.py covers invalid UTF-8, empty and blank text, over-long questions)

def strings(*values: str | bytes) -> bytes:
    """Triton's BYTES wire format: each element as a 4-byte little-endian length, then its bytes."""
    encoded = [v.encode() if isinstance(v, str) else v for v in values]
    return b"".join(struct.pack("<I", len(v)) + v for v in encoded)


def text_tensors(question: bytes, context: bytes, rows: int = 1, new_tokens: int | None = NEW_TOKENS) -> list:
    tensors = [("question", "BYTES", [rows, 1], question), ("context", "BYTES", [rows, 1], context)]
    if new_tokens is not None:
        tensors.append(("max_new_tokens", "INT32", [rows, 1], np.full((rows, 1), new_tokens, np.int32).tobytes()))
    return tensors


Q_TEXT, C_TEXT = strings(GOOD[0]), strings(GOOD[1])
TEXT_CASES = {
    "string length prefix beyond the payload": (
        text_tensors(struct.pack("<I", 10**6) + b"Who?", C_TEXT), ["incomplete string data for inference input 'question'"]),
    "string length prefix 2**32-1": (
        text_tensors(struct.pack("<I", 2**32 - 1) + b"Who?", C_TEXT), ["expecting string of length 4294967295"]),
    "truncated length prefix": (
        text_tensors(b"\x05\x00", C_TEXT), ["incomplete string length indicator for inference input 'question'"]),
    "two strings declared as one": (
        text_tensors(strings("a", "b"), C_TEXT), ["unexpected number of string elements 2 for inference input 'question'"]),
    "one string declared as two": (
        text_tensors(Q_TEXT, C_TEXT * 2, rows=2)[:1] + [("context", "BYTES", [2, 1], C_TEXT)] +
        [("max_new_tokens", "INT32", [2, 1], np.full((2, 1), 4, np.int32).tobytes())],
        ["string elements for inference input"]),
    "INT64 question": (
        [("question", "INT64", [1, 1], np.array([[5]], np.int64).tobytes()), ("context", "BYTES", [1, 1], C_TEXT)],
        ["input 'question' data-type is 'INT64', but model 't5_qa_text' expects 'BYTES'"]),
    "9 rows": (text_tensors(Q_TEXT * 9, C_TEXT * 9, rows=9), ["batch-size must be <= 8"]),
    "context of shape [1, 0]": (
        [("question", "BYTES", [1, 1], Q_TEXT), ("context", "BYTES", [1, 0], b"")], ["unexpected shape for input 'context'"]),
    "question of declared shape [1, 2**40]": (
        [("question", "BYTES", [1, 2**40], Q_TEXT), ("context", "BYTES", [1, 1], C_TEXT)],
        ["unexpected shape for input 'question'"]),
    "max_new_tokens 0": (text_tensors(Q_TEXT, C_TEXT, new_tokens=0), ["max_new_tokens must be between 1 and 64, got 0"]),
}


@pytest.fixture(scope="module")
def text_endpoint(stub):
    try:
        ready = stub.ModelReady(service_pb2.ModelReadyRequest(name="t5_qa_text"), timeout=10).ready
    except grpc.RpcError:
        ready = False
    if not ready:
        pytest.skip("the repository has no text endpoint (t5_qa_text)")
    return stub


def text_answer(stub, tensors: list) -> str:
    result = stub.ModelInfer(raw_request(tensors, model="t5_qa_text"), timeout=120)
    raw = dict(zip((o.name for o in result.outputs), result.raw_output_contents))
    (length,) = struct.unpack("<I", raw["answer"][:4])
    return raw["answer"][4: 4 + length].decode("utf-8")


@pytest.mark.parametrize("case", list(TEXT_CASES))
def test_malformed_text_request_is_refused(case, text_endpoint, still_correct):
    tensors, fragments = TEXT_CASES[case]
    with pytest.raises(grpc.RpcError) as caught:
        text_endpoint.ModelInfer(raw_request(tensors, model="t5_qa_text"), timeout=60)
    assert caught.value.code().name == "INVALID_ARGUMENT", caught.value.details()
    for fragment in fragments:
        assert fragment in caught.value.details()


@pytest.mark.parametrize("question, context", [
    ("Who\x00 wrote\x07 it\x1b[31m?", "Bob\x00 wrote \u202eit\ufeff in\r 1851.\x7f"),
    ("Who wrote the novel?", ("The novel was written in 1851 by Herman Melville. " * 2100)[:100_000]),
], ids=["control characters and NUL", "100 KB context"])
def test_text_endpoint_answers_hostile_text_like_transformers(question, context, text_endpoint, prompts, hf_model,
                                                             still_correct):
    started = time.monotonic()
    answer = text_answer(text_endpoint, text_tensors(strings(question), strings(context)))
    assert time.monotonic() - started < 60
    row = np.array([prompts.encode(question, context)], dtype=np.int64)  # truncated to 512 tokens
    assert answer == prompts.decode(expected_tokens(hf_generate(hf_model, row, np.ones_like(row), NEW_TOKENS)[0]))


def test_text_endpoint_refuses_a_4_mb_context_at_once(text_endpoint, still_correct):
    context = ("The novel was written in 1851 by Herman Melville. " * 84_000)[:4_000_000]
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as caught:
        text_endpoint.ModelInfer(raw_request(text_tensors(Q_TEXT, strings(context)), model="t5_qa_text"), timeout=120)
    assert caught.value.code().name == "INVALID_ARGUMENT" and "bytes" in caught.value.details()
    assert time.monotonic() - started < 1.0
