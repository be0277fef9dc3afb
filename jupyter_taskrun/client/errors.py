"""Errors raised by the Python clients.

Guarantees:

* Every client error is a ``jupyter_taskrun.errors.TaskRunError`` (so ``except TaskRunError``
  catches domain and client failures alike) and carries a short machine-readable ``reason``.
* ``TaskRunHTTPError``: the server answered, with an error status; ``status``, ``reason`` and
  ``message`` are the server's (see ``_core.http_error`` for how a body maps onto them).
* ``TaskRunConnectionError`` (also a builtin ``ConnectionError``): the server could not be
  reached, or an event stream was lost and not re-established; ``ServerNotFound`` is the
  special case where no server URL was given and none could be discovered.
"""

from __future__ import annotations

from ..errors import TaskRunError

__all__ = ["ServerNotFound", "TaskRunConnectionError", "TaskRunHTTPError"]


class TaskRunHTTPError(TaskRunError):
    """The server answered with an error status (4xx/5xx).

    ``status`` is the HTTP status code, ``reason`` the server's short machine-readable
    reason (e.g. ``"not-found"``, ``"invalid"``), ``message`` its human-readable message,
    ``retry_after`` the ``Retry-After`` header in seconds when sent (queue full).
    """

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        *,
        retry_after: float | None = None,
        url: str | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after = retry_after
        self.url = url

    def __str__(self) -> str:
        return f"HTTP {self.status} ({self.reason}): {self.message}"

    def __repr__(self) -> str:
        return f"TaskRunHTTPError({self.status!r}, {self.reason!r}, {self.message!r})"


class TaskRunConnectionError(TaskRunError, ConnectionError):
    """The server could not be reached (refused, reset, timed out, stream lost for good)."""

    reason = "connection-error"


class ServerNotFound(TaskRunConnectionError):
    """No server URL was given and none could be discovered."""

    reason = "server-not-found"
