"""Iteration-level batching: rows that join a running batch at different steps, with
different input lengths and limits, get exactly the tokens of their own `generate` call; the
queue is bounded; a failing step fails only the rows in it; cancelled requests leave at the
next step; a slow answer does not hold up decoding; the idle hook runs only when nothing
decodes; the server batches concurrent requests step by step."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from runtime.greedy import Sequence
from runtime.onnx_runtime import OrtSeq2Seq
from runtime.scheduler import DecodeScheduler, QueueFull
from tests.helpers import Owner, failed, finished, hf_generate, metric
from tests.inputs import parity_pairs

PAIRS = parity_pairs()


@pytest.fixture(scope="module")
def runtime(repository) -> OrtSeq2Seq:
    return OrtSeq2Seq(str(repository / "t5_encoder/1/model.onnx"), str(repository / "t5_decoder/1/model.onnx"))


def scheduler_for(run, runtime, tokens, **options) -> DecodeScheduler:
    return DecodeScheduler(run, runtime.signature, tokens, options.pop("on_finished", finished), failed,
                           is_cancelled=lambda owner: owner.cancelled, **options)


def make_row(runtime, prompts, pair, limit: int) -> tuple[Sequence, Owner, np.ndarray]:
    ids = np.array([prompts.encode(*pair)], dtype=np.int64)
    states = runtime.encode(ids, np.ones_like(ids))[0]
    owner = Owner()
    return Sequence(states, np.ones(ids.shape[1], np.int64), limit, owner=owner), owner, ids


def wait_for(condition, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def test_rows_joining_mid_flight_match_generate(runtime, prompts, hf_model, tokens):
    scheduler = scheduler_for(runtime.run_decoder, runtime, tokens, max_active_rows=16).start()
    try:
        rows = []
        first = make_row(runtime, prompts, PAIRS[0], 64)
        scheduler.submit([first[0]])
        rows.append((first, 64))
        wait_for(lambda: len(first[0].tokens) >= 5 or first[1].done.is_set())
        for index, limit in [(12, 32), (40, 3), (51, 64), (7, 1)]:  # join while the first runs
            entry = make_row(runtime, prompts, PAIRS[index], limit)
            scheduler.submit([entry[0]])
            rows.append((entry, limit))
            time.sleep(0.01)
        for (_, owner, _), _ in rows:
            assert owner.done.wait(60) and owner.error is None
    finally:
        scheduler.stop()
    for (row, _, ids), limit in rows:
        reference = hf_generate(hf_model, ids, np.ones_like(ids), limit)[0]
        assert row.tokens == reference[: len(row.tokens)].tolist()
        assert not reference[len(row.tokens):].any()
    assert scheduler.stats.row_steps > scheduler.stats.iterations, "rows of different requests shared steps"


def test_queue_is_bounded(runtime, prompts, tokens):
    scheduler = scheduler_for(runtime.run_decoder, runtime, tokens, max_active_rows=4, max_queued_rows=3)
    row = make_row(runtime, prompts, PAIRS[1], 8)[0]
    scheduler.submit([row, row])  # not started: rows wait
    with pytest.raises(QueueFull, match=r"decode queue full \(2 rows waiting, limit 3\)"):
        scheduler.submit([row, row])
    with pytest.raises(ValueError, match="exceed the 4 decoded at once"):
        scheduler.submit([row] * 5)


def test_a_burst_after_an_idle_spell_is_not_refused_for_the_idle_time(runtime, prompts, tokens):
    """The queue-wait limit estimates a waiting row's wait from the rate rows finished lately, per
    second the loop was busy. Per wall-clock second, one row that finished before 3 s of idleness
    made the next burst look like 3 s per row: with a 2 s limit, the second request of the burst
    was refused, although the loop had done nothing but that one row."""
    gate = threading.Event()
    gate.set()

    def run(feed, outputs):
        gate.wait(60)
        return runtime.run_decoder(feed, outputs)

    scheduler = scheduler_for(run, runtime, tokens, join_running=False, max_queue_wait_s=2.0).start()
    try:
        first, owner, _ = make_row(runtime, prompts, PAIRS[1], 2)
        scheduler.submit([first])
        assert owner.done.wait(60) and owner.error is None
        time.sleep(3.0)  # idle
        gate.clear()  # the burst's first request holds the loop in its first step
        burst = [make_row(runtime, prompts, PAIRS[i], 2) for i in (2, 3, 4)]
        scheduler.submit([burst[0][0]])
        wait_for(lambda: not scheduler._queue)  # admitted: the other two wait behind it
        scheduler.submit([burst[1][0]])  # 1 row waiting: ~1 s at 1 row per busy second
        scheduler.submit([burst[2][0]])  # 2 rows waiting: ~2 s, at the limit (refused above it)
        gate.set()
        for _, owner, _ in burst:
            assert owner.done.wait(60) and owner.error is None
    finally:
        gate.set()
        scheduler.stop()


def test_a_failing_step_fails_its_rows_and_the_scheduler_goes_on(runtime, prompts, hf_model, tokens):
    calls = {"n": 0}

    def flaky(feed, outputs):
        calls["n"] += 1
        if calls["n"] == 1:  # the first row's first step
            raise RuntimeError("injected failure")
        return runtime.run_decoder(feed, outputs)

    scheduler = scheduler_for(flaky, runtime, tokens).start()
    try:
        row, owner, _ = make_row(runtime, prompts, PAIRS[2], 32)
        scheduler.submit([row])
        assert owner.done.wait(30) and "injected" in owner.error
        after, owner, ids = make_row(runtime, prompts, PAIRS[3], 16)
        scheduler.submit([after])
        assert owner.done.wait(30) and owner.error is None
        assert after.tokens == hf_generate(hf_model, ids, np.ones_like(ids), 16)[0][: len(after.tokens)].tolist()
    finally:
        scheduler.stop()



def test_a_failing_schedule_fails_the_running_rows_and_the_scheduler_goes_on(runtime, prompts, hf_model, tokens,
                                                                                monkeypatch):
    """Scheduling raising (here: taking a cancelled row out of the batch) must not end the
    scheduler thread, after which every request would hang: the rows running with it fail with
    the error, the waiting ones and every later request are answered with generate's tokens."""
    from runtime.greedy import DecodeBatch
    drop = DecodeBatch.drop

    def failing_once(self, rows):
        monkeypatch.setattr(DecodeBatch, "drop", drop)
        raise MemoryError("injected failure while dropping cancelled rows")

    monkeypatch.setattr(DecodeBatch, "drop", failing_once)
    scheduler = scheduler_for(runtime.run_decoder, runtime, tokens, max_active_rows=2).start()
    try:
        cancelled, cancelled_owner, _ = make_row(runtime, prompts, PAIRS[5], 64)  # 64 tokens
        running, running_owner, _ = make_row(runtime, prompts, PAIRS[6], 64)  # 64 tokens
        waiting, waiting_owner, waiting_ids = make_row(runtime, prompts, PAIRS[8], 16)  # stops after 2
        for row in (cancelled, running, waiting):  # the third waits: two rows at most
            scheduler.submit([row])
        wait_for(lambda: len(cancelled.tokens) >= 2 and len(running.tokens) >= 1)
        assert not running_owner.done.is_set()
        cancelled_owner.cancelled = True
        assert running_owner.done.wait(30), "the scheduler thread stopped"
        assert "injected failure" in running_owner.error
        later, later_owner, later_ids = make_row(runtime, prompts, PAIRS[12], 16)  # stops after 6
        scheduler.submit([later])
        assert waiting_owner.done.wait(60) and later_owner.done.wait(60), "the scheduler thread stopped"
    finally:
        scheduler.stop()
    assert waiting_owner.error is None and later_owner.error is None
    for row, ids in ((waiting, waiting_ids), (later, later_ids)):
        assert row.tokens == hf_generate(hf_model, ids, np.ones_like(ids), 16)[0][: len(row.tokens)].tolist()


