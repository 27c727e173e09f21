"""Typed client errors; each message names the problem."""


class QAError(Exception):
    """Base class of the client's errors."""


class InvalidInput(QAError, ValueError):
    """The question, context or a parameter cannot be sent (empty, too long, out of range)."""


class ServerError(QAError):
    """The server refused or failed the request; `status` is the gRPC/HTTP status it gave."""

    def __init__(self, message: str, status: str | None = None):
        super().__init__(message)
        self.status = status
