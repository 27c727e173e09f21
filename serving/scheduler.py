"""Iteration-level batching: one thread drives a `DecodeBatch`; requests join it at the next
decode step and each row leaves (and reports) as soon as it is finished.

Each loop iteration admits the requests that are waiting (their first step, one decoder call
for all of them), then runs one step for every running row. The queue is bounded in rows:
`submit` refuses work beyond `max_queued_rows` at once (`QueueFull`) instead of letting
latency grow without bound. Timing counters separate the decoder graph's time from the
loop's own work, which is the orchestration overhead.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

from contract.tokens import TokenIds
from serving.greedy import DecodeBatch, DecoderSignature, RunGraph, Sequence, Tensors


log = logging.getLogger(__name__)


class QueueFull(RuntimeError):
    """Too many rows are waiting; the caller should retry later."""


@dataclass
class SchedulerStats:
    iterations: int = 0
    row_steps: int = 0  # sum over iterations of the rows decoded in them
    graph_calls: int = 0
    graph_seconds: float = 0.0  # inside the decoder graph
    busy_seconds: float = 0.0  # whole iterations (graph calls plus the loop's own work)

    @property
    def overhead_seconds(self) -> float:
        return self.busy_seconds - self.graph_seconds


class DecodeScheduler:
    """Decodes submitted rows in a background thread; see the module docstring."""

    def __init__(self, run: RunGraph, signature: DecoderSignature, tokens: TokenIds, max_active_rows: int = 32,
                 max_queued_rows: int = 256, observe: Callable[[SchedulerStats], None] | None = None,
                 join_running: bool = True, arrays=None):
        """`observe` is called from the scheduler thread after every iteration. With
        `join_running=False` waiting requests are admitted only when the batch is empty:
        request-level batching, kept for comparison in the benchmark."""
        self.join_running = join_running
        self._run = run
        self._signature = signature
        self._tokens = tokens
        self.max_active_rows = max_active_rows
        self.max_queued_rows = max_queued_rows
        self.stats = SchedulerStats()
        self._observe = observe
        self._arrays = arrays
        self._batch = self._new_batch()
        self._queue: deque[list[Sequence]] = deque()
        self._queued_rows = 0
        self._wake = threading.Condition()
        self._stopping = False  # no new work; the accepted work is finished
        self._abort = False  # stop now
        self._thread = threading.Thread(target=self._loop, name="t5-decode-scheduler", daemon=True)

    def start(self) -> "DecodeScheduler":
        self._thread.start()
        return self

    def submit(self, rows: list[Sequence]) -> None:
        """Queue one request's rows; they join the running batch at the next step."""
        if len(rows) > self.max_active_rows:
            raise ValueError(f"{len(rows)} rows exceed the {self.max_active_rows} decoded at once")
        with self._wake:
            if self._stopping:
                raise QueueFull("the decoder is shutting down")
            if self._queued_rows + len(rows) > self.max_queued_rows:
                raise QueueFull(f"decode queue full ({self._queued_rows} rows waiting, limit "
                                f"{self.max_queued_rows}); retry later")
            self._queue.append(rows)
            self._queued_rows += len(rows)
            self._wake.notify()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Accept nothing new, finish what was accepted (queued and running rows) for up to
        `timeout_s`, then fail whatever is left and end the thread. Nothing accepted is
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
        self._fail(waiting + self._batch.rows, RuntimeError("the decoder was stopped"))

    def _new_batch(self) -> DecodeBatch:
        return DecodeBatch(self._timed_run, self._signature, self._tokens, self._arrays)

    def _timed_run(self, feed: Tensors, outputs: list[str]) -> Tensors:
        start = time.perf_counter()
        try:
            return self._run(feed, outputs)
        finally:
            self.stats.graph_seconds += time.perf_counter() - start
            self.stats.graph_calls += 1

    def _take(self) -> list[Sequence] | None:
        """Wait for work; return the rows to admit now ([] to just step), None to stop."""
        with self._wake:
            while not self._stopping and not self._queue and not len(self._batch):
                self._wake.wait()
            if self._abort or (self._stopping and not self._queue and not len(self._batch)):
                return None
            admitted: list[Sequence] = []
            if len(self._batch) and not self.join_running:
                return admitted
            while self._queue and len(self._batch) + len(admitted) + len(self._queue[0]) <= self.max_active_rows:
                rows = self._queue.popleft()
                self._queued_rows -= len(rows)
                admitted.extend(rows)
            return admitted

    def _loop(self) -> None:
        while (admitted := self._take()) is not None:
            start = time.perf_counter()
            try:
                self._batch.admit(admitted)
                self.stats.row_steps += len(self._batch)
                self._batch.step()
            except Exception as error:  # noqa: BLE001 - report to every affected request, keep serving
                failed = admitted + [row for row in self._batch.rows if row not in admitted]
                self._batch = self._new_batch()
                self._fail(failed, error)
            self.stats.iterations += 1
            self.stats.busy_seconds += time.perf_counter() - start
            if self._observe is not None:
                try:
                    self._observe(self.stats)
                except Exception:  # noqa: BLE001 - statistics must never stop decoding
                    log.exception("scheduler observer failed")

    @staticmethod
    def _fail(rows: list[Sequence], error: Exception) -> None:
        for row in rows:
            if row.on_error is not None:
                row.on_error(row, error)
