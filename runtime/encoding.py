"""The encoder's share of the decode loop (cpu target): rows that arrive as token ids are encoded
by the scheduler itself, between decode steps, so that encoder and decoder never compete for
the cores.

Prompts of different lengths are encoded together: each group is right-padded to its longest
prompt with the pad id and masked. T5's encoder gives the real positions the same values with
or without the padding (masked keys get a zero attention weight; relative positions do not
move), up to the summation order of a different matrix shape (~1e-6). Rows are grouped by
length so that padding stays a small share of the work (`MAX_PADDING`), and a call takes at
most `CALL_TOKENS` padded positions: on 2 cores the encoder's time per token is lowest at about
800 of them (t5-base, fp32: 4 prompts of 200 tokens 201 ms per prompt, 1 prompt 270 ms, 4 of 500
tokens 295 ms per 197 tokens, measured 2026-12-03), and its activations, which grow with the
call, stay bounded however many requests arrive at once.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from runtime.greedy import Sequence

Encode = Callable[[np.ndarray, np.ndarray], Any]
"""Runs the encoder: (input_ids [B, L], attention_mask [B, L]) -> hidden states [B, L, d_model]."""
MAX_PADDING = 0.25  # padded positions allowed per real position in one encoder call
CALL_TOKENS = 1024  # padded positions per encoder call (a longer prompt is a call of its own)


def length_groups(lengths: list[int], max_padding: float = MAX_PADDING,
                  call_tokens: int = CALL_TOKENS) -> list[list[int]]:
    """Indices of `lengths` in groups to encode together: sorted by length, a group closes when
    padding its rows to the next length would add more than `max_padding` per real position, or
    would take it over `call_tokens` padded positions."""
    groups: list[list[int]] = []
    group: list[int] = []
    real = 0
    for index in sorted(range(len(lengths)), key=lengths.__getitem__):
        width = lengths[index]  # the longest so far: rows come in ascending length
        padded = width * (len(group) + 1)
        if group and (padded > (1 + max_padding) * (real + width) or padded > call_tokens):
            groups.append(group)
            group, real = [], 0
        group.append(index)
        real += width
    if group:
        groups.append(group)
    return groups


def encode_rows(encode: Encode, rows: list[Sequence], pad_id: int) -> int:
    """Give every row that still holds token ids (`input_ids`) its encoder states, in as few
    encoder calls as `length_groups` allows. Returns the prompt tokens encoded."""
    todo = [row for row in rows if row.needs_encoding]
    for group in length_groups([row.needs_encoding for row in todo]):
        members = [todo[i] for i in group]
        width = max(len(row.input_ids) for row in members)
        ids = np.full((len(members), width), pad_id, dtype=np.int64)
        mask = np.zeros((len(members), width), dtype=np.int64)
        for i, row in enumerate(members):
            ids[i, : len(row.input_ids)] = row.input_ids
            mask[i, : len(row.mask)] = row.mask
        states = encode(ids, mask)
        for i, row in enumerate(members):
            row.states, row.input_ids = states[i, : len(row.mask)], None
    return sum(len(row.mask) for row in todo)
