"""asyncio API of the client: `AsyncQAClient`, the twin of `client.api.QAClient` (same
settings, answers, errors and retries) over `tritonclient.grpc.aio` / `tritonclient.http.aio`.
`answer_batch` keeps up to `concurrency` server-sized batches in flight. A call's `timeout_s`
(default: the client's) is a deadline for the whole call, all its batches, retries and backoff
included; each attempt gets, and sends to the server, the time left.

    async with AsyncQAClient("localhost:8001") as client:
        answers = await client.answer_batch(pairs, concurrency=4)
"""
from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable, TypeVar

import numpy as np

from client.api import Progress
from client.batching import Chunk, ChunkResult, Plan
from client.core import OUTPUTS, ClientCore
from client.errors import QAError, RequestTimeout, ServerUnavailable
from client.results import Answer
from client.retry import Deadline
from client.transport import AsyncTransport

T = TypeVar("T")


class AsyncQAClient(ClientCore):
    """See `ClientCore` for the settings. Create it inside the event loop that uses it."""

    transport_class = AsyncTransport
    _config: dict | None = None

    async def close(self) -> None:
        await self._transport.close()

    async def __aenter__(self) -> "AsyncQAClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _retrying(self, call: Callable[[float], Awaitable[T]], deadline: Deadline) -> T:
        """`call(seconds left)`, retried on `ServerUnavailable` while the policy and `deadline` allow."""
        attempts = self.retry.start(self.url, deadline)
        while True:
            timeout_s = attempts.remaining_s()
            try:
                return await call(timeout_s)
            except ServerUnavailable as error:
                await asyncio.sleep(attempts.backoff(error))
            except RequestTimeout as error:  # this attempt used up the call's time
                raise attempts.timed_out(error.status, f"the last attempt had {timeout_s:.3g} s: {error.status}") \
                    from error

    async def model_config(self) -> dict:
        """The served model's config, read once."""
        return await self._model_config(Deadline.start(None, self.timeout_s))

    async def _model_config(self, deadline: Deadline) -> dict:
        if self._config is None:
            self._config = await self._retrying(
                lambda timeout_s: self._transport.model_config(self.model, timeout_s), deadline)
        return self._config

    async def health(self, timeout_s: float = 5.0) -> dict:
        report = {"url": self.url, "protocol": self.protocol, "model": self.model}
        try:
            report.update(await self._transport.health(self.model, timeout_s))
        except QAError as error:
            return report | {"live": False, "ready": False, "model_ready": False, "error": str(error)}
        return report

    async def generate(self, input_ids: np.ndarray, attention_mask: np.ndarray, max_new_tokens: int | None = None,
                       timeout_s: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        deadline = Deadline.start(timeout_s, self.timeout_s)
        result = await self._generate(input_ids, attention_mask, max_new_tokens, deadline)
        return result.ids, result.lengths, result.scores

    async def _generate(self, input_ids: np.ndarray, attention_mask: np.ndarray, max_new_tokens: int | None,
                        deadline: Deadline) -> ChunkResult:
        arrays = self._request(await self._model_config(deadline), input_ids, attention_mask, max_new_tokens)
        started = time.monotonic()
        outputs, version = await self._retrying(
            lambda timeout_s: self._transport.infer(self.model, arrays, OUTPUTS, timeout_s), deadline)
        return self._result(outputs, version, time.monotonic() - started)

    async def answer(self, question: str, context: str, max_new_tokens: int | None = None,
                     timeout_s: float | None = None) -> Answer:
        return (await self.answer_batch([(question, context)], max_new_tokens, timeout_s))[0]

    async def answer_batch(self, pairs: list[tuple[str, str]], max_new_tokens: int | None = None,
                           timeout_s: float | None = None, concurrency: int = 4,
                           progress: Progress | None = None) -> list[Answer]:
        """Answers in input order; up to `concurrency` server-sized batches in flight. `timeout_s`
        bounds the whole call (all its batches, retries included), not each batch: past it,
        `RequestTimeout`, and the batches still in flight are cancelled."""
        deadline = Deadline.start(timeout_s, self.timeout_s)
        plan = self.plan_for(await self._model_config(deadline), pairs)
        return await self._answer_plan(plan, max_new_tokens, deadline, concurrency, progress)

    async def answer_plan(self, plan: Plan, max_new_tokens: int | None = None, timeout_s: float | None = None,
                          concurrency: int = 4, progress: Progress | None = None) -> list[Answer]:
        """Answer a `plan_for(...)` plan (all its chunks, `concurrency` in flight, within `timeout_s`)."""
        deadline = Deadline.start(timeout_s, self.timeout_s)
        return await self._answer_plan(plan, max_new_tokens, deadline, concurrency, progress)

    async def _answer_plan(self, plan: Plan, max_new_tokens: int | None, deadline: Deadline, concurrency: int,
                           progress: Progress | None) -> list[Answer]:
        config = await self._model_config(deadline)
        slots = asyncio.Semaphore(max(1, concurrency))

        async def run(chunk: Chunk) -> ChunkResult:
            async with slots:
                result = await self._generate(chunk.input_ids, chunk.attention_mask, max_new_tokens, deadline)
            if progress:
                progress(plan.finish(chunk))
            return result

        tasks = [asyncio.ensure_future(run(chunk)) for chunk in plan.chunks]
        try:
            results = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:  # one failed: do not leave the others running
                task.cancel()
            raise
        return self._answers(config, plan, list(results))
