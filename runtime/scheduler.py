"""Iteration-level batching: one thread drives a `DecodeBatch`, in the shape of an engine step
(vLLM's `EngineCore.step`): schedule → execute → update.

- schedule: drop the rows whose requests were cancelled, and take the waiting requests that
  fit (`max_active_rows`); while rows are decoding, in arrival order and only those whose
  encoder call costs the running rows less time than they would wait for them
  (`runtime.admission`), within `max_encode_tokens` of prompts per iteration (the first one
  whatever its length); with `join_running=False` only into an empty batch (request-level
  batching, the benchmark's baseline);
- execute: the encoder for the admitted rows that arrived as token ids (with `encode`: prompts
  of different lengths together, `runtime.encoding`), their first step (one decoder call for
  all of them), then one step for every running row. One thread runs encoder and decoder in
  turn: neither waits for cores the other holds;
- update: hand the finished rows to the responder thread, which calls `on_finished` for them,
  so that a slow response never holds up the next step.

The queue is bounded: `submit` refuses at once (`QueueFull`) work beyond `max_queued_rows`, or
that would wait longer than `max_queue_wait_s` (the rows ahead of it over the rate at which
rows finished in the last `RATE_WINDOW_S`, per second the loop was busy: time with nothing to
do says nothing about how fast rows finish), instead of letting latency grow without bound
under overload: accepted requests keep a bounded latency, the others learn at once to retry
elsewhere or later. The scheduler never looks inside
a row's `owner` (the request); `is_cancelled` tells it which owners gave up. Timing counters
separate the decoder graph's time from the loop's own work, which is the orchestration overhead.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from contract.graphs import DecoderSignature
from contract.tokens import TokenIds
from runtime.admission import JoinCosts, admissible
from runtime.encoding import Encode, encode_rows
from runtime.greedy import DecodeBatch, RunGraph, Sequence, Tensors

log = logging.getLogger(__name__)
RATE_WINDOW_S = 30.0
IDLE_AFTER_S = 1.0  # nothing to do for this long: call `on_idle`
Finished = Callable[[list[Sequence]], None]
Failed = Callable[[list[Sequence], Exception], None]


class QueueFull(RuntimeError):
    """Too many rows are waiting; the caller should retry later."""


@dataclass
class SchedulerStats:
    iterations: int = 0
    row_steps: int = 0  # sum over iterations of the rows decoded in them
    graph_calls: int = 0
    graph_seconds: float = 0.0  # inside the decoder graph
    encoder_seconds: float = 0.0  # inside the encoder (rows that arrived as token ids)
    encoded_tokens: int = 0  # prompt tokens encoded
    busy_seconds: float = 0.0  # whole iterations (graph and encoder calls plus the loop's own work)
    cancelled_rows: int = 0  # rows dropped, queued or running, because their request was cancelled

    @property
    def overhead_seconds(self) -> float:
        return self.busy_seconds - self.graph_seconds - self.encoder_seconds


class DecodeScheduler:
    """Decodes submitted rows in a background thread; see the module docstring."""

    def __init__(self, run: RunGraph, signature: DecoderSignature, tokens: TokenIds, on_finished: Finished,
                 on_failed: Failed, max_active_rows: int = 32, max_queued_rows: int = 256,
                 observe: Callable[[SchedulerStats], None] | None = None, join_running: bool = True,
                 arrays=None, is_cancelled: Callable[[Any], bool] | None = None,
                 max_queue_wait_s: float | None = None, encode: Encode | None = None,
                 max_encode_tokens: int = 0, on_idle: Callable[[], None] | None = None,
                 idle_after_s: float = IDLE_AFTER_S, join_costs: JoinCosts | None = None):
        """`on_finished(rows)` and `on_failed(rows, error)` run on the responder thread;
        `observe(stats)` on the scheduler thread after every iteration; `is_cancelled(owner)`
        on the scheduler thread before every iteration. `encode` runs the encoder for rows
        submitted as token ids (`Sequence.input_ids`); `max_encode_tokens` (0: no limit) bounds
        the prompt tokens admitted per iteration while rows are decoding (the first request
        whatever its length); `join_costs` decides
        whether a waiting request joins running rows (by default from this loop's timings).
        `on_idle()` runs on the scheduler thread once per idle spell, when nothing
        has been queued or running for `idle_after_s` (the server's hook to hand freed memory
        back to the OS)."""
        self.join_running = join_running
        self._encode, self.max_encode_tokens = encode, max_encode_tokens
        self.join_costs = join_costs or JoinCosts()
        self._pad_id = tokens.pad
        self.max_active_rows = max_active_rows
        self.max_queued_rows = max_queued_rows
        self.max_queue_wait_s = max_queue_wait_s
        # (when, rows, the loop's busy seconds then) of the rows that finished in the last RATE_WINDOW_S
        self._finished: deque[tuple[float, int, float]] = deque()
        self.stats = SchedulerStats()
        self._run = run
        self._new_batch = lambda: DecodeBatch(self._timed_run, signature, tokens, arrays)
        self._batch = self._new_batch()
        self._observe = observe
        self._on_idle, self.idle_after_s = on_idle, idle_after_s
        self._is_cancelled = is_cancelled
        self._queue: deque[list[Sequence]] = deque()
        self._queued_rows = 0
        self._wake = threading.Condition()
        self._stopping = False  # no new work; the accepted work is finished
        self._abort = False  # stop now
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()  # (rows, error or None); None ends
        self._on_finished, self._on_failed = on_finished, on_failed
        self._thread = threading.Thread(target=self._loop, name="t5-decode-scheduler", daemon=True)
        self._responder = threading.Thread(target=self._respond, name="t5-decode-responder", daemon=True)

    def start(self) -> "DecodeScheduler":
        self._responder.start()
        self._thread.start()
        return self

    def submit(self, rows: list[Sequence]) -> None:
        """Queue one request's rows; they join the running batch at the next step."""
        if len(rows) > self.max_active_rows:
            raise ValueError(f"{len(rows)} rows exceed the {self.max_active_rows} decoded at once")
        if self._encode is None and any(row.needs_encoding for row in rows):
            raise ValueError("rows hold token ids but this scheduler has no encoder")
        with self._wake:
            if self._stopping:
                raise QueueFull("the decoder is shutting down")
            if self._queued_rows + len(rows) > self.max_queued_rows:
                raise QueueFull(f"decode queue full ({self._queued_rows} rows waiting, limit "
                                f"{self.max_queued_rows}); retry later")
            wait = self._expected_wait_s()
            if self.max_queue_wait_s is not None and wait > self.max_queue_wait_s:
                raise QueueFull(f"decoder overloaded: {self._queued_rows} rows waiting would take about {wait:.0f} s "
                                f"(limit {self.max_queue_wait_s:g} s); retry later")
            self._queue.append(rows)
            self._queued_rows += len(rows)
            self._wake.notify()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Accept nothing new, finish what was accepted (queued and running rows) for up to
        `timeout_s`, then fail whatever is left and end the threads. Nothing accepted is
        dropped silently: Triton unloads the model on shutdown while requests may be in here."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        with self._wake:
            self._abort = True
            waiting = [row for rows in self._queue for row in rows]
            self._queue.clear()
            self._wake.notify()
        if self._thread.is_alive():
            self._thread.join(1.0)
        left = waiting + self._batch.rows
        if left:
            self._outbox.put((left, RuntimeError("the decoder was stopped")))
        self._outbox.put(None)
        if self._responder.is_alive():
            self._responder.join(timeout_s)
        else:  # never started: answer here
            self._respond()

    def _expected_wait_s(self) -> float:
        """How long the rows queued now would wait, at the rate rows finished lately per busy
        second of the loop. Per second of wall time instead, a few rows that finished before
        an idle spell made a burst after it look slow: 16 clients starting together, a few
        seconds after three warm-up requests, were refused ("7 rows waiting would take about
        32 s") where they waited ~3 s."""
        if not self._queued_rows or not self._finished:
            return 0.0
        now = time.monotonic()
        while self._finished and self._finished[0][0] < now - RATE_WINDOW_S:
            self._finished.popleft()
        if not self._finished:
            return 0.0
        busy = self.stats.busy_seconds - self._finished[0][2]
        rate = sum(rows for _, rows, _ in self._finished) / max(busy, 1.0)
        return self._queued_rows / rate

    def _timed_run(self, feed: Tensors, outputs: list[str]) -> Tensors:
        start = time.perf_counter()
        try:
            return self._run(feed, outputs)
        finally:
            self.stats.graph_seconds += time.perf_counter() - start
            self.stats.graph_calls += 1

    def _schedule(self) -> list[Sequence] | None:
        """Wait for work; return the rows to admit now ([] to just step), None to stop."""
        with self._wake:
            idle_reported = self._on_idle is None
            while not self._stopping and not self._queue and not len(self._batch):
                if idle_reported:
                    self._wake.wait()
                elif not self._wake.wait(timeout=self.idle_after_s):
                    idle_reported = True
                    try:
                        self._on_idle()
                    except Exception:  # noqa: BLE001 - a failed hook must never stop decoding
                        log.exception("scheduler idle hook failed")
            if self._abort or (self._stopping and not self._queue and not len(self._batch)):
                return None
            self._drop_cancelled()
            admitted: list[Sequence] = []
            if not self._queue or (len(self._batch) and not self.join_running):
                return admitted
            running = self._batch.rows
            steps_left = self.join_costs.steps_left((len(row.tokens), row.limit) for row in running)
            waiting = ((len(rows), sum(row.needs_encoding for row in rows)) for rows in self._queue)
            for _ in range(admissible(waiting, len(running), steps_left, self.max_active_rows,
                                      self.max_encode_tokens, self.join_costs)):
                rows = self._queue.popleft()
                self._queued_rows -= len(rows)
                admitted.extend(rows)
            return admitted

    def _drop_cancelled(self) -> None:
        """Rows of cancelled requests leave the queue and the batch (called with the lock held)."""
        if self._is_cancelled is None:
            return
        owners = {id(rows[0].owner): rows[0].owner for rows in self._queue}
        owners.update((id(row.owner), row.owner) for row in self._batch.rows)
        cancelled = {key for key, owner in owners.items() if self._cancelled(owner)}
        if not cancelled:
            return
        kept: deque[list[Sequence]] = deque()
        for rows in self._queue:
            if id(rows[0].owner) in cancelled:
                self._queued_rows -= len(rows)
                self.stats.cancelled_rows += len(rows)
            else:
                kept.append(rows)
        self._queue = kept
        running = [r for r in self._batch.rows if id(r.owner) in cancelled]
        self._batch.drop(running)
        self.stats.cancelled_rows += len(running)

    def _cancelled(self, owner: Any) -> bool:
        """Whether `owner` gave up. A check that fails (on Triton, an IPC call to the server)
        counts as not cancelled: the row decodes on and is answered. Raised here, it would end
        the scheduler thread, and every request after it would hang."""
        try:
            return bool(self._is_cancelled(owner))
        except Exception:  # noqa: BLE001 - one request's failing check must not stop the loop
            log.exception("asking whether a request was cancelled failed; its rows decode on")
            return False

    def _loop(self) -> None:
        while (admitted := self._scheduled()) is not None:
            start = time.perf_counter()
            prompt_tokens = sum(row.needs_encoding for row in admitted)
            admitted = self._encoded(admitted)
            try:
                finished = self._batch.admit(admitted)  # execute
                stepping = time.perf_counter()
                if admitted:  # (an encoder call that failed is no estimate)
                    self.join_costs.observed_admission(stepping - start, prompt_tokens)
                stepped = len(self._batch)  # 0 when every admitted row ended at its first token
                self.stats.row_steps += stepped
                finished += self._batch.step()
                if stepped:  # a step of no rows is no estimate of one
                    self.join_costs.observed_step(time.perf_counter() - stepping)
            except Exception as error:  # noqa: BLE001 - report to every affected request, keep serving
                failed = admitted + [row for row in self._batch.rows if row not in admitted]
                self._batch = self._new_batch()
                self._outbox.put((failed, error))
            else:
                for row in finished:
                    self.join_costs.observed_finish(len(row.tokens), row.limit)
                if finished:  # update
                    self._outbox.put((finished, None))
                    with self._wake:
                        self._finished.append((time.monotonic(), len(finished), self.stats.busy_seconds))
            self.stats.iterations += 1
            self.stats.busy_seconds += time.perf_counter() - start
            if self._observe is not None:
                try:
                    self._observe(self.stats)
                except Exception:  # noqa: BLE001 - statistics must never stop decoding
                    log.exception("scheduler observer failed")

    def _scheduled(self) -> list[Sequence] | None:
        """`_schedule`, with its failures (a cache compaction for cancelled rows, say) reported
        to the requests they touch instead of ending the thread, after which every request would
        hang: the running rows fail (their batch may be half changed), the queue waits for the
        next try; a failure with no rows running fails the queued requests too."""
        while True:
            try:
                return self._schedule()
            except Exception as error:  # noqa: BLE001 - reported to the affected requests, keep serving
                log.exception("scheduling the next step failed")
                with self._wake:
                    failed = self._batch.rows
                    self._batch = self._new_batch()
                    if not failed:
                        failed = [row for rows in self._queue for row in rows]
                        self._queue.clear()
                        self._queued_rows = 0
                if failed:
                    self._outbox.put((failed, error))
                else:  # nothing to fail: try again, but do not spin
                    time.sleep(0.1)

    def _encoded(self, rows: list[Sequence]) -> list[Sequence]:
        """`rows` with their encoder states; if the encoder fails, they fail (the running rows go on)."""
        if not any(row.needs_encoding for row in rows):
            return rows
        start = time.perf_counter()
        try:
            self.stats.encoded_tokens += encode_rows(self._encode, rows, self._pad_id)
        except Exception as error:  # noqa: BLE001 - reported to the requests of these rows
            self._outbox.put((rows, error))
            return []
        finally:
            self.stats.encoder_seconds += time.perf_counter() - start
        return rows

    def _respond(self) -> None:
        while (item := self._outbox.get()) is not None:
            rows, error = item
            try:
                if error is None:
                    self._on_finished(rows)
                else:
                    self._on_failed(rows, error)
            except Exception:  # noqa: BLE001 - one failed answer must not stop the others
                log.exception("answering finished rows failed")
