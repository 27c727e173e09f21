"""Blocking Python API of the client: tokenize, call the `t5_qa` ensemble over gRPC or HTTP,
decode. Depends on `tokenizers`, `tritonclient` and `numpy` only; `client.aio` is the asyncio
twin."""
from __future__ import annotations

import time
from functools import cached_property
from typing import Callable, TypeVar

import numpy as np

from client.batching import ChunkResult, Plan
from client.core import DEMO_WARNING, OUTPUTS, ClientCore, is_demo, log  # noqa: F401 - re-exported
from client.errors import QAError, RequestTimeout, ServerUnavailable
from client.results import Answer
from client.retry import Deadline
from client.transport import Transport

T = TypeVar("T")
Progress = Callable[[int], None]
"""Called with the number of questions answered since its previous call."""


class QAClient(ClientCore):
    """A connection to the server; reuse it across calls. Settings: see `ClientCore`.
    With protocol "http" use an instance from one thread at a time; gRPC instances may be shared.

    Each call's `timeout_s` (default: the client's) is a deadline for the whole call: the
    served config when it is first read, every request of a batch, every retry and backoff
    sleep. Each attempt is given, and sends to the server, only the time left; past the
    deadline the call raises `RequestTimeout`.
    """

    transport_class = Transport

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> "QAClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _retrying(self, call: Callable[[float], T], deadline: Deadline) -> T:
        """`call(seconds left)`, retried on `ServerUnavailable` while the policy and `deadline` allow."""
        attempts = self.retry.start(self.url, deadline)
        while True:
            timeout_s = attempts.remaining_s()
            try:
                return call(timeout_s)
            except ServerUnavailable as error:
                time.sleep(attempts.backoff(error))
            except RequestTimeout as error:  # this attempt used up the call's time
                raise attempts.timed_out(error.status, f"the last attempt had {timeout_s:.3g} s: {error.status}") \
                    from error

    @cached_property
    def model_config(self) -> dict:
        """The served model's config (batch size, limits, whether it is a demo model)."""
        return self._config(Deadline.start(None, self.timeout_s))

    def _config(self, deadline: Deadline) -> dict:
        """`model_config`, read within `deadline` the first time."""
        if "model_config" not in self.__dict__:
            self.__dict__["model_config"] = self._retrying(
                lambda timeout_s: self._transport.model_config(self.model, timeout_s), deadline)
        return self.__dict__["model_config"]

    @property
    def demo_model(self) -> bool:
        return is_demo(self.model_config)

    def health(self, timeout_s: float = 5.0) -> dict:
        """Liveness and readiness of the server and the model, without retries, within
        `timeout_s` in all; never raises for an unreachable server (`live` is then false and
        `error` says why)."""
        report = {"url": self.url, "protocol": self.protocol, "model": self.model}
        try:
            report.update(self._transport.health(self.model, timeout_s))
        except QAError as error:
            return report | {"live": False, "ready": False, "model_ready": False, "error": str(error)}
        return report

    def generate(self, input_ids: np.ndarray, attention_mask: np.ndarray, max_new_tokens: int | None = None,
                 timeout_s: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw call of the ensemble: token ids in; generated ids `[batch, n]`, their lengths
        `[batch, 1]` and mean log-probabilities `[batch, 1]` out. `timeout_s` bounds the call."""
        result = self._generate(input_ids, attention_mask, max_new_tokens, Deadline.start(timeout_s, self.timeout_s))
        return result.ids, result.lengths, result.scores

    def _generate(self, input_ids: np.ndarray, attention_mask: np.ndarray, max_new_tokens: int | None,
                  deadline: Deadline) -> ChunkResult:
        arrays = self._request(self._config(deadline), input_ids, attention_mask, max_new_tokens)
        started = time.monotonic()
        outputs, version = self._retrying(
            lambda timeout_s: self._transport.infer(self.model, arrays, OUTPUTS, timeout_s), deadline)
        return self._result(outputs, version, time.monotonic() - started)

    def answer(self, question: str, context: str, max_new_tokens: int | None = None,
               timeout_s: float | None = None) -> Answer:
        return self.answer_batch([(question, context)], max_new_tokens, timeout_s)[0]

    def answer_batch(self, pairs: list[tuple[str, str]], max_new_tokens: int | None = None,
                     timeout_s: float | None = None, progress: Progress | None = None) -> list[Answer]:
        """Answers in input order. All prompt windows of all pairs are sent in chunks of the
        server's `max_batch_size`, one after the other; `timeout_s` bounds the whole batch (all
        its chunks, retries included), not each chunk: past it, `RequestTimeout`, and the
        chunks already answered are dropped."""
        deadline = Deadline.start(timeout_s, self.timeout_s)
        return self._answer_plan(self.plan_for(self._config(deadline), pairs), max_new_tokens, deadline, progress)

    def plan(self, pairs: list[tuple[str, str]]) -> Plan:
        """The windows and chunks `answer_batch(pairs)` sends (to inspect them)."""
        return self.plan_for(self.model_config, pairs)

    def answer_plan(self, plan: Plan, max_new_tokens: int | None = None, timeout_s: float | None = None,
                    progress: Progress | None = None) -> list[Answer]:
        """Answer a `plan_for(...)` plan: its chunks one after the other, all within `timeout_s`."""
        return self._answer_plan(plan, max_new_tokens, Deadline.start(timeout_s, self.timeout_s), progress)

    def _answer_plan(self, plan: Plan, max_new_tokens: int | None, deadline: Deadline,
                     progress: Progress | None) -> list[Answer]:
        results = []
        for chunk in plan.chunks:
            results.append(self._generate(chunk.input_ids, chunk.attention_mask, max_new_tokens, deadline))
            if progress:
                progress(plan.finish(chunk))
        return self._answers(self._config(deadline), plan, results)


def answer(question: str, context: str, url: str = "localhost:8001", **kwargs) -> Answer:
    """One-shot convenience: connect, answer, close."""
    with QAClient(url, **kwargs) as client:
        return client.answer(question, context)
