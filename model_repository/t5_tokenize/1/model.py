"""Triton Python model `t5_tokenize` (text endpoint): UTF-8 question and context -> the
prompt's `input_ids`/`attention_mask`, with the client's own prompt code
(`client.prompt.PromptEncoder`: one source of truth for the prompt format and truncation).
Invalid UTF-8, empty or blank text and over-long questions get INVALID_ARGUMENT naming the field."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from client.errors import InvalidInput
from client.prompt import PromptEncoder, load_tokenizer
from serving.triton_utils import InvalidRequest, error_response, input_array, parameters, response


def texts(request, name: str, max_bytes: int) -> list[str]:
    """The `name` input's strings, one per row; InvalidRequest if one is longer than
    `max_bytes` (refused before any work on it) or not UTF-8."""
    values = []
    for row, value in enumerate(input_array(request, name).reshape(-1)):
        size = len(value) if isinstance(value, bytes) else len(str(value).encode())
        if size > max_bytes:
            raise InvalidRequest(f"{name} (row {row}) has {size} bytes; the limit is {max_bytes} (max_text_bytes)")
        try:
            values.append(value.decode("utf-8") if isinstance(value, bytes) else str(value))
        except UnicodeDecodeError as error:
            raise InvalidRequest(f"{name} (row {row}) is not valid UTF-8: {error.reason} at byte {error.start}") from None
    return values


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        params = parameters(args)
        path = Path(args["model_repository"]).parent / params["tokenizer_file"]
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: `python -m export onnx` installs the model's tokenizer there")
        self.prompts = PromptEncoder(load_tokenizer(str(path)), int(params["eos_token_id"]), int(params["pad_token_id"]),
                                     int(params["max_input_tokens"]))
        self.max_text_bytes = int(params["max_text_bytes"])

    def encode(self, request) -> tuple[np.ndarray, np.ndarray]:
        rows = []
        questions = texts(request, "question", self.max_text_bytes)
        contexts = texts(request, "context", self.max_text_bytes)
        for row, pair in enumerate(zip(questions, contexts)):
            try:
                rows.append(self.prompts.encode(*pair))
            except InvalidInput as error:
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
            responses.append(response(input_ids=input_ids, attention_mask=attention_mask))
        return responses
