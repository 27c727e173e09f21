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

How long the running rows have left is also estimated: a row stops at `</s>` or at its limit of
new tokens, and real answers stop long before the limit (SQuAD 2.0: about half abstain at the
first token, most answers take a few more; the limit is 32 by default). `JoinCosts.steps_left`
takes, for each running row, the mean of what the recently finished rows that got past its length
went on to produce; with the limit alone, every wait looked as long as the limit and everything
joined. Only rows allowed at least its limit count: a row stopped by a smaller limit of its own
says only that the answer was not over by then, and with requests of mixed limits (the default 32
beside clients that ask for 4) the short-limited rows made a long row's wait look a few steps
long, so arrivals waited for it instead of joining.

Rows that arrive encoded (GPU targets: the encoder is a served model) cost the running rows no
encoder time, so they always join. Until the loop has timed an admission, everything joins.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Iterable

SMOOTHING = 0.2  # weight of the newest timing in the moving averages
FINISHED_KEPT = 64  # the lengths of the last this many finished rows estimate the running rows'


@dataclass
class JoinCosts:
    """Moving averages of the loop's timings, and the join decision made from them."""

    step_s: float = 0.0  # one decode step of the running rows, wall time
    encode_s_per_token: float = 0.0  # an admission (encoder call and first step) per prompt token
    # (tokens, </s> included, and the row's limit) of the last FINISHED_KEPT rows that finished
    lengths: deque[tuple[int, int]] = field(default_factory=lambda: deque(maxlen=FINISHED_KEPT))

    def observed_step(self, seconds: float) -> None:
        self.step_s = _averaged(self.step_s, seconds)

    def observed_admission(self, seconds: float, prompt_tokens: int) -> None:
        """An admission that encoded `prompt_tokens` and gave the rows their first step took `seconds`."""
        if prompt_tokens:
            self.encode_s_per_token = _averaged(self.encode_s_per_token, seconds / prompt_tokens)

    def observed_finish(self, tokens: int, limit: int) -> None:
        """A row with a limit of `limit` new tokens finished (at `</s>` or that limit) with `tokens` tokens."""
        self.lengths.append((tokens, limit))

    def steps_left(self, rows: Iterable[tuple[int, int]]) -> int:
        """Steps until the last of `rows`, each (tokens so far, limit), is done, expected: per row,
        the mean of what the finished rows longer than it and allowed at least its limit went on
        to produce, within its limit; its limit where none is on record."""
        most = 0
        for tokens, limit in set(rows):  # rows admitted together share their lengths
            longer = [min(length, limit) - tokens for length, allowed in self.lengths
                      if length > tokens and allowed >= limit]
            most = max(most, round(sum(longer) / len(longer)) if longer else limit - tokens)
        return most

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
