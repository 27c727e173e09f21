"""Test inputs: real SQuAD 2.0 dev questions (from ../shared/data) plus hand-made edge cases."""
from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

SHARED_DATA = Path(os.environ.get("T5QA_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
TOKENIZER_JSON = SHARED_DATA / "t5-base" / "tokenizer.json"
SQUAD_DEV = SHARED_DATA / "squad_v2" / "dev-v2.0.json.gz"

HAND_MADE = [
    ("Who?", "Bob."),
    ("What colour is the sky on a clear day?", "On a clear day the sky is blue because of Rayleigh scattering."),
    ("Wie heißt die Hauptstadt?", "Berlin ist die Hauptstadt Deutschlands. Café, naïve, 東京, emoji 🚀."),
    ("How many?", " ".join(["Numbers: 1, 22, 333, 4444, 55555."] * 3)),
    ("What is said?", "\"Quoted\" text with (brackets), dashes — and tabs\tand\nnewlines."),
]


def squad_pairs(count: int, stride: int = 97) -> list[tuple[str, str]]:
    """`count` (question, context) pairs spread over the dev set (every `stride`-th question)."""
    with gzip.open(SQUAD_DEV, "rt", encoding="utf-8") as f:
        articles = json.load(f)["data"]
    pairs = [(qa["question"], paragraph["context"])
             for article in articles for paragraph in article["paragraphs"] for qa in paragraph["qas"]]
    return pairs[::stride][:count]


def parity_pairs() -> list[tuple[str, str]]:
    """55 varied inputs: 50 dev-set questions of all lengths and 5 hand-made edge cases."""
    return squad_pairs(50) + HAND_MADE
