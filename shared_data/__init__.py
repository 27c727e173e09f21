"""The shared reference data (`../shared/data`, or `$T5QA_SHARED_DATA`): the SQuAD 2.0 dev set,
loading (`.json` or `.json.gz`) and choosing the questions to run, and the real t5-base
tokenizer. Everything that reads the shared data finds it here."""
from __future__ import annotations

import gzip
import json
import os
from dataclasses import dataclass
from pathlib import Path

SHARED_DATA = Path(os.environ.get("T5QA_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
DEV_SET = SHARED_DATA / "squad_v2" / "dev-v2.0.json.gz"
T5_TOKENIZER_DIR = SHARED_DATA / "t5-base"  # tokenizer.json and spiece.model of t5-base
T5_TOKENIZER_JSON = T5_TOKENIZER_DIR / "tokenizer.json"


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    context: str
    answers: tuple[str, ...]  # gold answer texts; empty for a no-answer question


def load_questions(path: Path = DEV_SET) -> list[Question]:
    """Every question of a SQuAD 2.0 file, in file order."""
    if not path.is_file():
        raise FileNotFoundError(f"SQuAD 2.0 file not found: {path} (set --data or T5QA_SHARED_DATA)")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        articles = json.load(f)["data"]
    return [Question(qa["id"], qa["question"], paragraph["context"], tuple(a["text"] for a in qa["answers"]))
            for article in articles for paragraph in article["paragraphs"] for qa in paragraph["qas"]]


def select(questions: list[Question], limit: int | None = None, ids: list[str] | None = None) -> list[Question]:
    """The questions named by `ids` (in that order), else `limit` questions spread evenly over
    the file (every k-th, so that a quick run samples every article), else all of them."""
    if ids:
        by_id = {q.id: q for q in questions}
        unknown = [i for i in ids if i not in by_id]
        if unknown:
            raise KeyError(f"question ids not in the data set: {', '.join(unknown[:5])}")
        return [by_id[i] for i in ids]
    if limit is None or limit >= len(questions):
        return list(questions)
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    step = len(questions) / limit
    return [questions[int(k * step)] for k in range(limit)]


def squad_pairs(count: int, stride: int = 97) -> list[tuple[str, str]]:
    """`count` (question, context) pairs spread over the dev set (every `stride`-th question)."""
    return [(q.question, q.context) for q in load_questions()[::stride][:count]]
