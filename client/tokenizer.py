"""Which tokenizer the client loads when it is not given one. The prompt format and the
tokenization itself are the prompt contract, `contract.prompt`, shared with the server."""
from __future__ import annotations

import os
from pathlib import Path

from tokenizers import Tokenizer

from contract.files import REPOSITORY
from contract.names import TOKENIZER_FILE

DEFAULT_TOKENIZER = "google-t5/t5-base"
# The exported model's own tokenizer, where `make serve` installs it: found when the client runs
# from the root of the project that serves the model.
SERVED_TOKENIZER = Path(REPOSITORY) / TOKENIZER_FILE


def load_tokenizer(source: str | None = None) -> Tokenizer:
    """Load from a `tokenizer.json` path (or a folder holding one) or a Hub id. Without one:
    `$T5QA_TOKENIZER`, then `model_repository/t5_tokenizer/1/tokenizer.json` under the current
    directory (the served model's own), then the Hub's t5-base."""
    source = source or os.environ.get("T5QA_TOKENIZER")
    if source is None:
        source = str(SERVED_TOKENIZER) if SERVED_TOKENIZER.is_file() else DEFAULT_TOKENIZER
    path = Path(source)
    if path.is_dir():
        path = path / "tokenizer.json"
    if path.is_file():
        return Tokenizer.from_file(str(path))
    return Tokenizer.from_pretrained(source)
