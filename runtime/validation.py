"""Checks of the token ids a request brings, shared by `t5_encoder` (cpu target, before its
graph) and `t5_validate` (GPU targets, before the native encoder)."""
from __future__ import annotations

import numpy as np


class InvalidRequest(ValueError):
    """A request the model refuses; its message goes back to the caller as INVALID_ARGUMENT."""


def check_token_ids(input_ids: np.ndarray, attention_mask: np.ndarray, max_tokens: int, vocab_size: int) -> None:
    """Raise InvalidRequest, naming the problem, unless the ids can go to the encoder."""
    length = input_ids.shape[1]
    if length == 0:
        raise InvalidRequest("input_ids is empty: send at least one token")
    if length > max_tokens:
        raise InvalidRequest(f"input_ids has {length} tokens; the limit is {max_tokens}")
    if attention_mask.shape != input_ids.shape:
        raise InvalidRequest(f"attention_mask shape {list(attention_mask.shape)} does not match "
                             f"input_ids shape {list(input_ids.shape)}")
    if not np.isin(attention_mask, (0, 1)).all():
        raise InvalidRequest("attention_mask may hold only 0 and 1")
    if not attention_mask.any(axis=1).all():
        raise InvalidRequest("a row of attention_mask is all zeros: every sequence needs a token")
    if input_ids.min() < 0 or input_ids.max() >= vocab_size:
        raise InvalidRequest(f"input_ids must lie in [0, {vocab_size})")
