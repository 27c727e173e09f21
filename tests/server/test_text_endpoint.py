"""The text endpoint `t5_qa_text`: the same answers as the token-id endpoint on many inputs,
the documented curl (HTTP JSON) and grpcurl (gRPC JSON) requests, the server-side no-answer
threshold, bad input refused with INVALID_ARGUMENT naming the field, configs derived from the
token models' configs, and the tokenizer installed by the export."""
from __future__ import annotations

import json
import shutil
import struct
import subprocess
import urllib.error
import urllib.request

import grpc as grpc_core
import numpy as np
import pytest
import tritonclient.grpc as grpc
from google.protobuf import json_format
from tokenizers import Tokenizer
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from client import QAClient
from serving.repository import TARGETS, build_configs
from contract.names import TOKENIZER_FILE
from serving.text_repository import text_configs
from tests.helpers import text_infer
from tests.inputs import parity_pairs, squad_pairs

PAIRS = parity_pairs() + squad_pairs(100, stride=113)  # 155 inputs, some longer than 512 tokens
QUESTION = ("Who wrote Moby-Dick?", "Moby-Dick is a novel written by Herman Melville in 1851.")
CURL_BODY = {"inputs": [{"name": "question", "datatype": "BYTES", "shape": [1, 1], "data": [QUESTION[0]]},
                        {"name": "context", "datatype": "BYTES", "shape": [1, 1], "data": [QUESTION[1]]},
                        {"name": "no_answer_threshold", "datatype": "FP32", "shape": [1, 1], "data": [-2.0]}]}
# grpcurl -plaintext -import-path <triton common>/protobuf -proto grpc_service.proto -d @ \
#   localhost:8001 inference.GRPCInferenceService/ModelInfer   with this body (bytes in base64):
GRPCURL_BODY = """{"model_name": "t5_qa_text",
 "inputs": [{"name": "question", "datatype": "BYTES", "shape": [1, 1],
             "contents": {"bytes_contents": ["V2hvIHdyb3RlIE1vYnktRGljaz8="]}},
            {"name": "context", "datatype": "BYTES", "shape": [1, 1],
             "contents": {"bytes_contents": ["TW9ieS1EaWNrIGlzIGEgbm92ZWwgd3JpdHRlbiBieSBIZXJtYW4gTWVsdmlsbGUgaW4gMTg1MS4="]}}]}"""


@pytest.fixture(scope="module")
def truncating(server, prompts):
    """The ids endpoint as the text endpoint uses it: one prompt per question, cut at 512 tokens."""
    with QAClient(f"127.0.0.1:{server.ports.grpc}", tokenizer=prompts.tokenizer, long_context="truncate") as qa:
        yield qa


@pytest.mark.parametrize("start", range(0, len(PAIRS), 8))
def test_text_endpoint_answers_equal_the_ids_endpoint(start, raw, truncating):
    pairs = PAIRS[start: start + 8]
    expected = truncating.answer_batch(pairs)
    answers, scores, no_answer = text_infer(raw, pairs)
    assert answers == [e.text for e in expected]
    assert no_answer.tolist() == [e.no_answer for e in expected]
    np.testing.assert_allclose(scores, [e.score for e in expected], atol=1e-5)


def test_single_rows_and_answer_length(raw, truncating):
    for pair, limit in zip(PAIRS[::31], (1, 5, 17, 64, None, 3)):
        answers, scores, _ = text_infer(raw, [pair], max_new_tokens=limit)
        expected = truncating.answer(*pair, max_new_tokens=limit)
        assert answers == [expected.text] and scores[0] == pytest.approx(expected.score, abs=1e-5)


