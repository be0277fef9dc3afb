"""Typed errors of the domain layer.

The domain (store, queue, executors, service) raises these; only the HTTP
handlers translate them into status codes (see ``handlers/base.py``).
"""

from __future__ import annotations


class TaskRunError(Exception):
    """Base class of every jupyter_taskrun domain error."""

    #: short machine-readable reason, sent to clients as ``reason``
    reason = "error"


class InvalidSubmission(TaskRunError):
    """A submission (or query) is malformed: wrong field, type or value."""

    reason = "invalid"


class PathNotAllowed(InvalidSubmission):
    """A path points outside the server root (or through a symlink out of it)."""

    reason = "path-not-allowed"


class PathNotFound(InvalidSubmission):
    """A path names no file or folder under the server root."""

    reason = "path-not-found"


class UnknownKernel(InvalidSubmission):
    """The requested kernel name has no kernelspec."""

    reason = "unknown-kernel"


class TaskNotFound(TaskRunError):
    """No task has that id (or the caller may not see it)."""

    reason = "not-found"


class ScheduleNotFound(TaskNotFound):
    """No schedule has that id (or the caller may not see it)."""


class TaskStateConflict(TaskRunError):
    """The task's status does not allow the operation (e.g. deleting a running task)."""

    reason = "conflict"


class VariableNotReady(TaskStateConflict):
    """A task's variables are asked for before it has ended (``variables_out``)."""

    reason = "not-ready"


class VariableUnavailable(TaskStateConflict):
    """A requested variable came back with an error instead of bytes (missing, unpicklable, over a cap)."""

    reason = "variable-error"


class InvalidTransition(TaskStateConflict):
    """A status transition that the task state machine forbids."""

    reason = "invalid-transition"


class QueueFull(TaskRunError):
    """The bounded queue is full; the caller should retry later."""

    reason = "queue-full"

    def __init__(self, message: str, retry_after: int = 5):
        super().__init__(message)
        self.retry_after = retry_after


class TooManyStreams(TaskRunError):
    """The user already holds the maximum number of live event streams."""

    reason = "too-many-streams"

    def __init__(self, message: str, retry_after: int = 5):
        super().__init__(message)
        self.retry_after = retry_after


class StoreUnavailable(TaskRunError):
    """The SQLite store failed (locked, disk error); nothing was written."""

    reason = "store-unavailable"


class StoreBusy(StoreUnavailable):
    """Another connection holds the SQLite write lock; trying again later may work."""

    def __init__(self, message: str, retry_after: int = 1):
        super().__init__(message)
        self.retry_after = retry_after


class ExecutorUnavailable(TaskRunError):
    """The executor cannot run tasks now (e.g. the Dask scheduler is unreachable)."""

    reason = "executor-unavailable"
