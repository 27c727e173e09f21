"""Triton Python model `t5_greedy`: the greedy decode loop, batched at the level of steps.

Takes the encoder's hidden states, or on the cpu target (`encoder_graph` set) the validated
token ids, which the scheduler encodes itself between decode steps, and hands each request's
rows to a scheduler thread (`runtime.scheduler`) that decodes all running rows together, one
decoder call per step with the key/value cache of the earlier steps. New requests join the
running batch at the next step; each row leaves as soon as it emits `</s>` or reaches its `max_new_tokens`, and each request is
answered as soon as its rows are done (`execute` returns None; responses go out through the
request's response sender, from the scheduler's responder thread). When the loop has been
idle for a second it hands the heap's free pages back to the OS (`runtime.memory`), so the
server does not stay at its peak size after a burst of load.

A request whose client gave up leaves the queue and the batch at the next step: Triton's
cancellation (`request.is_cancelled()`: a gRPC client that cancelled or whose deadline passed,
when it reaches this step), or the request's `timeout` parameter, which the client sends with
every attempt (its time left, in microseconds; the ensemble passes it to every step) and which
is counted here from the moment this step received the request: later than the client's own
deadline, never earlier. Over HTTP the `timeout` is the only signal Triton passes on.
Outputs per row: new token ids (`</s>` included when emitted), their count, their mean
log-probability.

`decoder_mode` (`contract.parameters.GreedyParameters`) says where the step runs: `in_process`
runs it here, with no copy of the cache between processes, through its `executor`
(`runtime.executors`: the decoder graph on ONNX Runtime, CPU or CUDA EP, or the checkpoint's own
decoder on PyTorch; states and caches stay on their device); `bls` calls the decoder model(s)
through BLS, with device tensors exchanged through DLPack.
"""
from __future__ import annotations

import threading
import time
from functools import partial

import numpy as np
import triton_python_backend_utils as pb_utils

from contract.names import (ATTENTION_MASK, ENCODER_HIDDEN_STATES, INPUT_IDS, MAX_NEW_TOKENS, OUTPUT_IDS,
                            OUTPUT_LENGTHS, OUTPUT_SCORES)
from contract.parameters import GreedyParameters
from runtime.executors import open_executor
from runtime.greedy import Sequence, Tensors, collect, split_feed
from runtime.memory import release_free_heap
from runtime.scheduler import DecodeScheduler, QueueFull
from runtime.triton_utils import InvalidRequest, error_response, input_array, repository_file, response

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
CANCEL_CHECK_S = 0.05  # how often a request asks Triton whether it was cancelled (an IPC round trip)


class PendingResponse:
    """One request's rows; sends the response when the last row is done, or one error."""

    def __init__(self, request, rows: list[Sequence], pad_id: int):
        self.request, self.sender, self.rows, self.pad_id = request, request.get_response_sender(), rows, pad_id
        self.remaining = len(rows)
        self.sent = False
        self.lock = threading.Lock()
        received = time.monotonic()
        # Asked at the first check: this step has no dynamic batcher, so a step the ensemble
        # created after the client's deadline reaches `execute` already cancelled.
        self._checked_at, self._cancelled = received - CANCEL_CHECK_S, False
        timeout_us = request.timeout()
        self.deadline = received + timeout_us / 1e6 if timeout_us else None

    def cancelled(self) -> bool:
        """Whether the client gave up: its deadline passed, or Triton says so (asked at most
        every CANCEL_CHECK_S: each question is a round trip to the server process)."""
        now = time.monotonic()
        if self.deadline is not None and now > self.deadline:
            self._cancelled = True
        if not self._cancelled and now - self._checked_at >= CANCEL_CHECK_S:
            self._checked_at, self._cancelled = now, self.request.is_cancelled()
        return self._cancelled

    def rows_done(self, count: int) -> None:
        with self.lock:
            self.remaining -= count
            if self.remaining or self.sent:
                return
            self.sent = True
        result = collect(self.rows, self.pad_id)
        self.rows = []
        self.sender.send(response(**{OUTPUT_IDS: result.tokens, OUTPUT_LENGTHS: result.lengths.reshape(-1, 1),
                                     OUTPUT_SCORES: result.scores.reshape(-1, 1)}), flags=FINAL)

    def fail(self, message: str, code: str = "INTERNAL") -> None:
        with self.lock:
            if self.sent:
                return
            self.sent = True
        self.rows = []
        self.sender.send(error_response(message, code=code), flags=FINAL)


class SchedulerMetrics:
    """The scheduler's counters as Triton custom metrics (on the metrics port, /metrics),
    updated by the scheduler thread after every iteration."""

    NAMES = {"iterations": "decode iterations (one step for all running rows)",
             "row_steps": "rows decoded, summed over iterations (/ iterations = mean batch)",
             "graph_seconds": "seconds inside the decoder graph",
             "encoder_seconds": "seconds inside the encoder (cpu target: run by the same loop)",
             "encoded_tokens": "prompt tokens encoded by the loop",
             "busy_seconds": "seconds of whole iterations; minus graph and encoder seconds = orchestration overhead",
             "cancelled_rows": "rows dropped from the queue or the batch because their request was cancelled"}

    def __init__(self) -> None:
        self.families = {  # a Metric fails once its family is garbage-collected: keep both
            key: pb_utils.MetricFamily(name=f"t5_greedy_{key}_total", description=text,
                                       kind=pb_utils.MetricFamily.COUNTER)
            for key, text in self.NAMES.items()}
        self.counters = {key: family.Metric(labels={}) for key, family in self.families.items()}
        self.reported = dict.fromkeys(self.NAMES, 0.0)

    def update(self, stats) -> None:
        for key, counter in self.counters.items():
            value = float(getattr(stats, key))
            counter.increment(value - self.reported[key])
            self.reported[key] = value