def test_server_side_threshold_equals_the_clients(raw, truncating, server, prompts):
    pairs = PAIRS[:8]
    plain = truncating.answer_batch(pairs, 8)
    answered = sorted(a.score for a in plain if a.text)
    assert len(answered) >= 2, "need answers on both sides of the threshold"
    threshold = float(np.float32(answered[len(answered) // 2]))
    answers, _, no_answer = text_infer(raw, pairs, 8, threshold)
    with QAClient(truncating.url, tokenizer=prompts.tokenizer, long_context="truncate",
                  no_answer_threshold=threshold) as strict:
        expected = strict.answer_batch(pairs, 8)
    assert answers == [e.text for e in expected] and no_answer.tolist() == [e.no_answer for e in expected]
    assert any(e.below_threshold for e in expected)


def test_documented_curl_request(server, truncating, prompts):
    url = f"http://127.0.0.1:{server.ports.http}/v2/models/t5_qa_text/infer"
    if shutil.which("curl"):
        done = subprocess.run(["curl", "-s", url, "-d", json.dumps(CURL_BODY)], capture_output=True, text=True,
                              timeout=60, check=True)
        reply = json.loads(done.stdout)
    else:
        with urllib.request.urlopen(urllib.request.Request(url, json.dumps(CURL_BODY).encode())) as r:
            reply = json.load(r)
    outputs = {o["name"]: o["data"][0] for o in reply["outputs"]}
    with QAClient(truncating.url, tokenizer=prompts.tokenizer, long_context="truncate", no_answer_threshold=-2.0) as qa:
        expected = qa.answer(*QUESTION)
    assert outputs["answer"] == expected.text and outputs["no_answer"] == expected.no_answer
    assert outputs["score"] == pytest.approx(expected.score, abs=1e-5) and reply["model_version"] == "1"


def test_documented_grpcurl_request_body(server, truncating):
    """grpcurl is not installed here: the same JSON body, through protobuf's JSON mapping (which
    grpcurl uses), sent with the generated gRPC stub."""
    request = json_format.Parse(GRPCURL_BODY, service_pb2.ModelInferRequest())
    with grpc_core.insecure_channel(f"127.0.0.1:{server.ports.grpc}") as channel:
        reply = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=60)
    raw = dict(zip((o.name for o in reply.outputs), reply.raw_output_contents))
    (length,) = struct.unpack("<I", raw["answer"][:4])  # BYTES: 4-byte little-endian length, then the bytes
    assert raw["answer"][4: 4 + length].decode("utf-8") == truncating.answer(*QUESTION).text


@pytest.mark.parametrize("question, context, message", [
    (b"\xff\xfeWho?", "Bob.", "question (row 0) is not valid UTF-8: invalid start byte at byte 0"),
    ("Who?", b"Bob \xe2\x82", "context (row 0) is not valid UTF-8"),
    ("", "Bob.", "question is empty (row 0)"),
    (" \t\n", "Bob.", "question is empty (row 0)"),
    ("Who?", "   ", "context is empty (row 0)"),
    ("why " * 600, "Bob.", "question is too long"),
])
def test_bad_text_is_refused_naming_the_field(raw, question, context, message):
    with pytest.raises(InferenceServerException) as caught:
        text_infer(raw, [(question, context)])
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert message in caught.value.message()


def test_bad_row_in_a_batch_is_named(raw):
    with pytest.raises(InferenceServerException, match=r"context is empty \(row 1\)"):
        text_infer(raw, [QUESTION, ("Who?", "")])


def test_bad_threshold_is_refused(raw):
    with pytest.raises(InferenceServerException, match="no_answer_threshold must be a finite number") as caught:
        text_infer(raw, [QUESTION], threshold=float("nan"))
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"


def test_bad_text_over_http_is_a_400_naming_the_field(server, raw, truncating):
    body = json.loads(json.dumps(CURL_BODY))
    body["inputs"][1]["data"] = [""]  # the context
    request = urllib.request.Request(f"http://127.0.0.1:{server.ports.http}/v2/models/t5_qa_text/infer",
                                     json.dumps(body).encode())
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=60)
    assert caught.value.code == 400 and "context is empty" in caught.value.read().decode()
    assert text_infer(raw, [QUESTION])[0] == [truncating.answer(*QUESTION).text], "still answering"


def _bytes_input(name: str, text: str) -> grpc.InferInput:
    tensor = grpc.InferInput(name, [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[text.encode()]], dtype=np.object_))
    return tensor


