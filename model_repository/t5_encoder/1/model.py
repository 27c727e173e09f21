"""Triton Python model `t5_encoder` (cpu target): validates token ids and runs the T5 encoder
graph on ONNX Runtime. Requests of the same length that wait together run as one batch."""
from __future__ import annotations

import numpy as np

from serving.onnx_runtime import open_session, run_graph
from serving.triton_utils import InvalidRequest, error_response, input_array, model_file, parameters, response


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        params = parameters(args)
        self.max_tokens = int(params["max_input_tokens"])
        self.vocab_size = int(params["vocab_size"])
        self.session = open_session(model_file(args), int(params["intra_op_threads"]))

    def check(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> None:
        length = input_ids.shape[1]
        if length == 0:
            raise InvalidRequest("input_ids is empty: send at least one token")
        if length > self.max_tokens:
            raise InvalidRequest(f"input_ids has {length} tokens; the limit is {self.max_tokens}")
        if attention_mask.shape != input_ids.shape:
            raise InvalidRequest(f"attention_mask shape {list(attention_mask.shape)} does not match "
                                 f"input_ids shape {list(input_ids.shape)}")
        if not np.isin(attention_mask, (0, 1)).all():
            raise InvalidRequest("attention_mask may hold only 0 and 1")
        if not attention_mask.any(axis=1).all():
            raise InvalidRequest("a row of attention_mask is all zeros: every sequence needs a token")
        if input_ids.min() < 0 or input_ids.max() >= self.vocab_size:
            raise InvalidRequest(f"input_ids must lie in [0, {self.vocab_size})")

    def execute(self, requests: list) -> list:
        responses: list = [None] * len(requests)
        groups: dict[int, list[tuple[int, np.ndarray, np.ndarray]]] = {}
        for i, request in enumerate(requests):
            input_ids, attention_mask = input_array(request, "input_ids"), input_array(request, "attention_mask")
            try:
                self.check(input_ids, attention_mask)
            except InvalidRequest as error:
                responses[i] = error_response(str(error))
                continue
            groups.setdefault(input_ids.shape[1], []).append((i, input_ids, attention_mask))
        for group in groups.values():
            feed = {"input_ids": np.concatenate([g[1] for g in group]),
                    "attention_mask": np.concatenate([g[2] for g in group])}
            try:
                states = run_graph(self.session, feed, ["last_hidden_state"])["last_hidden_state"]
            except Exception as error:  # noqa: BLE001 - every request must get an answer
                for i, _, _ in group:
                    responses[i] = error_response(f"encoder failed: {error}", invalid=False)
                continue
            start = 0
            for i, input_ids, _ in group:
                responses[i] = response(last_hidden_state=states[start: start + len(input_ids)])
                start += len(input_ids)
        return responses
