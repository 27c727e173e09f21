"""Which waiting requests the decode loop admits at the next step (`admissible`), and when a
waiting request joins running rows rather than wait for them to finish (`JoinCosts`; iteration-level
batching with the encoder in the loop, cpu target). Pure: the scheduler (`runtime.scheduler`)
and the queueing model of the benchmark (`bench.admission_model`) make the same decisions.

A request that joins now makes every running row wait for its encoder call and first step; a
request that does not join waits until the running rows are done, and is then admitted with
everything queued behind it. `JoinCosts` estimates both times from the loop's own timings and
lets a request join when the time it would add to the running rows is at most the time it would
otherwise wait: of the two, the choice that adds less to the sum of the latencies. Joining
eagerly instead (any prompt, at every step) made each running row absorb every arrival's encoder
call, as long as five to ten decode steps on two cores: under Poisson load every row's latency grew
with the arrivals during its life (docs/performance.md, "Joining running rows").

Rows that arrive encoded (GPU targets: the encoder is a served model) cost the running rows no
encoder time, so they always join. Until the loop has timed an admission, everything joins.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

SMOOTHING = 0.2  # weight of the newest timing in the moving averages


@dataclass
class JoinCosts:
    """Moving averages of the loop's timings, and the join decision made from them."""

    step_s: float = 0.0  # one decode step of the running rows, wall time
    encode_s_per_token: float = 0.0  # an admission (encoder call and first step) per prompt token

    def observed_step(self, seconds: float) -> None:
        self.step_s = _averaged(self.step_s, seconds)

    def observed_admission(self, seconds: float, prompt_tokens: int) -> None:
        """An admission that encoded `prompt_tokens` and gave the rows their first step took `seconds`."""
        if prompt_tokens:
            self.encode_s_per_token = _averaged(self.encode_s_per_token, seconds / prompt_tokens)

    def joins(self, running_rows: int, steps_left: int, rows: int, prompt_tokens: int) -> bool:
        """Whether a request of `rows` rows and `prompt_tokens` prompt tokens still to encode
        joins `running_rows` rows now, the last of which is done in `steps_left` steps."""
        stall_s = running_rows * prompt_tokens * self.encode_s_per_token
        wait_s = rows * steps_left * self.step_s
        return stall_s <= wait_s


def admissible(waiting: Iterable[tuple[int, int]], running_rows: int, steps_left: int, max_rows: int,
               max_encode_tokens: int = 0, costs: JoinCosts | None = None) -> int:
    """How many of the `waiting` requests, each (rows, prompt tokens still to encode) in arrival
    order, are admitted now, next to `running_rows` rows whose last is done in `steps_left` steps.
    In arrival order, while their rows fit within `max_rows`; while rows are running, also within
    `max_encode_tokens` prompt tokens (0: no limit; the first request whatever its length) and,
    with `costs`, only while `costs.joins`. Into an empty batch everything that fits is admitted."""
    budget = max_encode_tokens if running_rows and max_encode_tokens else float("inf")
    count = admitted_rows = 0
    for rows, prompt_tokens in waiting:
        if running_rows + admitted_rows + rows > max_rows:
            break
        if running_rows and ((count and prompt_tokens > budget) or (costs is not None and not costs.joins(
                running_rows + admitted_rows, steps_left, rows, prompt_tokens))):
            break
        budget -= prompt_tokens
        count, admitted_rows = count + 1, admitted_rows + rows
    return count


def _averaged(average: float, value: float) -> float:
    return value if not average else (1 - SMOOTHING) * average + SMOOTHING * value
