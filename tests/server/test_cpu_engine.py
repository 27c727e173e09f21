"""The cpu target's single loop: the scheduler encodes prompts that arrive as token ids between
decode steps. Prompts of different lengths share one encoder call and still get `generate`'s
tokens; while rows decode, the prompt tokens admitted per step stay within the budget, and a
prompt joins them only when it would wait longer than it would stall them; a failing
encoder call fails only its own requests; through Triton the encoder model is not called at all,
yet still answers direct calls; encoder and decoder graphs share one copy of the token embedding;
the encoder's memory arena is given back after every call."""
from __future__ import annotations

import os
import re
import threading
import urllib.request

import numpy as np
import pytest

from runtime.admission import JoinCosts
from runtime.greedy import Sequence, greedy_generate
from runtime.memory import release_free_heap
from runtime.onnx_runtime import EncoderGraph, OrtSeq2Seq, encode_with, open_session, shared_embedding
from runtime.scheduler import DecodeScheduler
from serving.server import memory_kib
from tests.helpers import Owner, failed, finished, hf_generate, metric
from tests.inputs import parity_pairs

PAIRS = parity_pairs()


@pytest.fixture(scope="module")
def runtime(repository) -> OrtSeq2Seq:
    return runtime_of(repository)


class CountingEncoder:
    """The real encoder graph, remembering each call's rows and real lengths."""

    def __init__(self, runtime, fail_first: bool = False) -> None:
        self.runtime, self.fail_first = runtime, fail_first
        self.calls: list[list[int]] = []

    def __call__(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        self.calls.append(mask.sum(axis=1).tolist())
        if self.fail_first and len(self.calls) == 1:
            raise RuntimeError("injected encoder failure")
        return self.runtime.encode(ids, mask)


def prompt_row(prompts, pair, limit: int) -> tuple[Sequence, Owner, np.ndarray]:
    ids = np.array([prompts.encode(*pair)], dtype=np.int64)
    owner = Owner()
    return Sequence(None, np.ones(ids.shape[1], np.int64), limit, owner=owner, input_ids=ids[0]), owner, ids


def engine(runtime, tokens, encoder, run=None, **options) -> DecodeScheduler:
    return DecodeScheduler(run or runtime.run_decoder, runtime.signature, tokens, finished, failed,
                           is_cancelled=lambda owner: owner.cancelled, encode=encoder, **options)


def assert_like_generate(hf_model, entries) -> None:
    for row, owner, ids, limit in entries:
        assert owner.done.wait(60) and owner.error is None, owner.error
        reference = hf_generate(hf_model, ids, np.ones_like(ids), limit)[0]
        assert row.tokens == reference[: len(row.tokens)].tolist()
        assert not reference[len(row.tokens):].any()


def test_prompts_of_different_lengths_share_an_encoder_call_and_match_generate(runtime, prompts, hf_model, tokens):
    encoder = CountingEncoder(runtime)
    scheduler = engine(runtime, tokens, encoder, max_active_rows=16)
    limits = [64, 7, 32, 1, 16, 64]
    entries = [(*prompt_row(prompts, PAIRS[i * 9], limit), limit) for i, limit in enumerate(limits)]
    for row, _, _, _ in entries:  # all waiting before the loop starts: one admission
        scheduler.submit([row])
    scheduler.start()
    try:
        assert_like_generate(hf_model, entries)
    finally:
        scheduler.stop()
    lengths = sorted(ids.shape[1] for _, _, ids, _ in entries)
    assert sorted(n for call in encoder.calls for n in call) == lengths, "every prompt encoded once"
    assert len(encoder.calls) < len(entries) and any(len(set(call)) > 1 for call in encoder.calls), \
        f"prompts of different lengths batched together: {encoder.calls} (lengths {lengths})"
    assert scheduler.stats.encoded_tokens == sum(lengths) and scheduler.stats.encoder_seconds > 0


def test_prompts_joining_running_rows_stay_within_the_budget(runtime, prompts, hf_model, tokens):
    """Three requests wait while a step runs; with a budget of one prompt token per step each
    joins at its own step (one encoder call each), and all answers equal `generate`'s."""
    encoder = CountingEncoder(runtime)
    stepping, release = threading.Event(), threading.Event()

    def held_step(feed, outputs):
        if feed["use_cache_branch"][0]:  # a later step of the running row: hold it once
            stepping.set()
            release.wait(30)
        return runtime.run_decoder(feed, outputs)

    scheduler = engine(runtime, tokens, encoder, run=held_step, max_active_rows=16, max_encode_tokens=1).start()
    try:
        first = (*prompt_row(prompts, PAIRS[1], 64), 64)
        scheduler.submit([first[0]])
        assert stepping.wait(30)
        joiners = [(*prompt_row(prompts, PAIRS[i], 24), 24) for i in (11, 21, 31)]
        for row, _, _, _ in joiners:
            scheduler.submit([row])
        release.set()
        assert_like_generate(hf_model, [first, *joiners])
    finally:
        release.set()
        scheduler.stop()
    assert [len(call) for call in encoder.calls] == [1, 1, 1, 1], encoder.calls


class HeldCosts(JoinCosts):
    """`JoinCosts` with its estimates held at given values: the join decision under test, not
    the machine's timings."""

    def observed_step(self, seconds: float) -> None:
        pass

    def observed_admission(self, seconds: float, prompt_tokens: int) -> None:
        pass


@pytest.mark.parametrize("joins", [True, False], ids=["joins-at-once", "waits-for-the-running-row"])
def test_a_prompt_joins_running_rows_only_when_it_would_wait_longer_than_it_stalls_them(
        runtime, prompts, hf_model, tokens, joins):
    """A request arrives while a row decodes. Priced cheap to encode (against a slow step) it
    joins at the next step; priced dear, it waits until the running row is done and is then
    encoded alone. Both get `generate`'s tokens."""
    encoder = CountingEncoder(runtime)
    stepping, release = threading.Event(), threading.Event()
    rows_per_iteration: list[int] = []
    seen = {"row_steps": 0}

    def held_step(feed, outputs):
        if feed["use_cache_branch"][0]:  # a later step of the running row: hold it once
            stepping.set()
            release.wait(30)
        return runtime.run_decoder(feed, outputs)

    def observe(stats) -> None:
        rows_per_iteration.append(stats.row_steps - seen["row_steps"])
        seen["row_steps"] = stats.row_steps

    costs = HeldCosts(step_s=1.0, encode_s_per_token=1e-9) if joins else HeldCosts(step_s=1e-9, encode_s_per_token=1.0)
    scheduler = engine(runtime, tokens, encoder, run=held_step, max_active_rows=16, observe=observe,
                       join_costs=costs).start()
    try:
        first = (*prompt_row(prompts, PAIRS[5], 8), 8)
        scheduler.submit([first[0]])
        assert stepping.wait(30)
        later = (*prompt_row(prompts, PAIRS[15], 8), 8)
        scheduler.submit([later[0]])
        release.set()
        assert_like_generate(hf_model, [first, later])
    finally:
        release.set()
        scheduler.stop()
    assert [len(call) for call in encoder.calls] == [1, 1], encoder.calls
    steps = [len(first[0].tokens), len(later[0].tokens)]
    if joins:  # iteration 1 holds the first row alone; the later row joins at iteration 2
        assert rows_per_iteration[:2] == [1, 2], rows_per_iteration
    else:  # the first row alone until it is done (it got a token at admission), then the later one alone
        assert rows_per_iteration == [1] * (steps[0] - 1 + steps[1] - 1), rows_per_iteration


class RecordedCosts(JoinCosts):
    """`JoinCosts` that also keeps every timing the loop reports."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[float] = []
        self.admissions: list[int] = []

    def observed_step(self, seconds: float) -> None:
        self.steps.append(seconds)
        super().observed_step(seconds)

    def observed_admission(self, seconds: float, prompt_tokens: int) -> None:
        self.admissions.append(prompt_tokens)
        super().observed_admission(seconds, prompt_tokens)


@pytest.mark.parametrize("ending", ["eos", "limit"])
def test_rows_that_end_at_admission_leave_the_step_estimate_alone(runtime, prompts, hf_model, tokens, ending):
    """A row can end at the token its admission gives it: a real SQuAD 2.0 checkpoint abstains
    (`</s>` first) on about half the questions, as the realistic test model does on PAIRS[10];
    a limit of one token does the same. The loop then steps no rows, and an empty step's
    near-zero time must not enter the step estimate: it would make every later wait look short
    and keep arrivals from joining. The finished rows' lengths, `</s>` included, are recorded
    for the steps the running rows have left."""
    costs = RecordedCosts()
    scheduler = engine(runtime, tokens, CountingEncoder(runtime), max_active_rows=16, join_costs=costs).start()
    try:
        ended = (*prompt_row(prompts, PAIRS[10], 8), 8) if ending == "eos" else (*prompt_row(prompts, PAIRS[5], 1), 1)
        scheduler.submit([ended[0]])
        assert_like_generate(hf_model, [ended])
        assert len(ended[0].tokens) == 1 and (ended[0].tokens == [tokens.eos]) == (ending == "eos"), ended[0].tokens
        assert (costs.admissions, costs.steps, costs.step_s) == ([len(ended[2][0])], [], 0.0)
        running = (*prompt_row(prompts, PAIRS[13], 8), 8)  # answers in 3 tokens, the last `</s>`
        scheduler.submit([running[0]])
        assert_like_generate(hf_model, [running])
    finally:
        scheduler.stop()
    assert len(running[0].tokens) == 3 and running[0].tokens[-1] == tokens.eos, running[0].tokens
    assert len(costs.steps) == 2 and costs.step_s > 0, costs.steps  # two steps after its admission
    assert list(costs.lengths) == [(1, ended[-1]), (3, 8)], \
        "the finished rows' lengths and limits, for the steps the running rows have left"


def test_a_failing_encoder_call_fails_only_its_requests(runtime, prompts, hf_model, tokens):
    encoder = CountingEncoder(runtime, fail_first=True)
    scheduler = engine(runtime, tokens, encoder).start()
    try:
        lost = prompt_row(prompts, PAIRS[2], 8)
        scheduler.submit([lost[0]])
        assert lost[1].done.wait(30) and "injected encoder failure" in lost[1].error
        after = (*prompt_row(prompts, PAIRS[3], 16), 16)
        scheduler.submit([after[0]])
        assert_like_generate(hf_model, [after])
    finally:
        scheduler.stop()


def inference_count(server, model: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.ports.metrics}/metrics", timeout=5).read().decode()
    found = re.search(rf'^nv_inference_count{{model="{model}",version="1"}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def test_the_served_cpu_target_encodes_inside_the_decode_loop(server, client, prompts, hf_model):
    before, encoder_calls = metric(server, "t5_greedy_encoded_tokens_total"), inference_count(server, "t5_encoder")
    lengths = []
    for index in (4, 14, 24):
        ids = np.array([prompts.encode(*PAIRS[index])])
        ours, found, _ = client.generate(ids, np.ones_like(ids), 12)
        reference = hf_generate(hf_model, ids, np.ones_like(ids), 12)[0]
        np.testing.assert_array_equal(ours[0, : found[0, 0]], reference[: found[0, 0]])
        lengths.append(ids.shape[1])
    assert metric(server, "t5_greedy_encoded_tokens_total") - before == sum(lengths)
    assert inference_count(server, "t5_encoder") == encoder_calls, "the ensemble bypasses t5_encoder on cpu"


def test_encoder_and_decoder_share_one_embedding(repository, prompts, tokens):
    """t5_greedy on cpu holds the token embedding once for both graphs, and answers the same."""
    encoder, decoder = (str(repository / f"{model}/1/model.onnx") for model in ("t5_encoder", "t5_decoder"))
    found = shared_embedding(encoder, decoder)
    assert found is not None, "the T5 graphs embed tokens with the same matrix"
    _, _, matrix = found
    assert matrix.shape() == [tokens.vocab_size, runtime_of(repository).signature.d_model]
    plain, sharing = runtime_of(repository), OrtSeq2Seq(encoder, decoder, share_embedding=True)
    ids = np.array([prompts.encode(*PAIRS[5]), prompts.encode(*PAIRS[5])[::-1]])
    mask = np.ones_like(ids)
    np.testing.assert_array_equal(plain.encode(ids, mask), sharing.encode(ids, mask))
    limits = np.array([32, 32])
    ours = greedy_generate(sharing.run_decoder, sharing.signature, tokens, sharing.encode(ids, mask), mask, limits)
    reference = greedy_generate(plain.run_decoder, plain.signature, tokens, plain.encode(ids, mask), mask, limits)
    np.testing.assert_array_equal(ours.tokens, reference.tokens)


def rss_mib() -> float:
    return memory_kib(os.getpid())["rss"] / 1024


def test_the_encoder_arena_is_given_back_at_the_end_of_every_call(repository, prompts):
    """The encoder runs with ONNX Runtime's arena (its activations reuse it within a call),
    shrunk at the end of every call, its states written to an array outside the arena: after a
    call the process holds the states and nothing more than what the C library keeps for reuse
    (`release_free_heap` hands that back, as the server does when idle; under the server's malloc
    settings it is ~10 MiB). The states are those of the encoder without an arena, to the bit. A
    session whose arena is not shrunk keeps the call's activations: that is what the shrinking
    prevents."""
    path = str(repository / "t5_encoder/1/model.onnx")
    encode = EncoderGraph(path)
    row = prompts.encode(*PAIRS[5])
    ids = np.array([row, row[::-1], row[: len(row) // 2] + [0] * (len(row) - len(row) // 2)])
    mask = (np.arange(ids.shape[1]) < [[len(row)], [len(row)], [len(row) // 2]]).astype(np.int64)
    np.testing.assert_array_equal(encode(ids, mask), encode_with(open_session(path), ids, mask))

    big = np.ones((48, 512), np.int64)  # activations of hundreds of MB, even for the tiny model
    encode(big[:1], big[:1])
    release_free_heap()
    before = rss_mib()
    states = encode(big, big)
    release_free_heap()
    held = rss_mib() - before - states.nbytes / 2**20
    keeping = open_session(path, memory_arena=True)
    release_free_heap()
    before = rss_mib()
    encode_with(keeping, big, big)  # an arena never shrunk; the states are dropped at once
    release_free_heap()
    kept = rss_mib() - before
    assert kept > 256, f"the call's activations took only {kept:.0f} MiB: too small a call to tell"
    assert held < 16, f"{held:.0f} MiB held after a call beside its states ({kept:.0f} without shrinking)"


def runtime_of(repository) -> OrtSeq2Seq:
    return OrtSeq2Seq(str(repository / "t5_encoder/1/model.onnx"), str(repository / "t5_decoder/1/model.onnx"))


def test_the_encoder_model_stays_served_for_direct_calls(server, raw, runtime, prompts):
    """On cpu `t5_encoder` is off the request path and opens its graph on the first call; then
    it answers with the encoder graph's states, two prompts of one length batched."""
    import tritonclient.grpc as grpc

    ids = np.array([prompts.encode("Who?", "Bob went home."), prompts.encode("Who?", "Ann went out.")])
    mask = np.ones_like(ids)
    inputs = []
    for name, value in (("input_ids", ids), ("attention_mask", mask)):
        tensor = grpc.InferInput(name, list(value.shape), "INT64")
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    result = raw.infer("t5_encoder", inputs)
    np.testing.assert_allclose(result.as_numpy("last_hidden_state"), runtime.encode(ids, mask), atol=1e-5)
