"""Bad input gets INVALID_ARGUMENT (or the client's typed error) with a message naming the
problem, and the server keeps answering valid requests correctly afterwards."""
from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpc
from tritonclient.utils import InferenceServerException

from client.errors import InvalidInput
from tests.helpers import hf_generate

QUESTION = ("Who wrote the novel?", "The novel was written in 1851 by Herman Melville.")


def tensor(name: str, value: np.ndarray, datatype: str | None = None) -> grpc.InferInput:
    datatype = datatype or {np.dtype(np.int64): "INT64", np.dtype(np.int32): "INT32",
                            np.dtype(np.float32): "FP32"}[value.dtype]
    t = grpc.InferInput(name, list(value.shape), datatype)
    t.set_data_from_numpy(value)
    return t


@pytest.fixture(scope="module")
def good(prompts):
    ids = np.array([prompts.encode(*QUESTION)], dtype=np.int64)
    return ids, np.ones_like(ids)


def refused(raw, inputs, model="t5_qa") -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        raw.infer(model, inputs)
    return caught.value


@pytest.mark.parametrize("limit", [0, -3, 65, 10**9])
def test_max_new_tokens_out_of_range(raw, good, limit):
    ids, mask = good
    error = refused(raw, [tensor("input_ids", ids), tensor("attention_mask", mask),
                          tensor("max_new_tokens", np.array([[limit]], dtype=np.int32))])
    assert error.status() == "StatusCode.INVALID_ARGUMENT"
    assert f"max_new_tokens must be between 1 and 64, got {limit}" in error.message()


def test_wrong_dtype(raw, good):
    ids, mask = good
    error = refused(raw, [tensor("input_ids", ids.astype(np.float32)), tensor("attention_mask", mask)])
    assert error.status() == "StatusCode.INVALID_ARGUMENT"
    assert "input_ids" in error.message() and "FP32" in error.message()


def test_wrong_rank(raw, good):
    ids, mask = good
    error = refused(raw, [tensor("input_ids", ids[None]), tensor("attention_mask", mask)])
    assert error.status() == "StatusCode.INVALID_ARGUMENT"
    assert "input_ids" in error.message()


def test_mask_shape_mismatch(raw, good):
    ids, mask = good
    error = refused(raw, [tensor("input_ids", ids), tensor("attention_mask", mask[:, :-1])])
    assert error.status() == "StatusCode.INVALID_ARGUMENT"
    assert "attention_mask shape" in error.message()


def test_empty_input(raw):
    empty = np.zeros((1, 0), dtype=np.int64)
    error = refused(raw, [tensor("input_ids", empty), tensor("attention_mask", empty)])
    assert error.status() == "StatusCode.INVALID_ARGUMENT"
    assert "input_ids is empty" in error.message()


def test_too_many_tokens(raw):
    ids = np.full((1, 513), 5, dtype=np.int64)
    error = refused(raw, [tensor("input_ids", ids), tensor("attention_mask", np.ones_like(ids))])
    assert error.status() == "StatusCode.INVALID_ARGUMENT"
    assert "513 tokens; the limit is 512" in error.message()


def test_token_id_outside_vocabulary(raw, good):
    ids, mask = good
    error = refused(raw, [tensor("input_ids", ids + 40000), tensor("attention_mask", mask)])
    assert error.status() == "StatusCode.INVALID_ARGUMENT"
    assert "input_ids must lie in [0, 32128)" in error.message()


def test_all_zero_mask_row(raw, good):
    ids, mask = good
    error = refused(raw, [tensor("input_ids", ids), tensor("attention_mask", np.zeros_like(mask))])
    assert error.status() == "StatusCode.INVALID_ARGUMENT"
    assert "all zeros" in error.message()


def test_batch_above_max_batch_size(raw, good):
    ids, mask = (np.repeat(a, 9, axis=0) for a in good)
    error = refused(raw, [tensor("input_ids", ids), tensor("attention_mask", mask)])
    assert error.status() == "StatusCode.INVALID_ARGUMENT"
    assert "batch-size must be <= 8" in error.message()


def test_missing_and_unknown_inputs(raw, good):
    ids, mask = good
    error = refused(raw, [tensor("input_ids", ids)])
    assert "attention_mask" in error.message()
    error = refused(raw, [tensor("input_ids", ids), tensor("attention_mask", mask), tensor("bogus", ids)])
    assert "bogus" in error.message()


@pytest.mark.parametrize("limit", [0, 65])
def test_client_refuses_limit_before_sending(client, limit):
    with pytest.raises(InvalidInput, match=f"between 1 and 64, got {limit}"):
        client.answer(*QUESTION, max_new_tokens=limit)


def test_server_still_answers_correctly_after_bad_input(raw, client, good, hf_model):
    ids, mask = good
    for bad in ([tensor("input_ids", ids), tensor("attention_mask", mask[:, :-1])],
                [tensor("input_ids", np.zeros((1, 0), np.int64)), tensor("attention_mask", np.zeros((1, 0), np.int64))]):
        refused(raw, bad)
    ours, lengths, _ = client.generate(ids, mask, 16)
    reference = hf_generate(hf_model, ids, mask, 16)[0]
    np.testing.assert_array_equal(ours[0, : lengths[0, 0]], reference[: lengths[0, 0]])
    assert raw.is_server_live() and raw.is_server_ready() and raw.is_model_ready("t5_qa")
