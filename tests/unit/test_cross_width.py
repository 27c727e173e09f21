"""The decode batch's cross-attention width (`runtime.greedy.cross_width`): multiples of
CROSS_WIDTH_STEP that cover the rows, never beyond the widest input an engine profile takes."""
from __future__ import annotations

from contract.limits import CROSS_WIDTH_STEP, MAX_INPUT_TOKENS
from runtime.greedy import cross_width


def test_widths_are_steps_covering_the_rows_within_the_input_limit():
    assert CROSS_WIDTH_STEP == 64 and MAX_INPUT_TOKENS == 512
    assert [cross_width(n) for n in (1, 63, 64, 65, 128, 129, 448, 449, 500, 512)] == \
        [64, 64, 64, 128, 128, 192, 448, 512, 512, 512]
    for columns in range(1, MAX_INPUT_TOKENS + 1):
        width = cross_width(columns)
        assert columns <= width <= MAX_INPUT_TOKENS and (width % CROSS_WIDTH_STEP == 0)
