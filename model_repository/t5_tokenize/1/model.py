"""Triton Python model `t5_tokenize` (text endpoint): UTF-8 question and context -> the
prompt's `input_ids`/`attention_mask`, with the prompt contract the client uses too
(`contract.prompt.PromptEncoder`: one source of truth for the prompt format and truncation).
Invalid UTF-8, empty or blank text and over-long questions get INVALID_ARGUMENT naming the field."""
from __future__ import annotations

import numpy as np

from contract.names import ATTENTION_MASK, CONTEXT, INPUT_IDS, QUESTION
from contract.parameters import TokenizeParameters
from contract.prompt import InvalidPrompt, PromptEncoder
from runtime.text import open_tokenizer, texts
from runtime.triton_utils import InvalidRequest, error_response, input_array, repository_file, response


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        p = TokenizeParameters.from_args(args)
        tokenizer = open_tokenizer(repository_file(args, p.tokenizer_file))
        self.prompts = PromptEncoder(tokenizer, p.tokens.eos, p.tokens.pad, p.max_input_tokens)
        self.max_text_bytes = p.max_text_bytes

    def encode(self, request) -> tuple[np.ndarray, np.ndarray]:
        rows = []
        questions = texts(input_array(request, QUESTION), QUESTION, self.max_text_bytes)
        contexts = texts(input_array(request, CONTEXT), CONTEXT, self.max_text_bytes)
        for row, pair in enumerate(zip(questions, contexts)):
            try:
                rows.append(self.prompts.encode(*pair))
            except InvalidPrompt as error:
                raise InvalidRequest(f"{error} (row {row})") from None
        return self.prompts.pad(rows)

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            try:
                input_ids, attention_mask = self.encode(request)
            except InvalidRequest as error:
                responses.append(error_response(str(error)))
                continue
            responses.append(response(**{INPUT_IDS: input_ids, ATTENTION_MASK: attention_mask}))
        return responses
