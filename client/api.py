"""Python API of the thin client: tokenize, call the `t5_qa` ensemble over gRPC or HTTP,
decode. Depends on `tokenizers`, `tritonclient` and `numpy` only."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from tokenizers import Tokenizer

from client.errors import InvalidInput, ServerError
from client.prompt import PromptEncoder, load_tokenizer

log = logging.getLogger("client")
DEMO_WARNING = "the server runs a DEMO model with random weights: its answers are meaningless"


@dataclass(frozen=True)
class Answer:
    """One answer. `text` is empty and `no_answer` true when the model abstains (SQuAD 2.0)."""

    text: str
    token_ids: tuple[int, ...]
    score: float  # mean log-probability of the generated tokens (</s> included), <= 0
    demo_model: bool

    @property
    def no_answer(self) -> bool:
        return not self.text


class QAClient:
    """A connection to the server; reuse it across calls."""

    def __init__(self, url: str = "localhost:8001", protocol: str = "grpc", model: str = "t5_qa",
                 tokenizer: Tokenizer | str | None = None, timeout_s: float = 120.0):
        if protocol == "grpc":
            import tritonclient.grpc as triton
        elif protocol == "http":
            import tritonclient.http as triton
        else:
            raise InvalidInput(f"protocol must be 'grpc' or 'http', got {protocol!r}")
        self._triton = triton
        self.protocol = protocol
        self.model = model
        self.timeout_s = timeout_s
        self._client = triton.InferenceServerClient(url)
        if not isinstance(tokenizer, Tokenizer):
            tokenizer = load_tokenizer(tokenizer)
        self.prompts = PromptEncoder(tokenizer)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "QAClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @cached_property
    def model_config(self) -> dict:
        """The served model's config (batch size, limits, whether it is a demo model)."""
        try:
            if self.protocol == "grpc":
                return self._client.get_model_config(self.model, as_json=True)["config"]
            return self._client.get_model_config(self.model)
        except self._triton_error() as error:
            raise ServerError(f"cannot read the config of {self.model!r}: {error.message()}", error.status()) from error

    @property
    def demo_model(self) -> bool:
        params = self.model_config.get("parameters", {})
        return params.get("demo_model", {}).get("string_value") == "true"

    def answer(self, question: str, context: str, max_new_tokens: int | None = None) -> Answer:
        return self.answer_batch([(question, context)], max_new_tokens)[0]

    def answer_batch(self, pairs: list[tuple[str, str]], max_new_tokens: int | None = None) -> list[Answer]:
        """Answers in input order; sent in chunks of the server's `max_batch_size`."""
        chunk = int(self.model_config.get("max_batch_size", 1)) or 1
        answers: list[Answer] = []
        for start in range(0, len(pairs), chunk):
            input_ids, attention_mask = self.prompts.encode_batch(pairs[start: start + chunk])
            ids, lengths, scores = self.generate(input_ids, attention_mask, max_new_tokens)
            for row, length, score in zip(ids, lengths.reshape(-1), scores.reshape(-1)):
                tokens = tuple(int(t) for t in row[:length])
                answers.append(Answer(self.prompts.decode(tokens), tokens, float(score), self.demo_model))
        if self.demo_model:
            for _ in answers:
                log.warning(DEMO_WARNING)
        return answers

    def generate(self, input_ids: np.ndarray, attention_mask: np.ndarray,
                 max_new_tokens: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw call of the ensemble: token ids in; generated ids `[batch, n]`, their lengths
        `[batch, 1]` and mean log-probabilities `[batch, 1]` out."""
        inputs = [self._input("input_ids", input_ids), self._input("attention_mask", attention_mask)]
        if max_new_tokens is not None:
            cap = int(self.model_config.get("parameters", {}).get("max_new_tokens_cap", {}).get("string_value", 0))
            if cap and not 1 <= max_new_tokens <= cap:
                raise InvalidInput(f"max_new_tokens must be between 1 and {cap}, got {max_new_tokens}")
            inputs.append(self._input("max_new_tokens", np.full((len(input_ids), 1), max_new_tokens, np.int32)))
        names = ("output_ids", "output_lengths", "output_scores")
        outputs = [self._triton.InferRequestedOutput(n) for n in names]
        try:
            if self.protocol == "grpc":
                result = self._client.infer(self.model, inputs, outputs=outputs, client_timeout=self.timeout_s)
            else:
                result = self._client.infer(self.model, inputs, outputs=outputs, timeout=int(self.timeout_s * 1e6))
        except self._triton_error() as error:
            raise ServerError(error.message(), error.status()) from error
        return tuple(result.as_numpy(n) for n in names)

    def _input(self, name: str, value: np.ndarray):
        tensor = self._triton.InferInput(name, list(value.shape), "INT32" if value.dtype == np.int32 else "INT64")
        tensor.set_data_from_numpy(value)
        return tensor

    @staticmethod
    def _triton_error():
        from tritonclient.utils import InferenceServerException
        return InferenceServerException


def answer(question: str, context: str, url: str = "localhost:8001", **kwargs) -> Answer:
    """One-shot convenience: connect, answer, close."""
    with QAClient(url, **kwargs) as client:
        return client.answer(question, context)
