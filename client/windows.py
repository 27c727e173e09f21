"""Long contexts: overlapping windows, each answered, the best answer kept.

The model reads at most 512 tokens. A prompt that fits is one window: the whole context.
Otherwise the context is cut into windows and every window is asked the whole question:

* each window holds at most `budget = 512 - 1 - prefix` context tokens, where `prefix` is the
  question with the prompt words (`question: {q}  context:`) and 1 is `</s>`;
* consecutive windows share `stride` context tokens (default 128, the `doc_stride` of the
  SQuAD fine-tuning scripts), so an answer cut by one window's edge lies whole in the next;
* cuts fall between words where possible, else between tokens that share no character
  (never inside a character), counted on the tokenization of the whole prompt;
* each window is re-tokenized as `question: {q}  context: {window text}`, the format the
  model was trained on, and shortened by a token while that comes out longer than 512.

All windows of all questions are answered together, in server-sized batches (see
`client.batching`). Per question, `choose` keeps the highest-scoring window that answers; the
question is unanswered only when every window abstains (an answer whose score is below the
no-answer threshold counts as an abstention), so an abstention never beats an answer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from client.errors import InvalidInput
from client.results import Answer
from contract.prompt import PromptEncoder

DEFAULT_STRIDE = 128


@dataclass(frozen=True)
class Window:
    """A part of the context, as sent: context characters `[start, end)`, context tokens
    `[first, last)` of the whole prompt's tokenization, and the prompt's `input_ids`."""

    start: int
    end: int
    first: int
    last: int
    input_ids: list[int]
    whole: bool = False  # the window is the whole context


def whole_or_truncated(prompts: PromptEncoder, question: str, context: str) -> Window:
    """The single window of `PromptEncoder.encode`: the whole context, or its beginning."""
    prompt = prompts.tokens(question, context)
    ids = prompts.truncate(prompt)
    kept = len(ids) - 1 - prompt.prefix
    whole = kept == len(prompt.spans)
    return Window(0, len(context) if whole else prompt.spans[kept - 1][1], 0, kept, ids, whole)


def context_windows(prompts: PromptEncoder, question: str, context: str,
                    stride: int = DEFAULT_STRIDE) -> list[Window]:
    """The windows covering `context` (one if the prompt fits), in context order."""
    prompt = prompts.tokens(question, context)
    if len(prompt.ids) <= prompts.max_tokens:
        return [Window(0, len(context), 0, len(prompt.spans), prompt.ids, whole=True)]
    prompts.check_question_fits(prompt)
    budget = prompts.max_tokens - 1 - prompt.prefix
    if not 0 <= stride < budget:
        raise InvalidInput(f"stride must be between 0 and {budget - 1} for this question "
                           f"(windows hold {budget} context tokens), got {stride}")
    spans = prompt.spans
    count = len(spans)
    # Cut quality before token k: 2 between words, 1 between tokens that share no character.
    quality = [2 if k in (0, count) or spans[k][0] > spans[k - 1][1] else int(spans[k][0] >= spans[k - 1][1])
               for k in range(count + 1)]
    windows: list[Window] = []
    first = 0
    while True:
        last = min(first + budget, count)
        while True:
            last = _cut(quality, last, first)
            if last is None:
                raise InvalidInput(f"cannot cut the context after character {spans[first][0]} "
                                   f"into a window of at most {budget} tokens")
            start, end = spans[first][0], spans[last - 1][1]
            ids = prompts.tokens(question, context[start:end]).ids
            if len(ids) <= prompts.max_tokens:
                break
            last -= 1
        windows.append(Window(start, end, first, last, ids))
        if last == count:
            return windows
        # The next window starts `stride` tokens before this one's end, at a cut found going
        # back (more overlap), or going forward when there is none after `first`.
        following = max(last - stride, first + 1)
        first = _cut(quality, following, first) or next(k for k in range(following, last + 1) if quality[k])


def _cut(quality: list[int], high: int, low: int, reach: int = 32) -> int | None:
    """The cut in (low, high] closest to `high`: between words if one lies within `reach`
    tokens, else between any tokens sharing no character; None if there is none."""
    for level, lowest in ((2, max(low, high - reach)), (1, low)):
        for k in range(high, lowest, -1):
            if quality[k] >= level:
                return k
    return None


def choose(candidates: Sequence[Answer]) -> int:
    """Index of the window answer to report: the highest score among those that answer
    (ties: the earliest window); when all abstain, the most confident abstention."""
    if not candidates:
        raise ValueError("no candidate answers")
    answering = [i for i, a in enumerate(candidates) if not a.no_answer]
    pool = answering or list(range(len(candidates)))
    return max(pool, key=lambda i: (candidates[i].score, -i))
