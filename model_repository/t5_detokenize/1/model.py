"""Triton Python model `t5_detokenize` (text endpoint): the decode loop's token ids -> the
answer text (`client.prompt.PromptEncoder.decode`), its score, and whether it is no answer:
nothing generated, or a score below the request's optional `no_answer_threshold`
(`client.results.apply_threshold`, as the client applies it)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from client.prompt import PromptEncoder, load_tokenizer
from client.results import apply_threshold
from serving.triton_utils import InvalidRequest, error_response, input_array, parameters, response


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        path = Path(args["model_repository"]).parent / parameters(args)["tokenizer_file"]
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: `python -m export onnx` installs the model's tokenizer there")
        self.prompts = PromptEncoder.from_tokenizer(load_tokenizer(str(path)))

    def thresholds(self, request, rows: int) -> list[float | None]:
        value = input_array(request, "no_answer_threshold")
        if value is None:
            return [None] * rows
        value = value.reshape(rows).astype(np.float64)
        if not np.isfinite(value).all():
            raise InvalidRequest("no_answer_threshold must be a finite number (a mean log-probability, <= 0)")
        return value.tolist()

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            ids, lengths = input_array(request, "output_ids"), input_array(request, "output_lengths").reshape(-1)
            scores = input_array(request, "output_scores").reshape(-1)
            try:
                thresholds = self.thresholds(request, len(ids))
            except InvalidRequest as error:
                responses.append(error_response(str(error)))
                continue
            answers = [apply_threshold(self.prompts.decode(row[:length]), float(score), threshold)[0]
                       for row, length, score, threshold in zip(ids, lengths, scores, thresholds)]
            responses.append(response(
                answer=np.array([[a.encode("utf-8")] for a in answers], dtype=np.object_),
                score=scores.astype(np.float32).reshape(-1, 1),
                no_answer=np.array([[not a] for a in answers], dtype=bool)))
        return responses
