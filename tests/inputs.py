"""Test inputs: real SQuAD 2.0 dev questions (`shared_data`) plus hand-made edge cases."""
from __future__ import annotations

from shared_data import T5_TOKENIZER_JSON as TOKENIZER_JSON
from shared_data import squad_pairs

HAND_MADE = [
    ("Who?", "Bob."),
    ("What colour is the sky on a clear day?", "On a clear day the sky is blue because of Rayleigh scattering."),
    ("Wie heißt die Hauptstadt?", "Berlin ist die Hauptstadt Deutschlands. Café, naïve, 東京, emoji 🚀."),
    ("How many?", " ".join(["Numbers: 1, 22, 333, 4444, 55555."] * 3)),
    ("What is said?", "\"Quoted\" text with (brackets), dashes — and tabs\tand\nnewlines."),
]


def parity_pairs() -> list[tuple[str, str]]:
    """55 varied inputs: 50 dev-set questions of all lengths and 5 hand-made edge cases."""
    return squad_pairs(50) + HAND_MADE
