"""Triton Python model `t5_encoder` (cpu target): the T5 encoder graph on ONNX Runtime, after
`t5_validate` has checked the token ids. Requests of the same length that wait together run
as one batch."""
from __future__ import annotations

import numpy as np

from contract.names import ATTENTION_MASK, INPUT_IDS, LAST_HIDDEN_STATE
from contract.parameters import GraphParameters
from runtime.onnx_runtime import open_session, run_graph
from runtime.triton_utils import error_response, input_array, model_file, response


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        self.session = open_session(model_file(args), GraphParameters.from_args(args).intra_op_threads)

    def execute(self, requests: list) -> list:
        responses: list = [None] * len(requests)
        groups: dict[int, list[tuple[int, np.ndarray, np.ndarray]]] = {}
        for i, request in enumerate(requests):
            input_ids, attention_mask = input_array(request, INPUT_IDS), input_array(request, ATTENTION_MASK)
            groups.setdefault(input_ids.shape[1], []).append((i, input_ids, attention_mask))
        for group in groups.values():
            feed = {INPUT_IDS: np.concatenate([g[1] for g in group]), ATTENTION_MASK: np.concatenate([g[2] for g in group])}
            try:
                states = run_graph(self.session, feed, [LAST_HIDDEN_STATE])[LAST_HIDDEN_STATE]
            except Exception as error:  # noqa: BLE001 - every request must get an answer
                for i, _, _ in group:
                    responses[i] = error_response(f"encoder failed: {error}", invalid=False)
                continue
            start = 0
            for i, input_ids, _ in group:
                responses[i] = response(**{LAST_HIDDEN_STATE: states[start: start + len(input_ids)]})
                start += len(input_ids)
        return responses
