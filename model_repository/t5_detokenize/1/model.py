"""Triton Python model `t5_detokenize` (text endpoint): the decode loop's token ids -> the
answer text (`contract.prompt.PromptEncoder.decode`), its score, and whether it is no answer:
nothing generated, or a score below the request's optional `no_answer_threshold`
(`contract.prompt.apply_threshold`, as the client applies it)."""
from __future__ import annotations

import numpy as np

from contract.names import ANSWER, NO_ANSWER, NO_ANSWER_THRESHOLD, OUTPUT_IDS, OUTPUT_LENGTHS, OUTPUT_SCORES, SCORE
from contract.parameters import DetokenizeParameters
from contract.prompt import PromptEncoder, apply_threshold
from runtime.text import open_tokenizer
from runtime.triton_utils import InvalidRequest, error_response, input_array, repository_file, response


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        p = DetokenizeParameters.from_args(args)
        self.prompts = PromptEncoder.from_tokenizer(open_tokenizer(repository_file(args, p.tokenizer_file)))

    def thresholds(self, request, rows: int) -> list[float | None]:
        value = input_array(request, NO_ANSWER_THRESHOLD)
        if value is None:
            return [None] * rows
        value = value.reshape(rows).astype(np.float64)
        if not np.isfinite(value).all():
            raise InvalidRequest("no_answer_threshold must be a finite number (a mean log-probability, <= 0)")
        return value.tolist()

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            ids, lengths = input_array(request, OUTPUT_IDS), input_array(request, OUTPUT_LENGTHS).reshape(-1)
            scores = input_array(request, OUTPUT_SCORES).reshape(-1)
            try:
                thresholds = self.thresholds(request, len(ids))
            except InvalidRequest as error:
                responses.append(error_response(str(error)))
                continue
            answers = [apply_threshold(self.prompts.decode(row[:length]), float(score), threshold)[0]
                       for row, length, score, threshold in zip(ids, lengths, scores, thresholds)]
            responses.append(response(**{
                ANSWER: np.array([[a.encode("utf-8")] for a in answers], dtype=np.object_),
                SCORE: scores.astype(np.float32).reshape(-1, 1),
                NO_ANSWER: np.array([[not a] for a in answers], dtype=bool)}))
        return responses
