"""Bounded retries with exponential backoff, on `ServerUnavailable` only.

A request the server refused (INVALID_ARGUMENT) or one that ran out of time is never sent
again: only "could not reach the server" is worth another try, and inference is idempotent,
so repeating it is safe. The sync and asyncio clients share this policy; only how they sleep
differs:

    attempts = policy.start(url)
    while True:
        try:
            return call()
        except ServerUnavailable as error:
            time.sleep(attempts.backoff(error))  # re-raises once the attempts are spent
"""
from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field

from client.errors import ServerUnavailable

log = logging.getLogger("client")


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` tries in all; before try k+1 (k >= 1) wait
    `min(max_backoff_s, initial_backoff_s * multiplier**(k-1))`, scaled by a random factor in
    `[1 - jitter, 1 + jitter]` so that many clients do not retry in step."""

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

    def start(self, target: str) -> "Attempts":
        return Attempts(self, target)


NO_RETRY = RetryPolicy(attempts=1)


@dataclass
class Attempts:
    """The state of one call's retries."""

    policy: RetryPolicy
    target: str
    made: int = 1
    started: float = field(default_factory=time.monotonic)

    def backoff(self, error: ServerUnavailable) -> float:
        """Seconds to wait before the next attempt, or raise `error` (with the attempt count
        and elapsed time) when the attempts are spent."""
        if self.made >= self.policy.attempts:
            elapsed = time.monotonic() - self.started
            raise ServerUnavailable(
                f"{self.target} unavailable after {self.made} attempt(s) over {elapsed:.2f} s: {error}",
                error.status, attempts=self.made, elapsed_s=elapsed) from error
        delay = self.policy.backoff_s(self.made)
        delay *= 1 + self.policy.jitter * (2 * random.random() - 1)
        log.warning("%s unavailable (attempt %d/%d): %s; retrying in %.2f s",
                    self.target, self.made, self.policy.attempts, error, delay)
        self.made += 1
        return delay
