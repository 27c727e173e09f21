"""A queueing model of the cpu decode loop under Poisson arrivals: the open-loop latency each
admission policy would give if every encoder call, first step and decode step took exactly the
times given (estimates, not measurements; the defaults are `make bench`'s roofline on this
project's 2-core machine, docs/benchmarks.md). The policies are `runtime.admission`'s own
decisions:

- request: admit only into an empty batch (request-level batching, (c') in `make bench`);
- eager: join running rows at any step, within `--max-encode-tokens` per step (the rule before
  `JoinCosts`);
- costs: join only when `JoinCosts.joins` (the scheduler's rule, the model's costs as its
  estimates, the steps the running rows have left estimated by `JoinCosts.steps_left` from the
  rows finished before);
- costs-limit: the same rule with the steps left taken from the rows' limit (before 2026-12-06).

One loop does everything, as in `t5_greedy`: an iteration encodes the admitted prompts (one
call), gives them their first step, then steps every running row. A row is done at its answer's
last token (`</s>`) or its limit. Answers (`--answers`): `limit`, every row runs to the limit (the
demo checkpoint's random weights, `make bench`); `squad`, each prompt's reference answer in the
real tokenizer's tokens plus `</s>`, one token to abstain (what the fine-tuned checkpoint gives
when right, 77% of the time). Latency counts from arrival.

  python -m bench.admission_model --rate 1.6 --seeds 100
  python -m bench.admission_model --answers squad --new-tokens 32 --rate 1.6 3 --seeds 100
"""
from __future__ import annotations

import argparse
import random
import statistics
from dataclasses import dataclass

from runtime.admission import JoinCosts, admissible

POLICIES = ("request", "eager", "costs-limit", "costs")
ANSWERS = ("limit", "squad")
# The 64 SQuAD 2.0 dev prompts of `make bench` (bench.serving.load_inputs), in tokens.
PROMPT_TOKENS = (197, 269, 266, 160, 237, 59, 196, 206, 216, 235, 213, 142, 149, 143, 170, 175, 141, 387, 299, 218,
                 156, 215, 216, 414, 166, 214, 132, 212, 183, 188, 294, 238, 139, 155, 184, 244, 147, 222, 138, 173,
                 162, 223, 265, 336, 322, 158, 197, 155, 147, 225, 199, 224, 200, 190, 263, 186, 166, 120, 215, 134,
                 185, 127, 238, 231)
# Their reference answers (the first of each) in t5-base's tokens plus `</s>`; 1: no answer (`</s>` alone).
ANSWER_TOKENS = (2, 5, 1, 11, 1, 1, 3, 1, 3, 8, 1, 1, 2, 1, 1, 1, 1, 3, 4, 13, 3, 1, 1, 2, 1, 1, 1, 2, 1, 1, 4, 7, 4,
                 5, 3, 3, 1, 1, 6, 9, 3, 4, 7, 1, 17, 8, 7, 5, 2, 3, 3, 5, 1, 1, 6, 1, 2, 1, 8, 4, 5, 1, 3, 22)


@dataclass(frozen=True)
class Costs:
    """Seconds the loop spends, by what it does."""

    encoder_per_token: float = 0.188 / 197  # encoder, batch 1 (roofline: 188 ms per 197-token prompt)
    first_step: float = 0.0333  # the admitted rows' first decoder call, beyond a step
    step_base: float = 0.0293  # a decode step at batch 1
    step_per_row: float = (0.0601 - 0.0293) / 15  # each further row (60.1 ms at batch 16)

    def step(self, rows: int) -> float:
        return self.step_base + self.step_per_row * max(rows - 1, 0)


def arrivals(rate: float, seconds: float, seed: int) -> list[tuple[float, int, int]]:
    """Poisson arrivals: (time, prompt tokens, answer tokens), the prompts in `make bench`'s order."""
    rng, at, out = random.Random(seed), 0.0, []
    while (at := at + rng.expovariate(rate)) < seconds:
        out.append((at, PROMPT_TOKENS[len(out) % len(PROMPT_TOKENS)], ANSWER_TOKENS[len(out) % len(ANSWER_TOKENS)]))
    return out


