"""asyncio API of the client: `AsyncQAClient`, the twin of `client.api.QAClient` (same
settings, answers, errors and retries) over `tritonclient.grpc.aio` / `tritonclient.http.aio`.
`answer_batch` keeps up to `concurrency` server-sized batches in flight.

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
from client.errors import QAError, ServerUnavailable
from client.results import Answer
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

    async def _retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        attempts = self.retry.start(self.url)
        while True:
            try:
                return await call()
            except ServerUnavailable as error:
                await asyncio.sleep(attempts.backoff(error))

    async def model_config(self) -> dict:
        """The served model's config, read once."""
        if self._config is None:
            self._config = await self._retrying(lambda: self._transport.model_config(self.model, self.timeout_s))
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
        result = await self._generate(input_ids, attention_mask, max_new_tokens, timeout_s)
        return result.ids, result.lengths, result.scores

    async def _generate(self, input_ids: np.ndarray, attention_mask: np.ndarray, max_new_tokens: int | None,
                        timeout_s: float | None) -> ChunkResult:
        arrays = self._request(await self.model_config(), input_ids, attention_mask, max_new_tokens)
        started = time.monotonic()
        outputs, version = await self._retrying(lambda: self._transport.infer(
            self.model, arrays, OUTPUTS, timeout_s or self.timeout_s))
        return self._result(outputs, version, time.monotonic() - started)

    async def answer(self, question: str, context: str, max_new_tokens: int | None = None,
                     timeout_s: float | None = None) -> Answer:
        return (await self.answer_batch([(question, context)], max_new_tokens, timeout_s))[0]

    async def answer_batch(self, pairs: list[tuple[str, str]], max_new_tokens: int | None = None,
                           timeout_s: float | None = None, concurrency: int = 4,
                           progress: Progress | None = None) -> list[Answer]:
        """Answers in input order; up to `concurrency` server-sized batches in flight."""
        plan = self.plan_for(await self.model_config(), pairs)
        return await self.answer_plan(plan, max_new_tokens, timeout_s, concurrency, progress)

    async def answer_plan(self, plan: Plan, max_new_tokens: int | None = None, timeout_s: float | None = None,
                          concurrency: int = 4, progress: Progress | None = None) -> list[Answer]:
        """Answer a `plan_for(...)` plan (all its chunks, `concurrency` in flight)."""
        config = await self.model_config()
        slots = asyncio.Semaphore(max(1, concurrency))

        async def run(chunk: Chunk) -> ChunkResult:
            async with slots:
                result = await self._generate(chunk.input_ids, chunk.attention_mask, max_new_tokens, timeout_s)
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
