"""Typed client errors; each message names the problem.

    QAError
    ├── InvalidInput          refused before sending (empty text, too long, out of range)
    │   └── InvalidArgument   refused by the server (INVALID_ARGUMENT / HTTP 400): never retried
    └── ServerError           the server failed the request; `.status` is what it said
        ├── RequestTimeout    the call ran past its timeout, retries included (also a `TimeoutError`)
        └── ServerUnavailable cannot reach the server, after the retries (also a `ConnectionError`)
"""
from __future__ import annotations

from contract.prompt import InvalidPrompt


class QAError(Exception):
    """Base class of the client's errors."""


class InvalidInput(QAError, InvalidPrompt):
    """The question, context or a parameter cannot be sent (empty, too long, out of range)."""


class ServerError(QAError):
    """The server refused or failed the request; `status` is the gRPC/HTTP status it gave."""

    def __init__(self, message: str, status: str | None = None):
        super().__init__(message)
        self.status = status


class InvalidArgument(ServerError, InvalidInput):
    """The server refused the request as invalid (INVALID_ARGUMENT, HTTP 400). Never retried:
    sending it again cannot succeed."""


class RequestTimeout(ServerError, TimeoutError):
    """The call did not complete within its timeout (DEADLINE_EXCEEDED), retries and backoff
    included. Not retried: the caller's time is spent. `attempts` requests were sent over
    `elapsed_s` seconds of a `timeout_s` limit."""

    def __init__(self, message: str, status: str | None = None, attempts: int = 1, elapsed_s: float = 0.0,
                 timeout_s: float | None = None):
        super().__init__(message, status)
        self.attempts = attempts
        self.elapsed_s = elapsed_s
        self.timeout_s = timeout_s


class ServerUnavailable(ServerError, ConnectionError):
    """The server could not be reached (UNAVAILABLE, connection refused or reset, a gRPC call
    it cancelled while shutting down), also after the bounded retries; `attempts` and
    `elapsed_s` say how hard the client tried."""

    def __init__(self, message: str, status: str | None = None, attempts: int = 1, elapsed_s: float = 0.0):
        super().__init__(message, status)
        self.attempts = attempts
        self.elapsed_s = elapsed_s
