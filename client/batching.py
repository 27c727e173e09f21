"""From (question, context) pairs to server-sized batches and back to one answer per pair.

A `Plan` is pure computation, shared by the sync and asyncio clients and by the evaluation's
in-process reference: pairs → prompt windows (rows) → chunks of at most the server's
`max_batch_size` rows, rows of similar length together (less padding) → the caller runs each
chunk through any `generate` → `answers()` puts each row's result back with its pair and keeps
the best window per pair (`client.windows.choose`).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from client.errors import InvalidInput
from client.results import Answer
from client.windows import DEFAULT_STRIDE, Window, choose, context_windows, whole_or_truncated
from contract.prompt import InvalidPrompt, PromptEncoder, apply_threshold

LONG_CONTEXT_MODES = ("windows", "truncate")


@dataclass(frozen=True)
class Chunk:
    """One request: `rows` are indices into `Plan.rows`."""

    rows: list[int]
    input_ids: np.ndarray
    attention_mask: np.ndarray


@dataclass(frozen=True)
class ChunkResult:
    """What a `generate` gave for a chunk: ids `[n, k]`, lengths and scores `[n, 1]`."""

    ids: np.ndarray
    lengths: np.ndarray
    scores: np.ndarray
    latency_s: float = 0.0
    model_version: str = ""


class Plan:
    def __init__(self, prompts: PromptEncoder, pairs: list[tuple[str, str]], batch_size: int,
                 long_context: str = "windows", stride: int = DEFAULT_STRIDE):
        if not pairs:
            raise InvalidInput("no questions given")
        if long_context not in LONG_CONTEXT_MODES:
            raise InvalidInput(f"long_context must be one of {LONG_CONTEXT_MODES}, got {long_context!r}")
        if batch_size < 1:
            raise InvalidInput(f"batch size must be >= 1, got {batch_size}")
        self.prompts = prompts
        try:
            self.windows: list[list[Window]] = [
                context_windows(prompts, q, c, stride) if long_context == "windows" else [whole_or_truncated(prompts, q, c)]
                for q, c in pairs]
        except InvalidPrompt as error:  # the prompt contract's refusal, as the client's typed error
            if isinstance(error, InvalidInput):
                raise
            raise InvalidInput(str(error)) from None
        self.rows = [(pair, k) for pair, windows in enumerate(self.windows) for k in range(len(windows))]
        by_length = sorted(range(len(self.rows)), key=lambda r: len(self._ids(r)))
        self.chunks = []
        for start in range(0, len(by_length), batch_size):
            rows = by_length[start: start + batch_size]
            self.chunks.append(Chunk(rows, *prompts.pad([self._ids(r) for r in rows])))
        self._left = [len(w) for w in self.windows]  # rows still unanswered, per pair

    def _ids(self, row: int) -> list[int]:
        pair, k = self.rows[row]
        return self.windows[pair][k].input_ids

    def finish(self, chunk: Chunk) -> int:
        """Record `chunk` as answered; return how many pairs that completed (for progress)."""
        done = 0
        for row in chunk.rows:
            pair = self.rows[row][0]
            self._left[pair] -= 1
            done += self._left[pair] == 0
        return done

    def answers(self, results: list[ChunkResult], threshold: float | None = None,
                demo_model: bool = False) -> list[Answer]:
        """One answer per pair, in pair order, from the results of `self.chunks` (same order)."""
        by_row: dict[int, Answer] = {}
        for chunk, result in zip(self.chunks, results, strict=True):
            for i, row in enumerate(chunk.rows):
                length = int(result.lengths.reshape(-1)[i])
                tokens = tuple(int(t) for t in result.ids[i, :length])
                score = float(result.scores.reshape(-1)[i])
                generated = self.prompts.decode(tokens)
                text, below = apply_threshold(generated, score, threshold)
                by_row[row] = Answer(text, tokens, score, demo_model, result.latency_s, result.model_version,
                                     generated, below)
        answers, row = [], 0
        for windows in self.windows:
            candidates = [by_row[row + k] for k in range(len(windows))]
            best = choose(candidates)
            window = windows[best]
            answers.append(replace(candidates[best], windows=len(windows),
                                   window=None if window.whole else (window.start, window.end)))
            row += len(windows)
        return answers