def test_a_failing_schedule_with_no_rows_running_fails_the_queue_and_the_scheduler_goes_on(
        runtime, prompts, hf_model, tokens, monkeypatch):
    """With no rows running, a failure while scheduling fails the requests waiting in the queue;
    with nobody to fail either, the loop tries again. Later requests are answered."""
    from runtime.greedy import DecodeBatch
    drop = DecodeBatch.drop
    failures: list[int] = []

    def failing_twice(self, rows):
        if len(failures) < 2:
            failures.append(len(rows))
            raise MemoryError("injected failure while dropping cancelled rows")
        drop(self, rows)

    monkeypatch.setattr(DecodeBatch, "drop", failing_twice)
    scheduler = scheduler_for(runtime.run_decoder, runtime, tokens)
    try:
        cancelled, cancelled_owner, _ = make_row(runtime, prompts, PAIRS[5], 16)
        waiting, waiting_owner, _ = make_row(runtime, prompts, PAIRS[8], 16)
        scheduler.submit([cancelled])
        scheduler.submit([waiting])
        cancelled_owner.cancelled = True
        scheduler.start()  # the first schedule drops the cancelled row from the queue, and fails
        assert waiting_owner.done.wait(30) and "injected failure" in waiting_owner.error
        alone, alone_owner, _ = make_row(runtime, prompts, PAIRS[6], 16)
        alone_owner.cancelled = True
        scheduler.submit([alone])  # fails again, with no row queued or running: retried
        wait_for(lambda: len(failures) == 2)
        later, later_owner, later_ids = make_row(runtime, prompts, PAIRS[12], 16)
        scheduler.submit([later])
        assert later_owner.done.wait(60), "the scheduler thread stopped"
    finally:
        scheduler.stop()
    assert failures == [0, 0] and not cancelled.tokens and not alone.tokens
    assert later_owner.error is None
    assert later.tokens == hf_generate(hf_model, later_ids, np.ones_like(later_ids), 16)[0][: len(later.tokens)].tolist()


