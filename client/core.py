"""What the sync and asyncio clients share: settings, request tensors, limits, answers.

Neither does any I/O here; `client.api.QAClient` and `client.aio.AsyncQAClient` add the calls.
"""
from __future__ import annotations

import logging
from functools import cached_property

import numpy as np
from tokenizers import Tokenizer

from client.batching import LONG_CONTEXT_MODES, ChunkResult, Plan
from client.errors import InvalidInput
from client.tokenizer import load_tokenizer
from client.results import Answer
from client.retry import RetryPolicy
from client.transport import check_protocol
from client.windows import DEFAULT_STRIDE
from contract.prompt import PromptEncoder

log = logging.getLogger("client")
DEMO_WARNING = "the server runs a DEMO model with random weights: its answers are meaningless"
OUTPUTS = ["output_ids", "output_lengths", "output_scores"]


def config_parameter(config: dict, key: str, default: str = "") -> str:
    return config.get("parameters", {}).get(key, {}).get("string_value", default)


def is_demo(config: dict) -> bool:
    return config_parameter(config, "demo_model") == "true"


class DemoWarnings(logging.Filter):
    """Holds back the per-answer demo-model warning (counted in `dropped`), for programs that
    answer many questions and print one summary instead (`python -m client batch`, evaluation)."""

    def __init__(self) -> None:
        super().__init__()
        self.dropped = 0

    @classmethod
    def collect(cls) -> "DemoWarnings":
        instance = cls()
        log.addFilter(instance)
        return instance

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage() == DEMO_WARNING:
            self.dropped += 1
            return False
        return True


class ClientCore:
    """Settings of a client, and the request/answer steps around its calls.

    url, protocol        `host:port` of the gRPC (8001) or HTTP (8000) endpoint; "grpc" or "http"
    model                the token-id ensemble to call (default "t5_qa")
    tokenizer            a `tokenizers.Tokenizer`, a tokenizer.json path or a Hub id (`load_tokenizer`)
    timeout_s            default deadline of each call, per call overridable: the whole call (all the
                         chunks of a batch, every retry and backoff); `RequestTimeout` past it
    retry                `RetryPolicy`: attempts and backoff on `ServerUnavailable` only, within timeout_s
    no_answer_threshold  report answers whose score is below it as no answer (None: off)
    long_context         "windows" (answer every window of a long context, keep the best) or
                         "truncate" (cut the context's end, as `PromptEncoder.encode`)
    stride               context tokens shared by consecutive windows
    """

    transport_class: type = object  # set by the sync and asyncio clients

    def __init__(self, url: str = "localhost:8001", protocol: str = "grpc", model: str = "t5_qa",
                 tokenizer: Tokenizer | str | None = None, timeout_s: float = 120.0,
                 retry: RetryPolicy | None = None, no_answer_threshold: float | None = None,
                 long_context: str = "windows", stride: int = DEFAULT_STRIDE):
        check_protocol(protocol)
        if long_context not in LONG_CONTEXT_MODES:
            raise InvalidInput(f"long_context must be one of {LONG_CONTEXT_MODES}, got {long_context!r}")
        if timeout_s <= 0:
            raise InvalidInput(f"timeout_s must be > 0, got {timeout_s}")
        self.url, self.protocol, self.model = url, protocol, model
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self.no_answer_threshold = no_answer_threshold
        self.long_context, self.stride = long_context, stride
        self._tokenizer = tokenizer
        self._transport = self.transport_class(url, protocol)  # one connection, reused by every call

    @cached_property
    def prompts(self) -> PromptEncoder:
        """Loaded on first use (`health` and raw `generate` calls need no tokenizer), with the
        tokenizer's own ids; requests use `prompts_for` the served model."""
        tokenizer = self._tokenizer
        return PromptEncoder.from_tokenizer(tokenizer if isinstance(tokenizer, Tokenizer) else load_tokenizer(tokenizer))

    def prompts_for(self, config: dict) -> PromptEncoder:
        """The prompt encoder with the served model's `</s>`/`<pad>` ids and input limit."""
        parameters = {key: value.get("string_value", "") for key, value in config.get("parameters", {}).items()}
        return self.prompts.served(parameters)

    def _request(self, config: dict, input_ids: np.ndarray, attention_mask: np.ndarray,
                 max_new_tokens: int | None) -> dict[str, np.ndarray]:
        arrays = {"input_ids": np.asarray(input_ids, np.int64), "attention_mask": np.asarray(attention_mask, np.int64)}
        if max_new_tokens is not None:
            cap = int(config_parameter(config, "max_new_tokens_cap", "0"))
            if cap and not 1 <= max_new_tokens <= cap:
                raise InvalidInput(f"max_new_tokens must be between 1 and {cap}, got {max_new_tokens}")
            arrays["max_new_tokens"] = np.full((len(input_ids), 1), max_new_tokens, np.int32)
        return arrays

    def plan_for(self, config: dict, pairs: list[tuple[str, str]]) -> Plan:
        """The prompt windows and server-sized chunks that answering `pairs` sends."""
        batch = int(config.get("max_batch_size", 1)) or 1
        return Plan(self.prompts_for(config), list(pairs), batch, self.long_context, self.stride)

    def _answers(self, config: dict, plan: Plan, results: list[ChunkResult]) -> list[Answer]:
        answers = plan.answers(results, self.no_answer_threshold, is_demo(config))
        if is_demo(config):
            for _ in answers:
                log.warning(DEMO_WARNING)
        return answers

    @staticmethod
    def _result(outputs: dict[str, np.ndarray], version: str, latency_s: float) -> ChunkResult:
        return ChunkResult(*(outputs[name] for name in OUTPUTS), latency_s=latency_s, model_version=version)

    def check(self, question: str, context: str) -> None:
        """Raise `InvalidInput` if this pair cannot be sent with this client's settings."""
        Plan(self.prompts, [(question, context)], 1, self.long_context, self.stride)