def simulate(policy: str, arriving: list[tuple[float, int, int]], costs: Costs, new_tokens: int = 16,
             answers: str = "limit", max_rows: int = 32, max_encode_tokens: int = 512) -> list[float]:
    """Each request's latency in seconds, in the order they finish."""
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; choose one of {POLICIES}")
    if answers not in ANSWERS:
        raise ValueError(f"unknown answers {answers!r}; choose one of {ANSWERS}")
    # The scheduler's estimates: a step of the running rows, an admission (encoder and first step) per token.
    per_token = costs.encoder_per_token + costs.first_step / statistics.median(PROMPT_TOKENS)
    join = JoinCosts(encode_s_per_token=per_token) if policy.startswith("costs") else None
    queue: list[tuple[float, int, int]] = []
    running: list[list] = []  # [arrival, tokens so far, tokens when done]
    latencies, now, next_arrival = [], 0.0, 0
    while next_arrival < len(arriving) or queue or running:
        while next_arrival < len(arriving) and arriving[next_arrival][0] <= now:
            queue.append(arriving[next_arrival])
            next_arrival += 1
        if not queue and not running:
            now = arriving[next_arrival][0]
            continue
        if join is not None:
            join.step_s = costs.step(len(running))
        if policy == "costs":
            steps_left = join.steps_left((tokens, new_tokens) for _, tokens, _ in running)
        else:
            steps_left = max((new_tokens - tokens for _, tokens, _ in running), default=0)
        count = 0 if running and policy == "request" else admissible(
            ((1, tokens) for _, tokens, _ in queue), len(running), steps_left, max_rows, max_encode_tokens, join)
        admitted, queue = queue[:count], queue[count:]
        if admitted:
            now += costs.encoder_per_token * sum(tokens for _, tokens, _ in admitted) + costs.first_step
            running += [[at, 1, min(answer if answers == "squad" else new_tokens, new_tokens)]
                        for at, _, answer in admitted]  # the first step chose a token
            running = finish(running, now, latencies, join, new_tokens)
        if running:
            now += costs.step(len(running))
            for row in running:
                row[1] += 1
            running = finish(running, now, latencies, join, new_tokens)
    return latencies


def finish(running: list[list], now: float, latencies: list[float], join: JoinCosts | None,
           limit: int) -> list[list]:
    """The rows not yet done; the latencies and the lengths (for `join`'s estimate) of the others,
    every row with a limit of `limit` new tokens."""
    for at, tokens, done in running:
        if tokens >= done:
            latencies.append(now - at)
            if join is not None:
                join.observed_finish(tokens, limit)
    return [row for row in running if row[1] < row[2]]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def compare(rate: float, seconds: float, seeds: int, costs: Costs, new_tokens: int = 16,
            answers: str = "limit") -> dict[str, dict[str, float]]:
    """Per policy, the mean over `seeds` runs of each run's p50 and p95 latency (seconds)."""
    out = {}
    for policy in POLICIES:
        runs = [simulate(policy, arrivals(rate, seconds, seed), costs, new_tokens, answers) for seed in range(seeds)]
        out[policy] = {"p50_s": statistics.mean(percentile(r, 0.5) for r in runs),
                       "p95_s": statistics.mean(percentile(r, 0.95) for r in runs)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, nargs="+", default=[1.2, 1.6, 2.0], help="arrivals per second")
    parser.add_argument("--seconds", type=float, default=60.0, help="arrivals for this long per run")
    parser.add_argument("--seeds", type=int, default=100, help="runs per rate and policy")
    parser.add_argument("--new-tokens", type=int, default=16, help="each request's limit (default 16, as make bench)")
    parser.add_argument("--answers", choices=ANSWERS, default="limit",
                        help="limit: every row runs to its limit (default, the demo checkpoint); squad: the "
                             "reference answers' lengths")
    args = parser.parse_args()
    print("| arrivals/s | policy | p50 s | p95 s | p95 vs request |\n|---|---|---|---|---|")
    for rate in args.rate:
        result = compare(rate, args.seconds, args.seeds, Costs(), args.new_tokens, args.answers)
        for policy, row in result.items():
            print(f"| {rate:g} | {policy} | {row['p50_s']:.2f} | {row['p95_s']:.2f} | "
                  f"{row['p95_s'] / result['request']['p95_s']:.2f}x |")


if __name__ == "__main__":
    main()
