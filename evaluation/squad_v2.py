"""The official SQuAD 2.0 metric, written from its definition (the `evaluate-v2.0.py` script):

* normalisation: lower-case, remove punctuation, remove the articles a|an|the, fix white space;
* EM and F1 of a prediction: the maximum over the question's gold answers, F1 on the bag of
  normalised tokens;
* a question without gold answers (those normalising to "" do not count) is a no-answer
  question: its gold list is [""], so a prediction scores 1 (EM and F1) iff it is empty;
* reported in percent, overall and split into HasAns / NoAns questions.

`best_threshold` is the script's "best_f1_thresh": the no-answer threshold on the answers'
scores that would have given the best EM or F1.
"""
from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass

_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def tokens(text: str) -> list[str]:
    return normalize_answer(text).split() if text else []


def exact(gold: str, prediction: str) -> int:
    return int(normalize_answer(gold) == normalize_answer(prediction))


def f1(gold: str, prediction: str) -> float:
    gold_tokens, predicted = tokens(gold), tokens(prediction)
    if not gold_tokens or not predicted:
        return float(gold_tokens == predicted)  # no-answer: 1 iff both are empty
    same = sum((Counter(gold_tokens) & Counter(predicted)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def gold_answers(answers: list[str]) -> list[str]:
    """The answers that count; [""] for a no-answer question."""
    return [a for a in answers if normalize_answer(a)] or [""]


@dataclass(frozen=True)
class QuestionScore:
    exact: int
    f1: float
    has_answer: bool


def score_question(answers: list[str], prediction: str) -> QuestionScore:
    golds = gold_answers(answers)
    return QuestionScore(max(exact(g, prediction) for g in golds), max(f1(g, prediction) for g in golds),
                         golds != [""])


def evaluate(golds: dict[str, list[str]], predictions: dict[str, str]) -> dict:
    """EM/F1 (percent) over the questions of `golds` that have a prediction: overall, HasAns,
    NoAns, with each split's question count."""
    scores = {qid: score_question(answers, predictions[qid]) for qid, answers in golds.items() if qid in predictions}
    report: dict = {}
    for split, keep in (("", lambda s: True), ("HasAns_", lambda s: s.has_answer),
                        ("NoAns_", lambda s: not s.has_answer)):
        chosen = [s for s in scores.values() if keep(s)]
        report[f"{split}total"] = len(chosen)
        if chosen:
            report[f"{split}exact"] = 100.0 * sum(s.exact for s in chosen) / len(chosen)
            report[f"{split}f1"] = 100.0 * sum(s.f1 for s in chosen) / len(chosen)
    return report


def best_threshold(golds: dict[str, list[str]], generated: dict[str, str], confidence: dict[str, float],
                   metric: str = "f1") -> tuple[float, float | None]:
    """(best overall `metric` in percent, threshold): answering only where `confidence >=
    threshold` (else no answer). None: abstaining everywhere is best."""
    scores = {qid: score_question(golds[qid], generated[qid]) for qid in golds if qid in generated}
    if not scores:
        return 0.0, None
    current = best = float(sum(not s.has_answer for s in scores.values()))  # all abstain
    threshold = None
    for qid in sorted(scores, key=lambda q: -confidence[q]):
        s = scores[qid]
        if s.has_answer:
            current += getattr(s, metric)
        elif generated[qid]:
            current -= 1
        if current > best:
            best, threshold = current, confidence[qid]
    return 100.0 * best / len(scores), threshold
