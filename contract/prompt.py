"""The prompt contract between client and server: how a question and a context become the
model's token ids, and how its answer becomes text.

The fine-tuned model was trained on `question: {q}  context: {c}` (two spaces before
`context:`) followed by exactly one `</s>`, which the T5 tokenizer appends itself. `encode` cuts a
long context's end, never any of the question; `client.windows` splits it instead. The client
tokenizes with it for the ids endpoint, the text endpoint's `t5_tokenizer` model on the server.

The tokenizer is a `tokenizers.Tokenizer` (only its `encode`, `decode` and `token_to_id` are
used). The `</s>` and `<pad>` ids are the served model's (`t5_qa`'s parameters, written from the
checkpoint's config at export); offline, `PromptEncoder.from_tokenizer` takes the tokenizer's own.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from contract.limits import MAX_INPUT_TOKENS


class InvalidPrompt(ValueError):
    """The question or context cannot become a prompt (empty, not text, too long)."""


def apply_threshold(generated: str, score: float, threshold: float | None) -> tuple[str, bool]:
    """(reported text, below threshold): the model's text, or "" when its score is below
    `threshold`. An empty generation stays empty and is not "below threshold"."""
    below = bool(generated) and threshold is not None and score < threshold
    return ("" if below else generated), below


def prompt_text(question: str, context: str) -> str:
    return f"question: {question}  context: {context}"


@dataclass(frozen=True)
class PromptTokens:
    """A prompt's whole tokenization, never truncated: what windowing and truncation cut from."""

    ids: list[int]  # `</s>` last
    prefix: int  # tokens before the context: `question: {q}  context:`
    spans: list[tuple[int, int]]  # character spans, within the context, of the tokens ids[prefix:-1]


@dataclass
class PromptEncoder:
    """Turns (question, context) pairs into padded `input_ids`/`attention_mask` arrays."""

    tokenizer: Any  # tokenizers.Tokenizer
    eos_id: int  # `</s>`, which ends every prompt
    pad_id: int  # fills the rows of a batch after their end
    max_tokens: int = MAX_INPUT_TOKENS

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, max_tokens: int = MAX_INPUT_TOKENS) -> "PromptEncoder":
        """With the tokenizer's own `</s>` and `<pad>` ids (offline use)."""
        eos, pad_id = tokenizer.token_to_id("</s>"), tokenizer.token_to_id("<pad>")
        if eos is None or pad_id is None:
            raise InvalidPrompt("tokenizer has no </s> or <pad> token: use the T5 tokenizer.json")
        return cls(tokenizer, eos, pad_id, max_tokens)

    def served(self, parameters: dict[str, str]) -> "PromptEncoder":
        """This encoder with the served model's ids and input limit (`t5_qa`'s config
        parameters, as plain strings); those the server does not publish stay as they are."""
        keys = {"eos_id": "eos_token_id", "pad_id": "pad_token_id", "max_tokens": "max_input_tokens"}
        return replace(self, **{field: int(parameters[key]) for field, key in keys.items() if parameters.get(key)})

    def tokens(self, question: str, context: str) -> PromptTokens:
        for name, text in (("question", question), ("context", context)):
            if not isinstance(text, str):
                raise InvalidPrompt(f"{name} must be a string, got {type(text).__name__}")
            if not text.strip():
                raise InvalidPrompt(f"{name} is empty")
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as error:  # a lone surrogate, e.g. from undecodable bytes
                raise InvalidPrompt(f"{name} is not valid UTF-8: {error.reason} at character {error.start}") from None
        text = prompt_text(question, context)
        encoding = self.tokenizer.encode(text)
        ids = encoding.ids
        if ids[-1:] != [self.eos_id]:
            raise InvalidPrompt(f"tokenizer does not append </s> (id {self.eos_id}): use the model's T5 tokenizer.json")
        context_start = len(text) - len(context)
        offsets = encoding.offsets[:-1]
        prefix = sum(1 for start, _ in offsets if start < context_start)
        spans = [(start - context_start, end - context_start) for start, end in offsets[prefix:]]
        return PromptTokens(ids, prefix, spans)

    def check_question_fits(self, prompt: PromptTokens) -> None:
        if prompt.prefix >= self.max_tokens - 1:
            raise InvalidPrompt(
                f"question is too long: {prompt.prefix} tokens with the prompt, "
                f"leaving no room for context within {self.max_tokens} tokens")

    def encode(self, question: str, context: str) -> list[int]:
        """The prompt's ids; a context too long for `max_tokens` loses its end (see
        `client.windows` to answer from all of it)."""
        return self.truncate(self.tokens(question, context))

    def truncate(self, prompt: PromptTokens) -> list[int]:
        if len(prompt.ids) <= self.max_tokens:
            return prompt.ids
        self.check_question_fits(prompt)
        return prompt.ids[: self.max_tokens - 1] + [self.eos_id]

    def encode_batch(self, pairs: list[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray]:
        """Right-padded int64 `input_ids` and `attention_mask`, `[len(pairs), longest]`."""
        if not pairs:
            raise InvalidPrompt("no questions given")
        return self.pad([self.encode(q, c) for q, c in pairs])

    def decode(self, ids: list[int] | np.ndarray) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=True).strip()

    def pad(self, rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        """Right-padded int64 `input_ids` and `attention_mask`, `[len(rows), longest]`."""
        return pad(rows, self.pad_id)


def pad(rows: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded int64 `input_ids` and `attention_mask`, `[len(rows), longest]`."""
    width = max(map(len, rows))
    input_ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = row
        attention_mask[i, : len(row)] = 1
    return input_ids, attention_mask
