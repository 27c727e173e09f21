"""Typed answers. The no-answer threshold they apply is `contract.prompt.apply_threshold`,
shared with the server's text endpoint.

An answer is "no answer" (SQuAD 2.0 abstention) when the model generated nothing, or, with a
threshold, when its score (mean token log-probability, <= 0) is below the threshold. The
threshold is the caller's precision/recall choice, so it is a per-client/per-request option,
never a server-wide setting; `evaluation` reports the dev-set EM/F1 to choose it from.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Answer:
    """One answer. `text` is empty and `no_answer` true when the model abstains, or when a
    no-answer threshold is set and `score` is below it (then `generated` keeps the text)."""

    text: str
    token_ids: tuple[int, ...]
    score: float  # mean log-probability of the generated tokens (</s> included), <= 0
    demo_model: bool
    latency_s: float = 0.0  # wall time of the server call that produced it (one batch)
    model_version: str = ""  # the ensemble version that answered
    generated: str = ""  # the model's decoded text, threshold not applied
    below_threshold: bool = False
    window: tuple[int, int] | None = None  # context characters [start, end) the answer came from
    windows: int = 1  # how many context windows were answered to choose this one

    @property
    def no_answer(self) -> bool:
        return not self.text

    @property
    def token_count(self) -> int:
        return len(self.token_ids)

    def as_dict(self) -> dict:
        """JSON-ready summary (CLI `batch`, evaluation details)."""
        return {"answer": self.text, "no_answer": self.no_answer, "score": round(self.score, 6),
                "tokens": self.token_count, "generated": self.generated, "below_threshold": self.below_threshold,
                "window": list(self.window) if self.window else None, "windows": self.windows,
                "latency_s": round(self.latency_s, 4), "model_version": self.model_version,
                "demo_model": self.demo_model}