def test_stop_fails_waiting_rows(runtime, prompts, tokens):
    scheduler = scheduler_for(runtime.run_decoder, runtime, tokens)
    row, owner, _ = make_row(runtime, prompts, PAIRS[4], 8)
    scheduler.submit([row])
    scheduler.stop(timeout_s=1)
    assert owner.done.is_set() and owner.error == "the decoder was stopped"


def test_cancelled_rows_leave_the_queue_and_the_batch(runtime, prompts, hf_model, tokens):
    """A request that gave up stops costing decode steps at the next iteration; the others
    are unaffected. Cancelled rows are counted and never answered."""
    scheduler = scheduler_for(runtime.run_decoder, runtime, tokens, max_active_rows=2).start()
    try:
        running, running_owner, _ = make_row(runtime, prompts, PAIRS[5], 64)
        kept, kept_owner, kept_ids = make_row(runtime, prompts, PAIRS[6], 64)
        waiting, waiting_owner, _ = make_row(runtime, prompts, PAIRS[7], 64)
        for row in (running, kept, waiting):  # the third waits: two rows at most
            scheduler.submit([row])
        wait_for(lambda: len(running.tokens) >= 2)
        # The waiting row first: cancelled together, an iteration can read the waiting owner
        # before the flags flip and the running one after, free the running row's place and
        # admit the waiting row for one step before the next iteration drops it.
        waiting_owner.cancelled = True
        wait_for(lambda: scheduler.stats.cancelled_rows == 1)
        running_owner.cancelled = True
        wait_for(lambda: scheduler.stats.cancelled_rows == 2)
        produced = len(running.tokens)
        assert kept_owner.done.wait(60) and kept_owner.error is None
    finally:
        scheduler.stop()
    assert len(running.tokens) == produced < 64 and not waiting.tokens
    assert not running_owner.done.is_set() and not waiting_owner.done.is_set()
    assert kept.tokens == hf_generate(hf_model, kept_ids, np.ones_like(kept_ids), 64)[0][: len(kept.tokens)].tolist()