def test_tokenizer_model_called_directly_tokenizes_and_detokenizes(raw, prompts):
    """Both ends of `t5_tokenizer` on their own: the prompt's ids as the client makes them, and
    the answer text of generated ids."""
    tokens = raw.infer("t5_tokenizer", [_bytes_input("question", QUESTION[0]), _bytes_input("context", QUESTION[1])],
                       outputs=[grpc.InferRequestedOutput(n) for n in ("input_ids", "attention_mask")])
    assert tokens.as_numpy("input_ids").tolist() == [prompts.encode(*QUESTION)]
    assert tokens.as_numpy("attention_mask").tolist() == [[1] * len(prompts.encode(*QUESTION))]
    ids = np.array([prompts.tokenizer.encode("Herman Melville", add_special_tokens=False).ids + [1, 0, 0]], np.int64)
    generated = [grpc.InferInput("output_ids", list(ids.shape), "INT64"), grpc.InferInput("output_lengths", [1, 1], "INT32"),
                 grpc.InferInput("output_scores", [1, 1], "FP32")]
    for tensor, value in zip(generated, (ids, np.array([[ids.shape[1] - 2]], np.int32), np.array([[-0.5]], np.float32))):
        tensor.set_data_from_numpy(value)
    text = raw.infer("t5_tokenizer", generated, outputs=[grpc.InferRequestedOutput(n) for n in ("answer", "no_answer")])
    assert text.as_numpy("answer").tolist() == [[b"Herman Melville"]] and text.as_numpy("no_answer").tolist() == [[False]]


@pytest.mark.parametrize("names", [("question",), ("question", "context", "output_scores")])
def test_tokenizer_model_refuses_a_request_that_is_neither_end(raw, names):
    inputs = [_bytes_input(n, "Who?") if n in ("question", "context") else grpc.InferInput(n, [1, 1], "FP32")
              for n in names]
    for tensor in inputs:
        if tensor.name() == "output_scores":
            tensor.set_data_from_numpy(np.array([[-0.5]], np.float32))
    with pytest.raises(InferenceServerException) as caught:
        raw.infer("t5_tokenizer", inputs, outputs=[grpc.InferRequestedOutput("input_ids")])
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert ("send question and context (to tokenize) or output_ids, output_lengths, output_scores (to detokenize), "
            f"got {sorted(names)}") in caught.value.message()


def test_text_models_are_ready(raw):
    assert all(raw.is_model_ready(name) for name in ("t5_tokenizer", "t5_qa_text"))


@pytest.fixture(scope="module")
def manifest(repository) -> dict:
    return json.loads((repository / "export_manifest.json").read_text())


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_text_ensemble_is_the_token_ensemble_between_tokenize_and_detokenize(manifest, target):
    configs = build_configs(manifest, TARGETS[target])
    text, qa = configs["t5_qa_text"], configs["t5_qa"]
    steps = [s.model_name for s in text.ensemble_scheduling.step]
    assert steps == ["t5_tokenizer", *[s.model_name for s in qa.ensemble_scheduling.step], "t5_tokenizer"]
    assert list(text.ensemble_scheduling.step)[1:-1] == list(qa.ensemble_scheduling.step)
    available = {t.name: (t.data_type, list(t.dims)) for t in text.input}
    for step in text.ensemble_scheduling.step:  # every step input exists, with its dtype and dims
        model = configs[step.model_name]
        inputs = {t.name: t for t in model.input}
        assert set(step.input_map) <= set(inputs)
        assert all(t.optional for name, t in inputs.items() if name not in step.input_map), "a required input unmapped"
        for name, tensor in step.input_map.items():
            assert available[tensor] == (inputs[name].data_type, list(inputs[name].dims)), tensor
        outputs = {t.name: t for t in model.output}
        for name, tensor in step.output_map.items():
            available[tensor] = (outputs[name].data_type, list(outputs[name].dims))
    assert {t.name: available[t.name] for t in text.output} == {
        "answer": (mc.TYPE_STRING, [1]), "score": (mc.TYPE_FP32, [1]), "no_answer": (mc.TYPE_BOOL, [1])}
    assert text.max_batch_size == qa.max_batch_size


def test_text_configs_follow_a_change_of_the_token_models(manifest):
    configs = build_configs(manifest, TARGETS["cpu"])
    qa = configs["t5_qa"]
    qa.input[0].data_type = mc.TYPE_INT32  # as if input_ids became INT32
    qa.max_batch_size = 3
    changed = text_configs(manifest, TARGETS["cpu"], configs)
    assert changed["t5_tokenizer"].output[0].data_type == mc.TYPE_INT32
    assert {c.max_batch_size for c in changed.values()} == {3}


def test_export_installs_the_checkpoints_tokenizer(repository, checkpoint):
    installed = Tokenizer.from_file(str(repository / TOKENIZER_FILE))
    assert installed.to_str() == Tokenizer.from_file(str(checkpoint / "tokenizer.json")).to_str()
