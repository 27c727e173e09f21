"""Calls to Triton over gRPC or HTTP, sync and asyncio; the only module that knows tritonclient.

The rest of the client speaks NumPy arrays and dicts. Every failure leaves here as a
`client.errors` type, so that retry decisions and messages do not depend on the protocol.
One tritonclient connection is kept per transport and reused by every call.

Deadlines. Each call gets `timeout_s`: the time its caller has left (`client.retry.Deadline`:
for an inference, what remains of the whole client call when this attempt starts). It bounds
the wait here, and it is sent to the server; what Triton 2.51 does with it (checked with
python-backend models and ensembles on the CPU tritonserver of nvidia-pytriton 0.7.0):

* gRPC: `client_timeout=timeout_s`, the call's gRPC deadline (the `grpc-timeout` header).
  Past it the client gets DEADLINE_EXCEEDED at once, and Triton's gRPC frontend sees the call
  cancelled and cancels the inference request (`TRITONSERVER_InferenceRequestCancel`):
  - a model called directly: its Python backend's `request.is_cancelled()` turns true within
    milliseconds, whether the request runs or waits in the dynamic batcher's queue;
  - the `t5_qa` ensemble: only the top-level request is cancelled. The step already queued or
    running (`t5_encoder`, `t5_greedy`) is a request of its own and never sees it
    (`is_cancelled()` stays false; it runs to the end). Triton checks the ensemble request
    between steps: a step scheduled after the deadline is created cancelled; a step with
    dynamic batching (`t5_encoder` on GPU targets) is then dropped before its backend sees it, a
    step without (`t5_validate`, `t5_greedy`) reaches `execute` with `is_cancelled()` true.
* HTTP: no deadline propagation. Past `timeout_s` the client closes the connection; Triton's
  HTTP frontend does not cancel anything: the request runs to the end and its answer is
  dropped.
* Both: inference requests carry Triton's `timeout` parameter, `timeout_s` in microseconds.
  The ensemble copies it to every step, where a Python model reads it as `request.timeout()`
  (over gRPC and HTTP alike): counted from when the step received it, it is a deadline the
  server can enforce that is never earlier than the client's. Triton's own scheduling uses it
  only in a dynamic batcher with a queue policy that has `allow_timeout_override: true` and a
  larger nonzero `default_timeout_microseconds` (the time a request may wait in that queue;
  `REJECT` answers UNAVAILABLE "Request timeout expired", which is a `RequestTimeout` here).
  The served configs set no queue policy, so today it changes no scheduling.

Caution: very short gRPC deadlines (a few milliseconds) under concurrent load crashed Triton
24.08's gRPC frontend (triton-inference-server/server#7368, fixed by #7840 in 24.12); 2.51 is
24.10, in between, and was not tried that way here: keep production timeouts far above that.
"""
from __future__ import annotations

import asyncio
import http.client
import time
from typing import Any, Callable

import numpy as np

from client.errors import InvalidArgument, InvalidInput, QAError, RequestTimeout, ServerError, ServerUnavailable

PROTOCOLS = ("grpc", "http")
UNAVAILABLE = {"StatusCode.UNAVAILABLE", "503"}
DEADLINE = {"StatusCode.DEADLINE_EXCEEDED", "504"}
INVALID = {"StatusCode.INVALID_ARGUMENT", "400"}
# The client never cancels a gRPC call itself (a cancelled asyncio task raises CancelledError,
# not a status), so CANCELLED comes from the server: gRPC core ends calls that no handler has
# taken yet with CANCELLED when the server shuts down (grpc/grpc#41785; seen under load at
# Triton's SIGTERM). Never run, so as safe to retry as UNAVAILABLE.
SERVER_CANCELLED = {"StatusCode.CANCELLED"}
QUEUE_TIMEOUT = "Request timeout expired"  # Triton's queue policy rejected a request past its `timeout`
HTTP_SOCKET_TIMEOUT_S = 3600.0  # a backstop only: each sync HTTP call is bounded by a gevent.Timeout
Arrays = dict[str, np.ndarray]


def check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise InvalidInput(f"protocol must be 'grpc' or 'http', got {protocol!r}")