def test_a_failing_cancellation_check_neither_stops_the_loop_nor_drops_the_row(runtime, prompts, hf_model, tokens):
    """`is_cancelled` raising for one request (on Triton, an IPC call that failed) must not end
    the scheduler thread (every later request would hang): that request decodes on and is
    answered, and so are the others, with generate's tokens."""
    broken = Owner()

    def is_cancelled(owner) -> bool:
        if owner is broken:
            raise RuntimeError("injected is_cancelled failure")
        return owner.cancelled

    scheduler = DecodeScheduler(runtime.run_decoder, runtime.signature, tokens, finished, failed,
                                is_cancelled=is_cancelled).start()
    try:
        first, _, first_ids = make_row(runtime, prompts, PAIRS[5], 16)
        first.owner = broken
        scheduler.submit([first])
        later, later_owner, later_ids = make_row(runtime, prompts, PAIRS[6], 16)
        scheduler.submit([later])
        assert broken.done.wait(30) and later_owner.done.wait(30), "the scheduler thread stopped"
    finally:
        scheduler.stop()
    assert broken.error is None and later_owner.error is None
    for row, ids in ((first, first_ids), (later, later_ids)):
        assert row.tokens == hf_generate(hf_model, ids, np.ones_like(ids), 16)[0][: len(row.tokens)].tolist()


def test_a_slow_answer_does_not_hold_up_decoding(runtime, prompts, tokens):
    """Finished rows are answered on the responder thread: decoding goes on meanwhile."""
    release = threading.Event()

    def slow(rows):
        release.wait(30)
        finished(rows)

    scheduler = scheduler_for(runtime.run_decoder, runtime, tokens, on_finished=slow).start()
    try:
        short, short_owner, _ = make_row(runtime, prompts, PAIRS[8], 1)
        long, _, _ = make_row(runtime, prompts, PAIRS[9], 64)
        scheduler.submit([short])
        wait_for(lambda: len(short.tokens) == 1)
        scheduler.submit([long])
        wait_for(lambda: len(long.tokens) >= 10 or long.tokens[-1:] == [tokens.eos], timeout_s=30)
        assert not short_owner.done.is_set(), "the answer is still being sent"
        release.set()
        assert short_owner.done.wait(30)
    finally:
        release.set()
        scheduler.stop()


def test_the_idle_hook_runs_once_per_idle_spell_never_while_rows_decode(runtime, prompts, tokens):
    """`on_idle` (the server's memory release) runs when nothing has been queued or running
    for `idle_after_s`: once per spell, not while requests decode for longer than that (a slow
    step here, rows that do not all stop at once), and a failing hook does not stop the scheduler."""
    calls: list[tuple[float, bool]] = []  # (when, whether every request was answered by then)
    owners: list[Owner] = []

    def slow_run(feed, outputs):  # 0.1 s a step: the requests below decode for a second or more
        time.sleep(0.1)
        return runtime.run_decoder(feed, outputs)

    def on_idle():
        calls.append((time.monotonic(), bool(owners) and all(owner.done.is_set() for owner in owners)))
        raise RuntimeError("a failing hook")

    scheduler = scheduler_for(slow_run, runtime, tokens, on_idle=on_idle, idle_after_s=0.3).start()
    try:
        wait_for(lambda: len(calls) == 1, timeout_s=10)  # idle since it started
        time.sleep(0.9)
        assert len(calls) == 1, "one call per idle spell"
        made = [make_row(runtime, prompts, pair, 64) for pair in PAIRS[:8]]
        owners.extend(owner for _, owner, _ in made)
        submitted = time.monotonic()
        for row, _, _ in made:
            scheduler.submit([row])
        for owner in owners:
            assert owner.done.wait(60) and owner.error is None, "decoding goes on after the hook failed"
        answered = time.monotonic()
        wait_for(lambda: len(calls) == 2, timeout_s=10)
        time.sleep(0.9)
    finally:
        scheduler.stop()
    assert max(len(row.tokens) for row, _, _ in made) >= 10, "the requests decoded for a second or more"
    assert answered - submitted >= 1.0
    assert len(calls) == 2, "no call while the rows decoded, one after"
    when, was_answered = calls[1]
    assert was_answered and when >= answered - 0.05


