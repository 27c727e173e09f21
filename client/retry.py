"""Bounded retries with exponential backoff, on `ServerUnavailable` only, within the call's deadline.

A request the server refused (INVALID_ARGUMENT) or one that ran out of time is never sent
again: only "could not reach the server" is worth another try, and inference is idempotent,
so repeating it is safe. The sync and asyncio clients share this policy; only how they sleep
differs:

    deadline = Deadline.start(timeout_s, default_s)   # at the start of the client's call
    attempts = policy.start(url, deadline)            # for each request the call sends
    while True:
        timeout_s = attempts.remaining_s()            # the time left, or RequestTimeout
        try:
            return call(timeout_s)
        except ServerUnavailable as error:
            time.sleep(attempts.backoff(error))   # raises once the attempts or the time are spent
        except RequestTimeout as error:           # this attempt used up the call's time
            raise attempts.timed_out(error.status, f"the last attempt had {timeout_s:.3g} s: {error.status}")

The `Deadline` belongs to the whole call (all its requests, attempts and backoff sleeps), not
to one attempt: a backoff that would end at or past it is not slept, the call raises
`RequestTimeout` at once (no attempt could start in time), naming the call's timeout, the
time spent and the attempts made.
"""
from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field

from client.errors import InvalidInput, RequestTimeout, ServerUnavailable

log = logging.getLogger("client")


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` tries in all; before try k+1 (k >= 1) wait
    `min(max_backoff_s, initial_backoff_s * multiplier**(k-1))`, scaled by a random factor in
    `[1 - jitter, 1 + jitter]` so that many clients do not retry in step. The call's deadline
    (`timeout_s`) may end the retries earlier, with `RequestTimeout`."""

    attempts: int = 4
    initial_backoff_s: float = 0.25
    multiplier: float = 2.0
    max_backoff_s: float = 4.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {self.attempts}")
        if self.initial_backoff_s < 0 or self.multiplier < 1 or not 0 <= self.jitter < 1:
            raise ValueError("need initial_backoff_s >= 0, multiplier >= 1 and 0 <= jitter < 1")

    def backoff_s(self, retry: int) -> float:
        """The nominal wait before retry number `retry` (1-based), jitter not applied."""
        return min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** (retry - 1))

    def total_backoff_s(self) -> float:
        """Nominal time spent waiting when every attempt fails."""
        return sum(self.backoff_s(k) for k in range(1, self.attempts))

    def start(self, target: str, deadline: "Deadline") -> "Attempts":
        return Attempts(self, target, deadline)


NO_RETRY = RetryPolicy(attempts=1)


@dataclass
class Deadline:
    """The time limit of one call, from when the call started: shared by all its requests
    (the chunks of a batch), their attempts and the backoff sleeps between them; `attempts`
    counts the call's attempts."""

    timeout_s: float
    started: float = field(default_factory=time.monotonic)
    attempts: int = 0

    @classmethod
    def start(cls, timeout_s: float | None, default_s: float) -> "Deadline":
        """A deadline `timeout_s` (None: `default_s`) seconds from now; it must be > 0."""
        timeout_s = default_s if timeout_s is None else timeout_s
        if not timeout_s > 0:
            raise InvalidInput(f"timeout_s must be > 0, got {timeout_s}")
        return cls(timeout_s)

    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    def remaining_s(self) -> float:
        """Seconds left (<= 0 once passed)."""
        return self.timeout_s - self.elapsed_s()


@dataclass
class Attempts:
    """The state of one request's retries, within its call's deadline."""

    policy: RetryPolicy
    target: str
    deadline: Deadline
    made: int = 0

    def remaining_s(self) -> float:
        """The time the next attempt may take (the call's time left), counting the attempt;
        `RequestTimeout` when the deadline has passed."""
        remaining = self.deadline.remaining_s()
        if remaining <= 0:
            raise self.timed_out("deadline", "the deadline passed before this request was sent")
        self.made += 1
        self.deadline.attempts += 1
        return remaining

    def timed_out(self, status: str | None, cause: object) -> RequestTimeout:
        """The call's `RequestTimeout`: its timeout, the time spent and the attempts made."""
        elapsed = self.deadline.elapsed_s()
        return RequestTimeout(f"no answer from {self.target} within the {self.deadline.timeout_s:g} s timeout: "
                              f"{self.deadline.attempts} attempt(s) over {elapsed:.2f} s ({cause})", status,
                              attempts=self.deadline.attempts, elapsed_s=elapsed, timeout_s=self.deadline.timeout_s)

    def backoff(self, error: ServerUnavailable) -> float:
        """Seconds to wait before the next attempt; raise `error` (with the attempt count and
        elapsed time) when the attempts are spent, or `RequestTimeout` when the wait would
        end at or past the deadline."""
        if self.made >= self.policy.attempts:
            elapsed = self.deadline.elapsed_s()
            raise ServerUnavailable(
                f"{self.target} unavailable after {self.made} attempt(s) over {elapsed:.2f} s: {error}",
                error.status, attempts=self.made, elapsed_s=elapsed) from error
        delay = self.policy.backoff_s(self.made)
        delay *= 1 + self.policy.jitter * (2 * random.random() - 1)
        if delay >= self.deadline.remaining_s():
            raise self.timed_out("deadline", f"unavailable: {error}; a retry in {delay:.2f} s would start past the "
                                             "deadline") from error
        log.warning("%s unavailable (attempt %d/%d): %s; retrying in %.2f s",
                    self.target, self.made, self.policy.attempts, error, delay)
        return delay
