"""When a waiting request joins the running rows (`runtime.admission`): the time its encoder call
would add to every running row against the time it would wait for them; the estimates are
moving averages of the loop's timings; `admissible` applies them, the budget and the row limit in
arrival order."""
from __future__ import annotations

import pytest

from runtime.admission import SMOOTHING, JoinCosts, admissible


def test_a_request_joins_when_it_would_wait_longer_than_it_stalls_the_running_rows():
    costs = JoinCosts(step_s=0.05, encode_s_per_token=0.001)
    # 2 running rows x 200 tokens x 1 ms = 0.4 s of stall, against 10 steps x 50 ms = 0.5 s of waiting
    assert costs.joins(running_rows=2, steps_left=10, rows=1, prompt_tokens=200)
    assert costs.joins(running_rows=2, steps_left=8, rows=1, prompt_tokens=200), "0.4 s against 0.4 s: joins"
    assert not costs.joins(running_rows=2, steps_left=7, rows=1, prompt_tokens=200), "0.4 s against 0.35 s"
    assert not costs.joins(running_rows=3, steps_left=10, rows=1, prompt_tokens=200), "0.6 s against 0.5 s"
    assert costs.joins(running_rows=3, steps_left=10, rows=2, prompt_tokens=200), "two rows would wait: 1.0 s"


def test_rows_that_arrive_encoded_always_join():
    assert JoinCosts(step_s=0.05, encode_s_per_token=0.001).joins(running_rows=32, steps_left=1, rows=1,
                                                                   prompt_tokens=0)


def test_before_any_timing_everything_joins():
    assert JoinCosts().joins(running_rows=32, steps_left=0, rows=1, prompt_tokens=500)


def test_the_estimates_are_moving_averages_of_the_timings():
    costs = JoinCosts()
    costs.observed_step(0.1)
    assert costs.step_s == 0.1, "the first timing is the estimate"
    costs.observed_step(0.2)
    assert costs.step_s == pytest.approx((1 - SMOOTHING) * 0.1 + SMOOTHING * 0.2)
    costs.observed_admission(0.5, 250)
    assert costs.encode_s_per_token == pytest.approx(0.002)
    costs.observed_admission(0.3, 0)  # rows that arrived encoded: no estimate of the encoder
    assert costs.encode_s_per_token == pytest.approx(0.002)
    costs.observed_admission(1.0, 250)
    assert costs.encode_s_per_token == pytest.approx((1 - SMOOTHING) * 0.002 + SMOOTHING * 0.004)


def test_into_an_empty_batch_everything_that_fits_is_admitted():
    dear = JoinCosts(step_s=1e-9, encode_s_per_token=1.0)
    waiting = [(1, 400), (2, 300), (1, 500), (1, 10)]
    assert admissible(waiting, running_rows=0, steps_left=0, max_rows=4, max_encode_tokens=1, costs=dear) == 3
    assert admissible(waiting, running_rows=0, steps_left=0, max_rows=3) == 2, "rows beyond max_rows wait"


def test_next_to_running_rows_the_budget_and_the_costs_decide_in_arrival_order():
    waiting = [(1, 200), (1, 200), (1, 200)]
    assert admissible(waiting, running_rows=2, steps_left=10, max_rows=32) == 3, "no budget, no costs: all"
    assert admissible(waiting, running_rows=2, steps_left=10, max_rows=32, max_encode_tokens=450) == 2
    assert admissible(waiting, running_rows=2, steps_left=10, max_rows=32, max_encode_tokens=100) == 1, \
        "the first request joins whatever its length"
    costs = JoinCosts(step_s=0.05, encode_s_per_token=0.001)  # 10 steps of waiting: 0.5 s per row
    # the first stalls 2 rows (0.4 s), the second 3 (0.6 s): only the first joins
    assert admissible(waiting, running_rows=2, steps_left=10, max_rows=32, costs=costs) == 1
    assert admissible([(1, 400), (1, 10)], running_rows=2, steps_left=10, max_rows=32, costs=costs) == 0, \
        "a dear request at the head waits, and nothing overtakes it"
    assert admissible(waiting, running_rows=31, steps_left=10, max_rows=32) == 1
