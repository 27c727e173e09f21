"""How the scheduler groups prompts of different lengths for one encoder call (`runtime.encoding`)."""
from __future__ import annotations

from runtime.encoding import length_groups


def test_equal_lengths_make_one_group():
    assert length_groups([7, 7, 7]) == [[0, 1, 2]]


def test_groups_are_sorted_and_padding_stays_within_the_share():
    lengths = [200, 10, 190, 12, 180, 11]
    groups = length_groups(lengths, max_padding=0.25)
    assert groups == [[1, 5, 3], [4, 2, 0]]
    for group in groups:
        width, real = max(lengths[i] for i in group), sum(lengths[i] for i in group)
        assert width * len(group) <= 1.25 * real


def test_a_long_prompt_never_pads_a_short_one_far():
    assert length_groups([5, 100]) == [[0], [1]]
    assert length_groups([]) == []


def test_an_encoder_call_takes_at_most_call_tokens_padded_positions():
    lengths = [200] * 11 + [700, 1500]
    groups = length_groups(lengths, call_tokens=1024)
    assert groups == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10], [11], [12]]
    assert max(max(lengths[i] for i in g) * len(g) for g in groups if len(g) > 1) <= 1024
    assert length_groups([200] * 6, call_tokens=0) == [[i] for i in range(6)], "a prompt alone is always a call"
