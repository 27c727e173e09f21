"""Triton Python model `t5_tokenizer`: both ends of the text endpoint `t5_qa_text`, with one
copy of the exported checkpoint's tokenizer (one process, where two models would hold two).

The ensemble calls it twice; what a request carries says which end it is:
* `question`, `context` (UTF-8) -> `input_ids`, `attention_mask`: the prompt contract the client
  uses too (`contract.prompt.PromptEncoder`: one source of truth for the prompt format and
  truncation). Invalid UTF-8, empty or blank text and over-long questions get INVALID_ARGUMENT
  naming the field.
* `output_ids`, `output_lengths`, `output_scores` (the decode loop's), optional
  `no_answer_threshold` -> `answer`, `score`, `no_answer`: nothing generated, or a score below
  the threshold (`contract.prompt.apply_threshold`, as the client applies it)."""
from __future__ import annotations

import numpy as np

from contract.names import (ANSWER, ATTENTION_MASK, CONTEXT, INPUT_IDS, NO_ANSWER, NO_ANSWER_THRESHOLD, OUTPUT_IDS,
                            OUTPUT_LENGTHS, OUTPUT_SCORES, QUESTION, SCORE)
from contract.parameters import TokenizerParameters
from contract.prompt import InvalidPrompt, PromptEncoder, apply_threshold
from runtime.text import open_tokenizer, texts
from runtime.triton_utils import InvalidRequest, error_response, has_input, input_array, repository_file, response

TEXT_INPUTS, GENERATED_INPUTS = (QUESTION, CONTEXT), (OUTPUT_IDS, OUTPUT_LENGTHS, OUTPUT_SCORES)


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        p = TokenizerParameters.from_args(args)
        tokenizer = open_tokenizer(repository_file(args, p.tokenizer_file))
        self.prompts = PromptEncoder(tokenizer, p.tokens.eos, p.tokens.pad, p.max_input_tokens)
        self.max_text_bytes = p.max_text_bytes

    def encode(self, request) -> dict[str, np.ndarray]:
        rows = []
        questions = texts(input_array(request, QUESTION), QUESTION, self.max_text_bytes)
        contexts = texts(input_array(request, CONTEXT), CONTEXT, self.max_text_bytes)
        for row, pair in enumerate(zip(questions, contexts)):
            try:
                rows.append(self.prompts.encode(*pair))
            except InvalidPrompt as error:
                raise InvalidRequest(f"{error} (row {row})") from None
        input_ids, attention_mask = self.prompts.pad(rows)
        return {INPUT_IDS: input_ids, ATTENTION_MASK: attention_mask}

    def decode(self, request) -> dict[str, np.ndarray]:
        ids, lengths = input_array(request, OUTPUT_IDS), input_array(request, OUTPUT_LENGTHS).reshape(-1)
        scores = input_array(request, OUTPUT_SCORES).reshape(-1)
        thresholds = self.thresholds(request, len(ids))
        answers = [apply_threshold(self.prompts.decode(row[:length]), float(score), threshold)[0]
                   for row, length, score, threshold in zip(ids, lengths, scores, thresholds)]
        return {ANSWER: np.array([[a.encode("utf-8")] for a in answers], dtype=np.object_),
                SCORE: scores.astype(np.float32).reshape(-1, 1),
                NO_ANSWER: np.array([[not a] for a in answers], dtype=bool)}

    def thresholds(self, request, rows: int) -> list[float | None]:
        value = input_array(request, NO_ANSWER_THRESHOLD)
        if value is None:
            return [None] * rows
        value = value.reshape(rows).astype(np.float64)
        if not np.isfinite(value).all():
            raise InvalidRequest("no_answer_threshold must be a finite number (a mean log-probability, <= 0)")
        return value.tolist()

    def convert(self, request) -> dict[str, np.ndarray]:
        present = {name for name in (*TEXT_INPUTS, *GENERATED_INPUTS) if has_input(request, name)}
        if present == set(TEXT_INPUTS):
            return self.encode(request)
        if present == set(GENERATED_INPUTS):
            return self.decode(request)
        raise InvalidRequest(f"send {' and '.join(TEXT_INPUTS)} (to tokenize) or {', '.join(GENERATED_INPUTS)} "
                             f"(to detokenize), got {sorted(present)}")

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            try:
                responses.append(response(**self.convert(request)))
            except InvalidRequest as error:
                responses.append(error_response(str(error)))
        return responses