def test_concurrent_requests_share_decode_steps(server, client, prompts, hf_model):
    before = (metric(server, "t5_greedy_iterations_total"), metric(server, "t5_greedy_row_steps_total"))
    cases = [(PAIRS[i], [64, 32, 5, 17][i % 4]) for i in range(0, 48, 3)]

    def ask(case):
        (question, context), limit = case
        ids = np.array([prompts.encode(question, context)])
        ours, lengths, _ = client.generate(ids, np.ones_like(ids), limit)
        return ids, limit, ours[0, : lengths[0, 0]]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(ask, cases))
    for ids, limit, ours in results:
        reference = hf_generate(hf_model, ids, np.ones_like(ids), limit)[0]
        np.testing.assert_array_equal(ours, reference[: len(ours)])
        assert not reference[len(ours):].any()
    iterations = metric(server, "t5_greedy_iterations_total") - before[0]
    row_steps = metric(server, "t5_greedy_row_steps_total") - before[1]
    # every request has one row, so a mean batch above 1 means different requests shared steps
    assert row_steps / iterations > 1.1, f"mean decode batch {row_steps / iterations:.2f}"


def test_decode_batch_fills_holes_widens_appends_and_compacts(runtime, prompts, hf_model, tokens):
    """Drive a DecodeBatch step by step through every cache operation and check each row."""
    from runtime.greedy import DecodeBatch

    lengths = {i: len(prompts.encode(*PAIRS[i])) for i in range(len(PAIRS))}
    short = sorted(lengths, key=lengths.get)[:3]
    longest = max(lengths, key=lengths.get)
    entries = {}

    def row(index: int, limit: int) -> Sequence:
        entry = make_row(runtime, prompts, PAIRS[index], limit)
        entries[index] = (entry, limit)
        return entry[0]

    batch = DecodeBatch(runtime.run_decoder, runtime.signature, tokens)
    done = batch.admit([row(short[0], 40), row(short[1], 2), row(short[2], 40)])
    done += batch.step()  # the limit-2 row leaves a hole (1 hole < 2 rows: no compaction)
    assert len(batch.slots) == 3 and len(batch) <= 2
    done += batch.admit([row(longest, 30)])  # fills the hole, widens the cross-attention cache
    done += batch.step()
    done += batch.admit([row(9, 25), row(30, 6)])  # no hole left: appended
    while len(batch):
        done += batch.step()
    assert not batch.slots, "compacted away once every row finished"
    assert sorted(map(id, done)) == sorted(id(entry[0]) for entry, _ in entries.values()), "each row returned once"
    for (entry, limit) in entries.values():
        sequence, _, ids = entry
        reference = hf_generate(hf_model, ids, np.ones_like(ids), limit)[0]
        assert sequence.tokens == reference[: len(sequence.tokens)].tolist()
        assert not reference[len(sequence.tokens):].any()


