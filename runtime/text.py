"""The text endpoint's work inside the stub: the served checkpoint's tokenizer, and request
strings checked before any work on them. The prompt format itself is `contract.prompt`."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from runtime.validation import InvalidRequest


def open_tokenizer(path: str) -> Tokenizer:
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path} not found: `python -m export onnx` installs the model's tokenizer there")
    return Tokenizer.from_file(path)


def texts(values: np.ndarray, name: str, max_bytes: int) -> list[str]:
    """An input's strings, one per row; InvalidRequest if one is longer than `max_bytes`
    (refused before any work on it) or not UTF-8."""
    decoded = []
    for row, value in enumerate(values.reshape(-1)):
        size = len(value) if isinstance(value, bytes) else len(str(value).encode())
        if size > max_bytes:
            raise InvalidRequest(f"{name} (row {row}) has {size} bytes; the limit is {max_bytes} (max_text_bytes)")
        try:
            decoded.append(value.decode("utf-8") if isinstance(value, bytes) else str(value))
        except UnicodeDecodeError as error:
            raise InvalidRequest(f"{name} (row {row}) is not valid UTF-8: {error.reason} at byte {error.start}") from None
    return decoded
