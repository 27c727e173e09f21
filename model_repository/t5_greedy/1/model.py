"""Triton Python model `t5_greedy`: the greedy decode loop.

Takes the encoder's hidden states, runs the `t5_decoder` graph once per step with the
key/value cache of the previous steps (no step recomputes earlier tokens), and returns each
row's new tokens (`</s>` included when emitted), their count and their mean log-probability
(the answer's confidence, from the logits the loop has anyway). Requests that wait together
decode as one batch; finished rows leave the batch at once.

`decoder_mode` (set per target by `serving.repository`) says where the step runs:
`in_process` opens `t5_decoder`'s graph here (cpu: no copy of the cache between processes),
`bls` calls the `t5_decoder` model through BLS (GPU targets).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from serving.greedy import CachedDecoder, DecoderSignature, Tensors, greedy_generate
from serving.onnx_runtime import open_session, run_graph
from serving.triton_utils import InvalidRequest, error_response, input_array, parameters, response


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        params = parameters(args)
        self.decoder_model = params["decoder_model"]
        self.default_new_tokens = int(params["default_new_tokens"])
        self.cap = int(params["max_new_tokens_cap"])
        signature = json.loads(params["decoder_signature"])
        run = self.run_decoder_bls
        if params["decoder_mode"] == "in_process":
            graph = Path(args["model_repository"]).parent / params["decoder_graph"]
            session = open_session(str(graph), int(params["intra_op_threads"]))
            run = lambda feed, outputs: run_graph(session, feed, outputs)  # noqa: E731
        self.step = CachedDecoder(run, DecoderSignature(
            tuple(signature["past_names"]), int(signature["num_heads"]), int(signature["head_dim"])))

    def run_decoder_bls(self, feed: Tensors, outputs: list[str]) -> Tensors:
        request = pb_utils.InferenceRequest(
            model_name=self.decoder_model, requested_output_names=outputs,
            inputs=[pb_utils.Tensor(name, value) for name, value in feed.items()])
        result = request.exec()
        if result.has_error():
            raise RuntimeError(f"{self.decoder_model}: {result.error().message()}")
        return {name: pb_utils.get_output_tensor_by_name(result, name).as_numpy() for name in outputs}

    def limits(self, request, rows: int) -> np.ndarray:
        value = input_array(request, "max_new_tokens")
        if value is None:
            return np.full(rows, self.default_new_tokens, dtype=np.int64)
        value = value.reshape(rows).astype(np.int64)
        bad = value[(value < 1) | (value > self.cap)]
        if bad.size:
            raise InvalidRequest(f"max_new_tokens must be between 1 and {self.cap}, got {int(bad[0])}")
        return value

    def execute(self, requests: list) -> list:
        responses: list = [None] * len(requests)
        batch = []  # (request index, hidden states, mask, limits)
        for i, request in enumerate(requests):
            states = input_array(request, "encoder_hidden_states")
            mask = input_array(request, "attention_mask")
            try:
                if mask.shape != states.shape[:2]:
                    raise InvalidRequest(f"attention_mask shape {list(mask.shape)} does not match "
                                         f"encoder_hidden_states shape {list(states.shape)}")
                batch.append((i, states, mask, self.limits(request, len(states))))
            except InvalidRequest as error:
                responses[i] = error_response(str(error))
        if batch:
            self.decode(batch, responses)
        return responses

    def decode(self, batch: list, responses: list) -> None:
        width = max(states.shape[1] for _, states, _, _ in batch)
        states = np.concatenate([_pad(s, width) for _, s, _, _ in batch])
        mask = np.concatenate([_pad(m, width) for _, _, m, _ in batch])
        try:
            result = greedy_generate(self.step, states, mask, np.concatenate([lim for *_, lim in batch]))
        except Exception as error:  # noqa: BLE001 - every request must get an answer
            for i, *_ in batch:
                responses[i] = error_response(f"decoding failed: {error}", invalid=False)
            return
        start = 0
        for i, rows, _, _ in batch:
            lengths = result.lengths[start: start + len(rows)]
            tokens = result.tokens[start: start + len(rows), : int(lengths.max())]
            scores = result.scores[start: start + len(rows)]
            responses[i] = response(output_ids=tokens, output_lengths=lengths.reshape(-1, 1),
                                    output_scores=scores.reshape(-1, 1))
            start += len(rows)


def _pad(array: np.ndarray, width: int) -> np.ndarray:
    """Right-pad the sequence axis (1) with zeros: masked positions of the encoder output."""
    extra = width - array.shape[1]
    if extra == 0:
        return array
    padding = [(0, 0)] * array.ndim
    padding[1] = (0, extra)
    return np.pad(array, padding)
