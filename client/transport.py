"""Calls to Triton over gRPC or HTTP, sync and asyncio; the only module that knows tritonclient.

The rest of the client speaks NumPy arrays and dicts. Every failure leaves here as a
`client.errors` type, so that retry decisions and messages do not depend on the protocol.
One tritonclient connection is kept per transport and reused by every call (HTTP sync keeps
one per distinct timeout: geventhttpclient fixes the network timeout per connection pool).
"""
from __future__ import annotations

import asyncio
import http.client
from typing import Any

import numpy as np

from client.errors import InvalidArgument, InvalidInput, QAError, RequestTimeout, ServerError, ServerUnavailable

PROTOCOLS = ("grpc", "http")
UNAVAILABLE = {"StatusCode.UNAVAILABLE", "503"}
DEADLINE = {"StatusCode.DEADLINE_EXCEEDED", "504"}
INVALID = {"StatusCode.INVALID_ARGUMENT", "400"}
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
        if status in UNAVAILABLE:
            return ServerUnavailable(message, status)
        if status in DEADLINE:
            return RequestTimeout(f"no answer from {url} within the {timeout_s:g} s timeout ({message})", status)
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


def health_report(live: bool, ready: bool, model_ready: bool, metadata: Any, protocol: str) -> dict:
    version = metadata.version if protocol == "grpc" else metadata.get("version", "")
    return {"live": live, "ready": ready, "model_ready": model_ready, "triton_version": str(version)}


class Transport:
    """Blocking calls; the gRPC connection may be shared by threads, the HTTP one may not."""

    def __init__(self, url: str, protocol: str = "grpc"):
        check_protocol(protocol)
        self.url, self.protocol = url, protocol
        self._http: dict[float, Any] = {}
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
            if timeout_s not in self._http:
                self._http[timeout_s] = self.triton.InferenceServerClient(
                    self.url, connection_timeout=timeout_s, network_timeout=timeout_s)
            return getattr(self._http[timeout_s], method)(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - typed below, or re-raised as it was
            typed = as_qa_error(error, self.url, timeout_s)
            if typed is None:
                raise
            raise typed from error

    def infer(self, model: str, arrays: Arrays, outputs: list[str], timeout_s: float) -> tuple[Arrays, str]:
        requested = [self.triton.InferRequestedOutput(name) for name in outputs]
        result = self._call("infer", timeout_s, model, triton_inputs(self.triton, arrays), outputs=requested)
        return parse_result(result, self.protocol, outputs)

    def model_config(self, model: str, timeout_s: float) -> dict:
        extra = {"as_json": True} if self.protocol == "grpc" else {}
        return parse_config(self._call("get_model_config", timeout_s, model, **extra), self.protocol)

    def health(self, model: str, timeout_s: float) -> dict:
        return health_report(self._call("is_server_live", timeout_s), self._call("is_server_ready", timeout_s),
                             self._call("is_model_ready", timeout_s, model),
                             self._call("get_server_metadata", timeout_s), self.protocol)

    def close(self) -> None:
        if self.protocol == "grpc":
            self._grpc.close()
        for client in self._http.values():
            client.close()
        self._http.clear()


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
        result = await self._call("infer", timeout_s, model, triton_inputs(self.triton, arrays), outputs=requested)
        return parse_result(result, self.protocol, outputs)

    async def model_config(self, model: str, timeout_s: float) -> dict:
        extra = {"as_json": True} if self.protocol == "grpc" else {}
        return parse_config(await self._call("get_model_config", timeout_s, model, **extra), self.protocol)

    async def health(self, model: str, timeout_s: float) -> dict:
        return health_report(await self._call("is_server_live", timeout_s),
                             await self._call("is_server_ready", timeout_s),
                             await self._call("is_model_ready", timeout_s, model),
                             await self._call("get_server_metadata", timeout_s), self.protocol)

    async def close(self) -> None:
        await self._client.close()