def answer(rows: list[Sequence]) -> None:
    """The scheduler's `on_finished`: count each request's finished rows."""
    for owner, count in _by_owner(rows).items():
        owner.rows_done(count)


def fail(rows: list[Sequence], error: Exception) -> None:
    for owner in _by_owner(rows):
        owner.fail(f"decoding failed: {error}")


def _by_owner(rows: list[Sequence]) -> dict[PendingResponse, int]:
    counts: dict[PendingResponse, int] = {}
    for row in rows:
        counts[row.owner] = counts.get(row.owner, 0) + 1
    return counts


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        self.params = p = GreedyParameters.from_args(args)
        self.on_device = not p.cpu_only_inputs
        executor = open_executor(p, partial(repository_file, args), self.on_device)
        self.arrays = executor.arrays
        run, encode = executor.run or self.run_decoder_bls, executor.encode
        self.metrics = SchedulerMetrics()
        self.scheduler = DecodeScheduler(
            run, p.signature, p.tokens, answer, fail, p.max_active_rows, p.max_queued_rows, self.metrics.update,
            join_running=p.batching == "iteration", arrays=self.arrays,
            is_cancelled=PendingResponse.cancelled, max_queue_wait_s=p.max_queue_wait_s, encode=encode,
            max_encode_tokens=p.max_encode_tokens, on_idle=release_free_heap).start()

    def run_decoder_bls(self, feed: Tensors, outputs: list[str]) -> Tensors:
        model = self.params.decoder_model
        if self.params.decoder_init_model:  # split graphs: neither has the merged graph's switch
            first, feed = split_feed(feed, self.params.signature)
            model = self.params.decoder_init_model if first else model
        request = pb_utils.InferenceRequest(
            model_name=model, requested_output_names=outputs,
            inputs=[self.to_triton(name, value) for name, value in feed.items()])
        result = request.exec()
        if result.has_error():
            raise RuntimeError(f"{model}: {result.error().message()}")
        return {name: self.from_triton(pb_utils.get_output_tensor_by_name(result, name)) for name in outputs}

    def to_triton(self, name: str, value):
        if isinstance(value, np.ndarray):
            return pb_utils.Tensor(name, value)
        from torch.utils.dlpack import to_dlpack
        return pb_utils.Tensor.from_dlpack(name, to_dlpack(value.contiguous()))

    def from_triton(self, tensor):
        """A request's or response's tensor as the loop's array type (device tensors stay put)."""
        if not self.on_device:
            return tensor.as_numpy()
        from torch.utils.dlpack import from_dlpack
        return from_dlpack(tensor.to_dlpack())

    def owned_states(self, request):
        """The encoder output as this model's own copy: Triton frees a request's input buffers
        when `execute` returns, and the scheduler reads them later."""
        tensor = pb_utils.get_input_tensor_by_name(request, ENCODER_HIDDEN_STATES)
        if self.on_device:
            return self.from_triton(tensor).clone()
        states = np.array(tensor.as_numpy())
        return self.arrays.torch.from_numpy(states) if self.arrays.name == "torch" else states

    def host(self, request, name: str) -> np.ndarray | None:
        """A small input as a host array, wherever Triton placed it."""
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        if tensor is None or tensor.is_cpu():
            return input_array(request, name)
        return self.from_triton(tensor).cpu().numpy()

    def limits(self, request, rows: int) -> np.ndarray:
        value = self.host(request, MAX_NEW_TOKENS)
        if value is None:
            return np.full(rows, self.params.default_new_tokens, dtype=np.int64)
        value = value.reshape(rows).astype(np.int64)
        bad = value[(value < 1) | (value > self.params.max_new_tokens_cap)]
        if bad.size:
            raise InvalidRequest(f"max_new_tokens must be between 1 and {self.params.max_new_tokens_cap}, "
                                 f"got {int(bad[0])}")
        return value

    def execute(self, requests: list) -> None:
        for request in requests:
            # The prompt (encoded by the scheduler) or the encoder's states, as this model's own copy.
            ids = np.array(input_array(request, INPUT_IDS)) if self.params.encoder_graph else None
            states = self.owned_states(request) if ids is None else None
            source = (ENCODER_HIDDEN_STATES, states) if ids is None else (INPUT_IDS, ids)
            mask = self.host(request, ATTENTION_MASK)
            try:
                if tuple(mask.shape) != tuple(source[1].shape[:2]):
                    raise InvalidRequest(f"attention_mask shape {list(mask.shape)} does not match "
                                         f"{source[0]} shape {list(source[1].shape)}")
                limits = self.limits(request, len(mask))
            except InvalidRequest as error:
                request.get_response_sender().send(error_response(str(error)), flags=FINAL)
                continue
            pending = PendingResponse(request, [], self.params.tokens.pad)
            pending.rows = [Sequence(None if states is None else states[i], mask[i].astype(np.int64), int(limits[i]),
                                     owner=pending, input_ids=None if ids is None else ids[i])
                            for i in range(len(mask))]
            pending.remaining = len(pending.rows)
            try:
                self.scheduler.submit(pending.rows)
            except QueueFull as error:
                pending.fail(f"decoding failed: {error}", code="UNAVAILABLE")
        return None

    def finalize(self) -> None:
        self.scheduler.stop(timeout_s=30.0)  # finish the rows in flight (shutdown drains them)
