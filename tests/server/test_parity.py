"""Token-for-token parity of the served ensemble with `transformers` greedy `generate`."""
from __future__ import annotations

import numpy as np
import pytest

from export.reference import greedy_reference
from tests.helpers import hf_generate
from tests.inputs import parity_pairs

PAIRS = parity_pairs()
LIMITS = [None, 64, 1, 7, 32]  # None: the server's default of 32


def limit_for(index: int) -> int | None:
    return LIMITS[index % len(LIMITS)]


def assert_same_tokens(ours: np.ndarray, length: int, reference: np.ndarray) -> None:
    """`ours[:length]` equals the reference and the reference has nothing after it."""
    assert length >= 1
    np.testing.assert_array_equal(ours[:length], reference[:length])
    assert not reference[length:].any(), f"reference continues after {length} tokens: {reference}"
    assert not ours[length:].any(), "padding after the generated tokens must be <pad>"


def test_constructed_model_stops_early_and_runs_to_the_limit(hf_model, prompts, tokens):
    """The premise of the parity tests: some answers end with </s> after different numbers of
    tokens, others hit the limit; and the logits are as large as a trained checkpoint's."""
    ids, mask = prompts.encode_batch(PAIRS)
    reference = greedy_reference(hf_model, ids, mask, 32)
    stops = [int(n) for i, n in enumerate(reference.lengths) if reference.tokens[i, n - 1] == tokens.eos]
    assert 8 <= len(stops) <= len(PAIRS) - 8 and len(set(stops)) >= 3
    assert np.abs(reference.logits).max() > 100


@pytest.mark.parametrize("index", range(len(PAIRS)))
def test_single_request_parity(index, client, hf_model, prompts, tokens):
    ids = np.array([prompts.encode(*PAIRS[index])], dtype=np.int64)
    mask = np.ones_like(ids)
    limit = limit_for(index)
    reference = hf_generate(hf_model, ids, mask, limit or 32)[0]
    ours, lengths, _ = client.generate(ids, mask, limit)
    assert_same_tokens(ours[0], int(lengths[0, 0]), reference)
    ended_early = reference[int(lengths[0, 0]) - 1] == tokens.eos
    assert ended_early or lengths[0, 0] == (limit or 32)


@pytest.mark.parametrize("start", range(0, len(PAIRS), 8))
def test_mixed_length_batch_parity(start, client, hf_model, prompts):
    """A padded batch of different lengths, as the client sends it, in one request."""
    ids, mask = prompts.encode_batch(PAIRS[start: start + 8])
    assert len(set(mask.sum(axis=1))) > 1 or len(ids) == 1
    limit = [None, 64, 16][start // 8 % 3]
    reference = hf_generate(hf_model, ids, mask, limit or 32)
    ours, lengths, _ = client.generate(ids, mask, limit)
    assert ours.shape[1] == lengths.max()
    for row in range(len(ids)):
        assert_same_tokens(ours[row], int(lengths[row, 0]), reference[row])


def test_batch_reports_early_stops_and_limits(client, prompts, tokens):
    ids, mask = prompts.encode_batch(PAIRS[:8])
    ours, lengths, _ = client.generate(ids, mask, 64)
    last = ours[np.arange(len(ids)), lengths[:, 0] - 1]
    assert ((last == tokens.eos) | (lengths[:, 0] == 64)).all()
    assert (last == tokens.eos).any() and (lengths[:, 0] == 64).any(), "need both kinds of row in one batch"
    assert (ours[lengths[:, 0][:, None] <= np.arange(ours.shape[1])] == tokens.pad).all()


@pytest.mark.parametrize("start", [0, 24, 48])
def test_bls_decoder_mode_parity(start, bls_client, hf_model, prompts):
    """The decode loop calling `t5_decoder` through BLS gives the same tokens."""
    ids, mask = prompts.encode_batch(PAIRS[start: start + 8])
    reference = hf_generate(hf_model, ids, mask, 32)
    ours, lengths, _ = bls_client.generate(ids, mask)
    for row in range(len(ids)):
        assert_same_tokens(ours[row], int(lengths[row, 0]), reference[row])
    single = np.array([prompts.encode(*PAIRS[start + 1])])
    ours, lengths, _ = bls_client.generate(single, np.ones_like(single), 64)
    assert_same_tokens(ours[0], int(lengths[0, 0]), hf_generate(hf_model, single, np.ones_like(single), 64)[0])


@pytest.mark.parametrize("index", [0, 3, 17, 50, 52])
def test_answer_text_equals_decoded_reference(index, client, hf_model, prompts):
    question, context = PAIRS[index]
    ids = np.array([prompts.encode(question, context)])
    reference = hf_generate(hf_model, ids, np.ones_like(ids), 32)[0]
    expected = prompts.tokenizer.decode(reference.tolist(), skip_special_tokens=True).strip()
    result = client.answer(question, context)
    assert result.text == expected
    assert result.no_answer == (expected == "")
    assert list(result.token_ids) == [t for t in reference.tolist()][: len(result.token_ids)]


def test_batch_api_splits_into_server_batches(client, prompts, hf_model):
    """19 questions with max_batch_size 8: three calls, answers in order."""
    pairs = PAIRS[:19]
    answers = client.answer_batch(pairs, max_new_tokens=8)
    assert len(answers) == 19
    for (question, context), result in zip(pairs, answers):
        ids = np.array([prompts.encode(question, context)])
        reference = hf_generate(hf_model, ids, np.ones_like(ids), 8)[0]
        assert list(result.token_ids) == reference[: len(result.token_ids)].tolist()


def test_scores_are_the_mean_log_probability_of_the_answer(client, hf_model, prompts):
    """The served score equals transformers' mean log-softmax of the chosen tokens."""
    import torch

    ids, mask = prompts.encode_batch(PAIRS[:8])
    with torch.inference_mode():
        out = hf_model.generate(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                                max_new_tokens=32, do_sample=False, output_logits=True, return_dict_in_generate=True)
    log_probs = torch.log_softmax(torch.stack(out.logits, dim=1).double(), dim=-1)  # [batch, steps, vocab]
    chosen = log_probs.gather(-1, out.sequences[:, 1:, None]).squeeze(-1).numpy()
    _, lengths, scores = client.generate(ids, mask)
    for row in range(len(ids)):
        expected = chosen[row, : lengths[row, 0]].mean()
        assert scores[row, 0] == pytest.approx(expected, abs=1e-4)
        assert scores[row, 0] <= 0
