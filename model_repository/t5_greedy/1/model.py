"""Triton Python model `t5_greedy`: the greedy decode loop, batched at the level of steps.

Takes the encoder's hidden states and hands each row to a scheduler thread
(`serving.scheduler`) that decodes all running rows together, one `t5_decoder` graph call per
step with the key/value cache of the earlier steps (no step recomputes earlier tokens). New
requests join the running batch at the next step; each row leaves as soon as it emits `</s>`
or reaches its `max_new_tokens`, and each request is answered as soon as its rows are done
(`execute` returns None; responses go out through the request's response sender). Outputs per
row: new token ids (`</s>` included when emitted), their count, their mean log-probability.

`decoder_mode` (set per target by `serving.repository`) says where the step runs:
`in_process` opens `t5_decoder`'s graph here (cpu: no copy of the cache between processes),
`bls` calls the `t5_decoder` model through BLS (GPU targets), or, when `decoder_init_model` is
set (TensorRT), the first step on that model and later steps on `t5_decoder`. On GPU targets
(`FORCE_CPU_ONLY_INPUT_TENSORS: no`) the states and the cache are PyTorch tensors on the
device, exchanged with the decoder models through DLPack: no host round trip per step.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from contract.tokens import TokenIds
from serving.arrays import NumpyArrays, TorchArrays
from serving.greedy import DecoderSignature, Sequence, Tensors, collect, split_feed
from serving.scheduler import DecodeScheduler, QueueFull
from serving.triton_utils import InvalidRequest, error_response, input_array, parameters, response

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


class PendingResponse:
    """One request's rows; sends the response when the last row is done, or one error."""

    def __init__(self, sender, rows: list[Sequence], pad_id: int):
        self.sender, self.rows, self.pad_id = sender, rows, pad_id
        self.remaining = len(rows)
        self.sent = False
        self.lock = threading.Lock()

    def row_done(self, _row: Sequence) -> None:
        with self.lock:
            self.remaining -= 1
            if self.remaining or self.sent:
                return
            self.sent = True
        result = collect(self.rows, self.pad_id)
        self.release()
        self.sender.send(response(output_ids=result.tokens, output_lengths=result.lengths.reshape(-1, 1),
                                  output_scores=result.scores.reshape(-1, 1)), flags=FINAL)

    def release(self) -> None:
        """Break the rows' reference cycle through their callbacks, so that the request's
        memory goes as soon as it is answered, not at the next garbage collection."""
        for row in self.rows:
            row.on_done = row.on_error = None
        self.rows = []

    def fail(self, _row: Sequence | None, error: Exception, code: str = "INTERNAL") -> None:
        with self.lock:
            if self.sent:
                return
            self.sent = True
        self.release()
        self.sender.send(error_response(f"decoding failed: {error}", code=code), flags=FINAL)


class SchedulerMetrics:
    """The scheduler's counters as Triton custom metrics (on the metrics port, /metrics),
    updated by the scheduler thread after every iteration."""

    NAMES = {"iterations": "decode iterations (one step for all running rows)",
             "row_steps": "rows decoded, summed over iterations (/ iterations = mean batch)",
             "graph_seconds": "seconds inside the decoder graph",
             "busy_seconds": "seconds of whole iterations; minus graph seconds = orchestration overhead"}

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


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        params = parameters(args)
        self.decoder_model = params["decoder_model"]
        self.default_new_tokens = int(params["default_new_tokens"])
        self.cap = int(params["max_new_tokens_cap"])
        signature = DecoderSignature(**json.loads(params["decoder_signature"]))
        self.signature = signature
        self.tokens = TokenIds.from_dict(json.loads(params["token_ids"]))
        self.decoder_init_model = params.get("decoder_init_model", "")
        self.on_device = params.get("FORCE_CPU_ONLY_INPUT_TENSORS") == "no"
        self.arrays = TorchArrays() if self.on_device else NumpyArrays()
        run = self.run_decoder_bls
        if params["decoder_mode"] == "in_process":
            from serving.onnx_runtime import open_session, run_graph  # cpu only: the GPU image has no onnxruntime
            graph = Path(args["model_repository"]).parent / params["decoder_graph"]
            session = open_session(str(graph), int(params["intra_op_threads"]))
            run = lambda feed, outputs: run_graph(session, feed, outputs)  # noqa: E731
        self.metrics = SchedulerMetrics()
        self.scheduler = DecodeScheduler(run, signature, self.tokens, int(params["max_active_rows"]), arrays=self.arrays,
                                         max_queued_rows=int(params["max_queued_rows"]), observe=self.metrics.update,
                                         join_running=params.get("batching", "iteration") == "iteration").start()

    def run_decoder_bls(self, feed: Tensors, outputs: list[str]) -> Tensors:
        model = self.decoder_model
        if self.decoder_init_model:  # split graphs: neither has the merged graph's switch
            first, feed = split_feed(feed, self.signature)
            model = self.decoder_init_model if first else self.decoder_model
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

    def host(self, request, name: str) -> np.ndarray | None:
        """A small input as a host array, wherever Triton placed it."""
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        if tensor is None or tensor.is_cpu():
            return input_array(request, name)
        return self.from_triton(tensor).cpu().numpy()

    def limits(self, request, rows: int) -> np.ndarray:
        value = self.host(request, "max_new_tokens")
        if value is None:
            return np.full(rows, self.default_new_tokens, dtype=np.int64)
        value = value.reshape(rows).astype(np.int64)
        bad = value[(value < 1) | (value > self.cap)]
        if bad.size:
            raise InvalidRequest(f"max_new_tokens must be between 1 and {self.cap}, got {int(bad[0])}")
        return value

    def execute(self, requests: list) -> None:
        for request in requests:
            sender = request.get_response_sender()
            states = self.from_triton(pb_utils.get_input_tensor_by_name(request, "encoder_hidden_states"))
            mask = self.host(request, "attention_mask")
            try:
                if tuple(mask.shape) != tuple(states.shape[:2]):
                    raise InvalidRequest(f"attention_mask shape {list(mask.shape)} does not match "
                                         f"encoder_hidden_states shape {list(states.shape)}")
                limits = self.limits(request, len(states))
            except InvalidRequest as error:
                sender.send(error_response(str(error)), flags=FINAL)
                continue
            rows = [Sequence(states[i], mask[i].astype(np.int64), int(limits[i])) for i in range(len(states))]
            pending = PendingResponse(sender, rows, self.tokens.pad)
            for row in rows:
                row.on_done, row.on_error = pending.row_done, pending.fail
            try:
                self.scheduler.submit(rows)
            except QueueFull as error:
                pending.fail(None, error, code="UNAVAILABLE")
        return None

    def finalize(self) -> None:
        self.scheduler.stop(timeout_s=30.0)  # finish the rows in flight (shutdown drains them)