@pytest.mark.parametrize("arrays", ["numpy", "torch"])
def test_appended_rows_go_into_spare_rows_of_the_cross_cache(runtime, prompts, hf_model, tokens, arrays):
    """Rows that find no hole: the first append moves the cross-attention cache into a buffer
    with spare rows (one copy); later appends write only their own rows into it, the earlier
    rows' keys and values stay where they are (no copy of every row's cache per append). Every
    row, on either array type, still gets generate's tokens."""
    import torch

    from runtime.arrays import NumpyArrays, TorchArrays
    from runtime.greedy import DecodeBatch

    xp = TorchArrays() if arrays == "torch" else NumpyArrays()
    entries = []

    def rows(*indices: int) -> list[Sequence]:
        made = [make_row(runtime, prompts, PAIRS[i], 12) for i in indices]
        entries.extend(made)
        if arrays == "torch":
            for sequence, _, _ in made:
                sequence.states = torch.from_numpy(sequence.states)
        return [sequence for sequence, _, _ in made]

    def address(array) -> int:
        return array.data_ptr() if arrays == "torch" else array.__array_interface__["data"][0]

    batch = DecodeBatch(runtime.run_decoder if arrays == "numpy" else torch_run(runtime), runtime.signature,
                        tokens, xp)
    name = runtime.signature.cross_names[0]
    done = batch.admit(rows(0, 1))
    done += batch.step()
    done += batch.admit(rows(2))  # no hole: appended, into a new buffer with spare rows
    first = address(batch._cache[name])  # noqa: SLF001 - where the cross cache lives
    done += batch.step()
    done += batch.admit(rows(3, 4))  # appended again: into the spare rows
    assert len(batch.slots) == 5
    assert address(batch._cache[name]) == first, "the cross cache was copied for an append"
    while len(batch):
        done += batch.step()
    assert len(done) == len(entries) == 5
    for sequence, _, ids in entries:
        reference = hf_generate(hf_model, ids, np.ones_like(ids), 12)[0]
        assert sequence.tokens == reference[: len(sequence.tokens)].tolist()
        assert not reference[len(sequence.tokens):].any()


def torch_run(runtime):
    """The decoder graph behind a torch interface, as BLS + DLPack gives it (the GPU targets'
    array path, here on the CPU)."""
    import torch

    def run(feed, outputs):
        out = runtime.run_decoder({k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in feed.items()},
                                  outputs)
        return {k: torch.from_numpy(v) for k, v in out.items()}
    return run


def test_a_hole_that_is_never_filled_does_not_hold_back_the_self_cache(runtime, prompts, hf_model, tokens):
    """Steady load with one slot more than the rows decoding: arrivals fill the lowest holes, so
    the highest stays a hole for good and too few rows leave at once to compact. The past the
    decoder graph is fed must still stay within the longest limit plus TRIM_COLUMNS (it grew by
    a column per step while the hole's mask kept every step since it opened), and every row gets
    generate's tokens. Prompts that the test model does not end early keep the timing exact."""
    from contract.limits import TRIM_COLUMNS
    from runtime.greedy import DecodeBatch

    limits, live, arrivals = (3, 4, 5, 6, 7, 8), 8, 160
    references = {}
    for index, pair in enumerate(PAIRS):
        ids = np.array([prompts.encode(*pair)], dtype=np.int64)
        reference = hf_generate(hf_model, ids, np.ones_like(ids), max(limits))[0]
        if tokens.eos not in reference.tolist():
            references[index] = reference
    assert references, "no parity prompt runs to its limit on the test model"
    order = sorted(references)
    widths = []

    def run(feed, outputs):
        widths.append(feed["attention_mask"].shape[1])  # the self-attention past + this step
        return runtime.run_decoder(feed, outputs)

    rows: list[tuple[Sequence, int]] = []

    def row(n: int, limit: int | None = None) -> Sequence:
        index = order[n % len(order)]
        sequence = make_row(runtime, prompts, PAIRS[index], limit or limits[n % len(limits)])[0]
        rows.append((sequence, index))
        return sequence

    batch = DecodeBatch(run, runtime.signature, tokens)
    done = batch.admit([row(n) for n in range(live)] + [row(live, limit=2)])  # the last slot leaves first
    done += batch.step()
    assert len(batch.slots) == live + 1 and batch.slots[-1] is None and len(batch) == live
    sent, steps_with_the_hole = live + 1, 0
    while sent < arrivals:
        top_up = live - len(batch)
        done += batch.admit([row(sent + k) for k in range(top_up)])
        sent += top_up
        steps_with_the_hole += len(batch.slots) == live + 1 and batch.slots[-1] is None
        done += batch.step()
    while len(batch):
        done += batch.step()
    assert steps_with_the_hole > 3 * (max(limits) + TRIM_COLUMNS), f"the last slot a hole for {steps_with_the_hole} steps"
    assert max(widths) <= max(limits) + TRIM_COLUMNS + 1, f"self-attention past grew to {max(widths) - 1}"
    assert len(done) == len(rows) == sent
    for sequence, index in rows:
        assert sequence.tokens == references[index][: sequence.limit].tolist()