def grpc_channel_args() -> list[tuple[str, int]]:
    """tritonclient's default channel arguments, plus a reconnect backoff capped at 1 s (gRPC's
    default grows to 120 s), so that the channel finds a restarted server while the client's
    own bounded retries are still trying."""
    from tritonclient.grpc import KeepAliveOptions

    keepalive, largest = KeepAliveOptions(), 2**31 - 1
    return [("grpc.max_send_message_length", largest), ("grpc.max_receive_message_length", largest),
            ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
            ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
            ("grpc.keepalive_permit_without_calls", keepalive.keepalive_permit_without_calls),
            ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
            ("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000)]


def as_qa_error(error: BaseException, url: str, timeout_s: float) -> QAError | None:
    """The typed error for a failed call, or None for an error that is not the server's."""
    from tritonclient.utils import InferenceServerException

    if isinstance(error, QAError):
        return error
    if isinstance(error, InferenceServerException):
        status, message = str(error.status()), error.message() or ""
        if status in DEADLINE or (status in UNAVAILABLE and QUEUE_TIMEOUT in message):
            return RequestTimeout(f"no answer from {url} within the {timeout_s:g} s timeout ({message})", status)
        if status in UNAVAILABLE:
            return ServerUnavailable(message, status)
        if status in SERVER_CANCELLED:
            return ServerUnavailable(f"{url} cancelled the call without answering, as a gRPC server shutting down "
                                     f"does ({message})", status)
        if status in INVALID:
            return InvalidArgument(message, status)
        return ServerError(message, status)
    if isinstance(error, TimeoutError):  # socket, gevent and asyncio timeouts
        return RequestTimeout(f"no answer from {url} within the {timeout_s:g} s timeout", "timeout")
    if isinstance(error, http.client.HTTPException):  # geventhttpclient: connection closed mid-request
        return ServerUnavailable(f"connection closed by the server: {error or type(error).__name__}", "connection")
    if isinstance(error, OSError) or type(error).__module__.startswith("aiohttp"):
        return ServerUnavailable(f"cannot connect: {error or type(error).__name__}", "connection")
    return None


def timeout_us(timeout_s: float) -> int:
    """Triton's per-request `timeout` parameter: microseconds, at least 1 (0 would mean none)."""
    return max(1, int(timeout_s * 1e6))


def triton_inputs(triton: Any, arrays: Arrays) -> list:
    from tritonclient.utils import np_to_triton_dtype

    inputs = []
    for name, value in arrays.items():
        tensor = triton.InferInput(name, list(value.shape), np_to_triton_dtype(value.dtype))
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    return inputs


def parse_result(result: Any, protocol: str, outputs: list[str]) -> tuple[Arrays, str]:
    response = result.get_response()
    version = response.model_version if protocol == "grpc" else response.get("model_version", "")
    return {name: result.as_numpy(name) for name in outputs}, str(version)


def parse_config(raw: dict, protocol: str) -> dict:
    return raw["config"] if protocol == "grpc" else raw


def time_left(url: str, timeout_s: float) -> Callable[[], float]:
    """For calls made one after the other within `timeout_s` from now: the seconds left, or
    `RequestTimeout` once none are."""
    end = time.monotonic() + timeout_s

    def left() -> float:
        remaining = end - time.monotonic()
        if remaining <= 0:
            raise RequestTimeout(f"no answer from {url} within the {timeout_s:g} s timeout", "deadline")
        return remaining
    return left


def health_report(live: bool, ready: bool, model_ready: bool, metadata: Any, protocol: str) -> dict:
    version = metadata.version if protocol == "grpc" else metadata.get("version", "")
    return {"live": live, "ready": ready, "model_ready": model_ready, "triton_version": str(version)}


class Transport:
    """Blocking calls; the gRPC connection may be shared by threads, the HTTP one may not."""

    def __init__(self, url: str, protocol: str = "grpc"):
        check_protocol(protocol)
        self.url, self.protocol = url, protocol
        self._http: Any = None  # made on first use, and again after a call timed out
        if protocol == "grpc":
            import tritonclient.grpc as triton

            self._grpc = triton.InferenceServerClient(url, channel_args=grpc_channel_args())
        else:
            import tritonclient.http as triton
        self.triton = triton

    def _call(self, method: str, timeout_s: float, *args: Any, **kwargs: Any) -> Any:
        try:
            if self.protocol == "grpc":
                return getattr(self._grpc, method)(*args, client_timeout=timeout_s, **kwargs)
            return self._http_call(method, timeout_s, *args, **kwargs)
        except Exception as error:  # noqa: BLE001 - typed below, or re-raised as it was
            typed = as_qa_error(error, self.url, timeout_s)
            if typed is None:
                raise
            raise typed from error

    def _http_call(self, method: str, timeout_s: float, *args: Any, **kwargs: Any) -> Any:
        """geventhttpclient fixes socket timeouts per connection pool, and they bound each
        socket operation, not the call: a gevent.Timeout bounds the whole call (connect, send,
        wait, read) instead. After one fired, the connection may hold half an answer: it is
        closed, and the next call opens a new one."""
        import gevent

        if self._http is None:
            self._http = self.triton.InferenceServerClient(
                self.url, connection_timeout=HTTP_SOCKET_TIMEOUT_S, network_timeout=HTTP_SOCKET_TIMEOUT_S)
        timer = gevent.Timeout(timeout_s)
        timer.start()
        try:
            return getattr(self._http, method)(*args, **kwargs)
        except gevent.Timeout as fired:
            if fired is not timer:
                raise
            self._close_http()
            raise TimeoutError(f"no answer within {timeout_s:g} s") from None
        except TimeoutError:
            self._close_http()
            raise
        finally:
            timer.close()

    def _close_http(self) -> None:
        if self._http is not None:
            client, self._http = self._http, None
            client.close()

    def infer(self, model: str, arrays: Arrays, outputs: list[str], timeout_s: float) -> tuple[Arrays, str]:
        requested = [self.triton.InferRequestedOutput(name) for name in outputs]
        result = self._call("infer", timeout_s, model, triton_inputs(self.triton, arrays), outputs=requested,
                            timeout=timeout_us(timeout_s))
        return parse_result(result, self.protocol, outputs)

    def model_config(self, model: str, timeout_s: float) -> dict:
        extra = {"as_json": True} if self.protocol == "grpc" else {}
        return parse_config(self._call("get_model_config", timeout_s, model, **extra), self.protocol)

    def health(self, model: str, timeout_s: float) -> dict:
        left = time_left(self.url, timeout_s)  # the four calls together
        return health_report(self._call("is_server_live", left()), self._call("is_server_ready", left()),
                             self._call("is_model_ready", left(), model),
                             self._call("get_server_metadata", left()), self.protocol)

    def close(self) -> None:
        if self.protocol == "grpc":
            self._grpc.close()
        self._close_http()


class AsyncTransport:
    """asyncio calls (`tritonclient.grpc.aio` / `tritonclient.http.aio`), one connection."""

    def __init__(self, url: str, protocol: str = "grpc"):
        check_protocol(protocol)
        self.url, self.protocol = url, protocol
        if protocol == "grpc":
            import tritonclient.grpc.aio as triton

            self._client = triton.InferenceServerClient(url, channel_args=grpc_channel_args())
        else:
            import tritonclient.http.aio as triton

            self._client = triton.InferenceServerClient(url, conn_timeout=None)  # bounded per call below
        self.triton = triton

    async def _call(self, method: str, timeout_s: float, *args: Any, **kwargs: Any) -> Any:
        try:
            if self.protocol == "grpc":
                return await getattr(self._client, method)(*args, client_timeout=timeout_s, **kwargs)
            return await asyncio.wait_for(getattr(self._client, method)(*args, **kwargs), timeout_s)
        except Exception as error:  # noqa: BLE001 - typed below, or re-raised as it was
            typed = as_qa_error(error, self.url, timeout_s)
            if typed is None:
                raise
            raise typed from error

    async def infer(self, model: str, arrays: Arrays, outputs: list[str], timeout_s: float) -> tuple[Arrays, str]:
        requested = [self.triton.InferRequestedOutput(name) for name in outputs]
        result = await self._call("infer", timeout_s, model, triton_inputs(self.triton, arrays), outputs=requested,
                                  timeout=timeout_us(timeout_s))
        return parse_result(result, self.protocol, outputs)

    async def model_config(self, model: str, timeout_s: float) -> dict:
        extra = {"as_json": True} if self.protocol == "grpc" else {}
        return parse_config(await self._call("get_model_config", timeout_s, model, **extra), self.protocol)

    async def health(self, model: str, timeout_s: float) -> dict:
        left = time_left(self.url, timeout_s)  # the four calls together
        return health_report(await self._call("is_server_live", left()),
                             await self._call("is_server_ready", left()),
                             await self._call("is_model_ready", left(), model),
                             await self._call("get_server_metadata", left()), self.protocol)

    async def close(self) -> None:
        await self._client.close()
