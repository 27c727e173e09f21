"""Prompt building and tokenization with the model's own `tokenizers` file.

The fine-tuned model was trained on `question: {q}  context: {c}` (two spaces before
`context:`) followed by exactly one `</s>`, which the T5 tokenizer appends itself. Long inputs
lose the end of the context, never any of the question.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from client.errors import InvalidInput

MAX_INPUT_TOKENS = 512
EOS_ID = 1
PAD_ID = 0
DEFAULT_TOKENIZER = "google-t5/t5-base"
_SHARED_TOKENIZER = Path(__file__).resolve().parents[2] / "shared" / "data" / "t5-base" / "tokenizer.json"


def load_tokenizer(source: str | None = None) -> Tokenizer:
    """Load from a `tokenizer.json` path or a Hub id. Without one: `$T5QA_TOKENIZER`, then the
    t5-base tokenizer in `../shared/data` when present, then the Hub's t5-base."""
    source = source or os.environ.get("T5QA_TOKENIZER")
    if source is None:
        source = str(_SHARED_TOKENIZER) if _SHARED_TOKENIZER.is_file() else DEFAULT_TOKENIZER
    path = Path(source)
    if path.is_dir():
        path = path / "tokenizer.json"
    if path.is_file():
        return Tokenizer.from_file(str(path))
    return Tokenizer.from_pretrained(source)


def prompt_text(question: str, context: str) -> str:
    return f"question: {question}  context: {context}"


@dataclass
class PromptEncoder:
    """Turns (question, context) pairs into padded `input_ids`/`attention_mask` arrays."""

    tokenizer: Tokenizer
    max_tokens: int = MAX_INPUT_TOKENS

    def encode(self, question: str, context: str) -> list[int]:
        for name, text in (("question", question), ("context", context)):
            if not isinstance(text, str):
                raise InvalidInput(f"{name} must be a string, got {type(text).__name__}")
            if not text.strip():
                raise InvalidInput(f"{name} is empty")
        text = prompt_text(question, context)
        encoding = self.tokenizer.encode(text)
        ids = encoding.ids
        if ids[-1:] != [EOS_ID]:
            raise InvalidInput("tokenizer does not append </s>: use the T5 tokenizer.json")
        if len(ids) <= self.max_tokens:
            return ids
        context_start = len(text) - len(context)
        question_tokens = sum(1 for start, _ in encoding.offsets[:-1] if start < context_start)
        if question_tokens >= self.max_tokens - 1:
            raise InvalidInput(
                f"question is too long: {question_tokens} tokens with the prompt, "
                f"leaving no room for context within {self.max_tokens} tokens")
        return ids[: self.max_tokens - 1] + [EOS_ID]

    def encode_batch(self, pairs: list[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray]:
        """Right-padded int64 `input_ids` and `attention_mask`, `[len(pairs), longest]`."""
        if not pairs:
            raise InvalidInput("no questions given")
        rows = [self.encode(q, c) for q, c in pairs]
        width = max(map(len, rows))
        input_ids = np.full((len(rows), width), PAD_ID, dtype=np.int64)
        attention_mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, row in enumerate(rows):
            input_ids[i, : len(row)] = row
            attention_mask[i, : len(row)] = 1
        return input_ids, attention_mask

    def decode(self, ids: list[int] | np.ndarray) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=True).strip()