def assert_torch_path_matches_generate(run, runtime, prompts, hf_model, tokens, pairs) -> None:
    """`run` as the decode loop's step on the PyTorch-tensor path (`TorchArrays`: states, cache
    and logits are torch tensors end to end): generate's tokens, the NumPy path's scores."""
    import torch

    from runtime.arrays import TorchArrays
    from runtime.greedy import greedy_generate

    ids, mask = prompts.encode_batch(pairs)
    states = runtime.encode(ids, mask)
    ours = greedy_generate(run, runtime.signature, tokens, torch.from_numpy(states), mask, np.full(len(ids), 32),
                           arrays=TorchArrays())
    numpy_path = greedy_generate(runtime.run_decoder, runtime.signature, tokens, states, mask, np.full(len(ids), 32))
    reference = hf_generate(hf_model, ids, mask, 32)
    for row in range(len(ids)):
        length = ours.lengths[row]
        assert ours.tokens[row, :length].tolist() == reference[row, :length].tolist()
        assert not reference[row, length:].any()
    np.testing.assert_allclose(ours.scores, numpy_path.scores, atol=1e-5)


def test_torch_arrays_path_matches_generate(runtime, prompts, hf_model, tokens):
    """The GPU targets' array path (PyTorch tensors, kept on the device there), here on the
    CPU, with the decoder graph behind a torch interface as BLS + DLPack gives it."""
    assert_torch_path_matches_generate(torch_run(runtime), runtime, prompts, hf_model, tokens, PAIRS[10:16])


def test_io_binding_executor_matches_generate(export_dir, runtime, prompts, hf_model, tokens):
    """`runtime.onnx_runtime.BoundGraph` (IO binding on torch tensors: what keeps the cache on
    the GPU with ONNX Runtime's CUDA EP), here on the CPU EP; what it hands back is torch
    tensors (no copy through NumPy)."""
    import torch

    from runtime.onnx_runtime import BoundGraph

    bound = BoundGraph(str(export_dir / "decoder_model_merged.onnx"))
    calls = []

    def run(feed, outputs):
        result = bound(feed, outputs)
        calls.append(all(isinstance(v, torch.Tensor) for v in result.values()))
        return result

    assert_torch_path_matches_generate(run, runtime, prompts, hf_model, tokens, PAIRS[30:38])
    assert calls and all(calls)


def test_split_decoder_graphs_match_generate(export_dir, runtime, prompts, hf_model, tokens):
    """The two decoder graphs TensorRT builds from (first step, later steps), routed as
    `t5_greedy` routes them on the gpu-tensorrt target, give generate's tokens."""
    from runtime.greedy import greedy_generate, split_feed
    from runtime.onnx_runtime import open_session, run_graph

    init = open_session(str(export_dir / "decoder_model.onnx"))
    with_past = open_session(str(export_dir / "decoder_with_past_model.onnx"))

    def run_split(feed, outputs):
        first, feed = split_feed(feed, runtime.signature)
        return run_graph(init if first else with_past, feed, outputs)

    ids, mask = prompts.encode_batch(PAIRS[20:28])
    ours = greedy_generate(run_split, runtime.signature, tokens, runtime.encode(ids, mask), mask, np.full(len(ids), 32))
    reference = hf_generate(hf_model, ids, mask, 32)
    for row in range(len(ids)):
        length = ours.lengths[row]
        assert ours.tokens[row, :length].tolist() == reference[row, :length].tolist()
        assert not reference[row, length:].any()


def test_tensorrt_graphs_have_no_control_flow(export_dir):
    """TensorRT cannot build If/Loop around network outputs (NVIDIA/TensorRT#2723)."""
    import onnx

    for name in ("encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx"):
        graph = onnx.load(str(export_dir / name), load_external_data=False).graph
        assert not {n.op_type for n in graph.node} & {"If", "Loop", "Scan"}, name
