"""When a waiting request joins the running rows (`runtime.admission`): the time its encoder call
would add to every running row against the time it would wait for them; the estimates are
moving averages of the loop's timings, and the steps the running rows have left come from the
lengths of the rows finished before; `admissible` applies them, the budget and the row limit in
arrival order."""
from __future__ import annotations

import pytest

from runtime.admission import FINISHED_KEPT, SMOOTHING, JoinCosts, admissible


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


def test_the_steps_left_are_their_limits_until_rows_have_finished():
    assert JoinCosts().steps_left([(1, 32), (5, 16)]) == 31
    assert JoinCosts().steps_left([]) == 0


def test_the_steps_left_come_from_what_longer_finished_rows_went_on_to_produce():
    costs = JoinCosts()
    for tokens in (1, 1, 5, 5, 9):  # two abstentions, three answers
        costs.observed_finish(tokens, 32)
    # a row at 2 tokens: the rows longer than 2 went on for 3, 3 and 7 more (mean 4.33)
    assert costs.steps_left([(2, 32)]) == 4
    assert costs.steps_left([(6, 32)]) == 3, "past 6 tokens only the 9-token row: 3 more"
    assert costs.steps_left([(9, 32)]) == 23, "longer than every finished row: its limit"
    assert costs.steps_left([(2, 32), (6, 32), (2, 32)]) == 4, "the last row to finish"
    assert costs.steps_left([(2, 4)]) == 2, "within the row's own limit: 2, 2 and 2 more"


def test_rows_stopped_by_a_smaller_limit_of_their_own_do_not_shorten_a_longer_rows_wait():
    """Requests of mixed limits: rows that asked for 4 tokens and stopped there say nothing of
    how long a row allowed 32 goes on; they counted as answers of 4 tokens, so a long row's
    wait looked 2 steps long, and arrivals waited for it instead of joining."""
    costs = JoinCosts(step_s=0.05, encode_s_per_token=0.001)
    for _ in range(10):
        costs.observed_finish(4, 4)
    assert costs.steps_left([(2, 32)]) == 30, "no row allowed 32 on record: its limit"
    assert costs.steps_left([(2, 4)]) == 2, "rows of its own limit count"
    assert costs.joins(running_rows=2, steps_left=costs.steps_left([(2, 32)]), rows=1, prompt_tokens=200)
    costs.observed_finish(9, 32)  # a row allowed 32 that answered in 9 tokens
    costs.observed_finish(3, 64)
    assert costs.steps_left([(2, 32)]) == 4, "the rows allowed at least 32: 7 and 1 more"
    assert costs.steps_left([(2, 4)]) == 2, "every row allowed at least 4, within its limit"


def test_the_steps_left_follow_the_last_finished_rows():
    costs = JoinCosts()
    for _ in range(FINISHED_KEPT):
        costs.observed_finish(30, 32)
    assert costs.steps_left([(2, 32)]) == 28
    for _ in range(FINISHED_KEPT):
        costs.observed_finish(4, 32)
    assert costs.steps_left([(2, 32)]) == 2, "the long rows have left the record"


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
