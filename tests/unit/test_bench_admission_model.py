"""The queueing model of the decode loop (`bench.admission_model`): a lone request's latency is
its encoder call, first step and remaining steps; request-level batching holds a later arrival
until the batch is done, the cost rule lets it join when that is cheaper, and judges what is
cheaper by the lengths of the answers before; abstentions end at admission; bad policies are named."""
from __future__ import annotations

import pytest

from bench.admission_model import POLICIES, Costs, arrivals, compare, simulate

COSTS = Costs(encoder_per_token=0.001, first_step=0.03, step_base=0.03, step_per_row=0.002)


def test_a_lone_request_takes_its_encoder_call_first_step_and_steps():
    for policy in POLICIES:
        assert simulate(policy, [(0.0, 200, 1)], COSTS, new_tokens=16) == pytest.approx([0.2 + 0.03 + 15 * 0.03])


def test_request_level_holds_a_later_arrival_and_the_cost_rule_lets_it_join():
    arriving = [(0.0, 200, 1), (0.01, 100, 1)]
    first_alone = 0.2 + 0.03 + 15 * 0.03  # the first request's whole batch: 0.68 s
    held = simulate("request", arriving, COSTS, new_tokens=16)
    assert held == pytest.approx([first_alone, first_alone + 0.1 + 0.03 + 15 * 0.03 - 0.01])
    joined = simulate("costs", arriving, COSTS, new_tokens=16)
    # joins at the second iteration (stall 1 row x ~0.25 s < 14 steps x 30 ms of waiting)
    assert len(joined) == 2 and joined[1] < held[1] and joined[0] > held[0]


def test_an_abstention_ends_at_its_admission():
    for policy in POLICIES:
        assert simulate(policy, [(0.0, 200, 1)], COSTS, new_tokens=32, answers="squad") == pytest.approx([0.2 + 0.03])


def test_the_cost_rule_judges_the_wait_by_the_answers_before():
    # a 3-token answer alone, then two more: the third arrives while the second decodes
    arriving = [(0.0, 200, 3), (5.0, 200, 3), (5.01, 200, 3)]
    alone = 0.2 + 0.03 + 2 * 0.03
    # steps left from the limit: 31 steps of waiting (0.93 s) > a 0.23 s stall, the third joins
    # and the second absorbs its encoder call
    by_limit = simulate("costs-limit", arriving, COSTS, new_tokens=32, answers="squad")
    assert by_limit[1] > alone + 0.2
    # from the first answer's length: 2 steps (0.06 s) < 0.23 s, the third waits
    by_lengths = simulate("costs", arriving, COSTS, new_tokens=32, answers="squad")
    assert by_lengths[:2] == pytest.approx([alone, alone])
    assert by_lengths[2] == pytest.approx(2 * alone - 0.01), "admitted when the second is done"


def test_the_model_is_deterministic_per_seed_and_names_bad_policies():
    assert arrivals(1.6, 30, seed=3) == arrivals(1.6, 30, seed=3) != arrivals(1.6, 30, seed=4)
    assert set(compare(1.6, 20, 2, COSTS)) == set(POLICIES)
    with pytest.raises(ValueError, match="unknown policy 'fifo'"):
        simulate("fifo", [(0.0, 10, 1)], COSTS)
    with pytest.raises(ValueError, match="unknown answers 'short'"):
        simulate("costs", [(0.0, 10, 1)], COSTS, answers="short")
