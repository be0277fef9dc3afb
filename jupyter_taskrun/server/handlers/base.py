"""Shared plumbing of the HTTP layer: auth, JSON bodies, query parsing, error mapping."""

from __future__ import annotations

import getpass
import json
import logging
import re
from datetime import datetime, timezone
from typing import Any

from jupyter_core.utils import ensure_async
from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web

from ...errors import (
    ExecutorUnavailable,
    InvalidSubmission,
    QueueFull,
    StoreUnavailable,
    TaskNotFound,
    TaskRunError,
    TaskStateConflict,
    TooManyStreams,
)
from ...models import Task, TaskStatus
from ..service import TaskRun
from ..store import SQLITE_MAX_INT, task_attempt

AUTH_RESOURCE = "taskrun"

_STATUS_BY_ERROR: list[tuple[type[TaskRunError], int]] = [
    (InvalidSubmission, 400),
    (TaskNotFound, 404),
    (TaskStateConflict, 409),
    (QueueFull, 429),
    (TooManyStreams, 429),
    (StoreUnavailable, 503),
    (ExecutorUnavailable, 503),
]


class TaskRunHTTPError(web.HTTPError):
    """An HTTPError carrying the domain reason (and Retry-After) to ``write_error``."""

    def __init__(self, status: int, message: str, reason: str, retry_after: int | None = None):
        super().__init__(status, log_message=message.replace("%", "%%"))
        self.message = message
        self.domain_reason = reason
        self.retry_after = retry_after


_ANON_ID = re.compile(r"^[0-9a-f]{32}$")
_INTEGER = re.compile(r"[+-]?[0-9]+")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def owner_name(user: Any) -> str:
    """The task owner for a server identity.

    With a shared token, jupyter_server makes up a new anonymous user per request
    ("Anonymous Io", a random id); that identity is the one person running the
    server, so tasks are owned by the server's OS user. Real identities
    (JupyterHub, custom identity providers) are used as they are.
    """
    username = getattr(user, "username", None) or ""
    name = getattr(user, "name", None) or ""
    if isinstance(name, str) and name.startswith("Anonymous ") and _ANON_ID.match(username):
        return getpass.getuser()
    return username or str(user or "")


_SECRET_QUERY = re.compile(r"(?i)([?&][^=&]*(?:token|xsrf|password|secret)[^=&]*=)[^&]*")


def scrub_uri(uri: str) -> str:
    """A request URI fit for a log: the values of token-like query parameters replaced."""
    return _SECRET_QUERY.sub(r"\1[secret]", uri or "")


def scrubbed_summary(handler: web.RequestHandler) -> str:
    """tornado's ``_request_summary`` without secrets (it logs the full URI, ``?token=`` included)."""
    return f"{handler.request.method} {scrub_uri(handler.request.uri or '')} ({handler.request.remote_ip})"


def log_refusal(handler: web.RequestHandler, value: BaseException | None) -> bool:
    """Log an expected refusal (a domain error or an HTTP 4xx) without traceback.

    A 4xx gets one line in the server log, jupyter_server's access line (WARNING, "404 GET
    /taskrun/api/tasks/... (user@ip)"); its message goes to the client, and to the log at DEBUG.
    A refused 5xx (503: the store is busy) logs its message at WARNING beside the access line.
    Returns False for anything else (a real bug), which the caller logs with its traceback.
    """
    if isinstance(value, TaskRunError):
        value = http_error(value)
    if isinstance(value, web.HTTPError) and value.status_code < 500 or isinstance(value, TaskRunHTTPError):
        message = getattr(value, "message", None) or value.log_message or value.reason or ""
        if value.args[1:] and value.log_message and not isinstance(value, TaskRunHTTPError):
            try:
                message = value.log_message % value.args[1:]
            except (TypeError, ValueError):
                pass
        log = getattr(handler, "log", None) or logging.getLogger("jupyter_taskrun")
        level = logging.DEBUG if value.status_code < 500 else logging.WARNING
        log.log(level, "taskrun: %s %s -> %d %s", handler.request.method, handler.request.path, value.status_code, message)
        return True
    return False


def query_time(raw: str | None, name: str) -> float | None:
    """An ISO 8601 time from a query (``2026-05-01T12:00:00Z``, a date, an offset; no zone: UTC)
    as epoch seconds; None when absent; 400 when it is not one."""
    if raw is None:
        return None
    try:
        if not raw.isascii() or not raw[:4].isdigit():
            raise ValueError
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise TaskRunHTTPError(400, f"'{name}' must be an ISO 8601 time such as 2026-05-01T12:00:00Z", "invalid") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def http_error(e: TaskRunError) -> TaskRunHTTPError:
    status = next((code for cls, code in _STATUS_BY_ERROR if isinstance(e, cls)), 500)
    return TaskRunHTTPError(status, str(e), e.reason, getattr(e, "retry_after", None))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def write_json_error(handler: web.RequestHandler, status_code: int, exc: BaseException | None) -> bool:
    """Answer an HTTP error as ``{"message", "reason"}`` JSON; False if ``exc`` is no HTTP error."""
    if isinstance(exc, TaskRunError):  # tornado passes the original exception along
        exc = http_error(exc)
    if isinstance(exc, TaskRunHTTPError):
        handler.set_header("Content-Type", "application/json")
        if exc.retry_after is not None:
            handler.set_header("Retry-After", str(exc.retry_after))
        handler.finish(json.dumps({"message": exc.message, "reason": exc.domain_reason}))
        return True
    if isinstance(exc, web.HTTPError):
        handler.set_header("Content-Type", "application/json")
        reason = {400: "invalid", 403: "forbidden", 404: "not-found", 405: "method-not-allowed"}.get(status_code, "error")
        message = exc.log_message or exc.reason or handler._reason
        if exc.args[1:] and exc.log_message:
            message = exc.log_message % exc.args[1:]
        handler.finish(json.dumps({"message": message, "reason": reason}))
        return True
    return False


@web.stream_request_body
class TaskRunHandler(ExtensionHandlerMixin, APIHandler):
    """Base of every taskrun REST handler: authenticated, JSON errors ``{"message", "reason"}``.

    Bodies are streamed (``@stream_request_body``) so that an oversized upload is
    refused from its headers, before tornado buffers up to ``ServerApp.max_body_size``.
    """

    auth_resource = AUTH_RESOURCE
    _body_parts: list[bytes]
    _body_size = 0

    @property
    def taskrun(self) -> TaskRun:
        return self.settings["taskrun"]

    async def prepare(self) -> None:  # type: ignore[override]  # as APIHandler.prepare
        await super().prepare()
        self._body_parts = []
        limit = self.taskrun.max_request_bytes
        length = self.request.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > limit:
            raise TaskRunHTTPError(413, f"request body larger than {limit} bytes", "too-large")
        await self.taskrun.start()

    def data_received(self, chunk: bytes) -> None:
        # chunked uploads have no Content-Length: count as they come, keep nothing past the limit
        self._body_size += len(chunk)
        if self._body_size <= self.taskrun.max_request_bytes:
            self._body_parts.append(chunk)
        else:
            self._body_parts = []

    @property
    def body(self) -> bytes:
        limit = self.taskrun.max_request_bytes
        if self._body_size > limit:
            raise TaskRunHTTPError(413, f"request body larger than {limit} bytes", "too-large")
        return b"".join(getattr(self, "_body_parts", ()))

    def _handle_request_exception(self, e: BaseException) -> None:
        if isinstance(e, TaskRunError):
            e = http_error(e)
        super()._handle_request_exception(e)  # type: ignore[arg-type]

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        # tornado's tracebacked "Uncaught exception" is for bugs, not for refusals
        if log_refusal(self, value):
            return
        self.log.error("taskrun: uncaught exception %s", scrubbed_summary(self), exc_info=(typ, value, tb))

    def _request_summary(self) -> str:
        return scrubbed_summary(self)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if not write_json_error(self, status_code, kwargs.get("exc_info", (None, None, None))[1]):
            super().write_error(status_code, **kwargs)

    # -- input -------------------------------------------------------------

    def json_body(self) -> Any:
        """The body as JSON without NaN/Infinity and with bounded nesting.

        Lone surrogates ('\ud800' escapes) and non-finite numbers inside fields are refused
        by ``TaskSubmission.from_dict``, which checks every field a body can carry.
        """
        body = self.body
        if not body:
            raise TaskRunHTTPError(400, "the request body must be JSON", "invalid")
        try:
            return json.loads(body, parse_constant=_reject_constant)
        except RecursionError:
            raise TaskRunHTTPError(400, "malformed JSON: nested too deeply", "invalid") from None
        except (ValueError, UnicodeDecodeError) as e:
            raise TaskRunHTTPError(400, f"malformed JSON: {e}", "invalid") from None

    def query(self, name: str, default: str | None = None) -> str | None:
        """A query value exactly as sent: tornado's default strip would turn '\x85' (a Python space) into ''.
        Given twice, it is refused: which one was meant is not ours to guess."""
        if len(self.request.query_arguments.get(name, ())) > 1:
            raise TaskRunHTTPError(400, f"query parameter '{name}' is given more than once", "invalid")
        return self.get_query_argument(name, default, strip=False)

    def query_number(
        self, name: str, default: float | None = None, *, minimum: float = 0, maximum: float | None = None, integer: bool = False
    ) -> Any:
        raw = self.query(name)
        if raw is None:
            return default
        # plain ASCII numerals only (int()/float() also take spaces, '_', 'inf', other scripts' digits)
        if not (_INTEGER if integer else _NUMBER).fullmatch(raw):
            raise TaskRunHTTPError(400, f"'{name}' must be a {'whole ' if integer else ''}number", "invalid")
        value: float = int(raw) if integer else float(raw)
        if value != value or value < minimum or (maximum is not None and value > maximum):
            bound = f" and {maximum:g}" if maximum is not None else ""
            raise TaskRunHTTPError(400, f"'{name}' must be between {minimum:g}{bound}", "invalid")
        return value

    def last_event_id(self) -> int:
        """Resume point: the ``Last-Event-ID`` header (SSE reconnect) or ``?after=N``."""
        header = self.request.headers.get("Last-Event-ID")
        if header is not None and header.strip() != "":
            try:
                value = int(header) if header.strip().isascii() and header.strip().isdigit() else -1
                if not 0 <= value <= SQLITE_MAX_INT:
                    raise ValueError
            except ValueError:
                raise TaskRunHTTPError(400, "Last-Event-ID must be a non-negative 64-bit integer", "invalid") from None
            return value
        return int(self.query_number("after", 0, integer=True, maximum=SQLITE_MAX_INT))

    # -- identity and visibility -------------------------------------------

    @property
    def username(self) -> str:
        return owner_name(self.current_user)

    async def sees_all(self) -> bool:
        """May this user see and control every user's tasks (not only their own)?"""
        # Authorizer.is_authorized may be sync or async (jupyter_server allows both)
        return bool(await ensure_async(self.authorizer.is_authorized(self, self.current_user, "read", "taskrun:all")))

    async def visible_task(self, task_id: str) -> Task:
        task = self.taskrun.get(task_id)
        if task.owner and task.owner != self.username and not await self.sees_all():
            raise TaskNotFound(f"no task with id {task_id!r}")
        return task

    def task_json(self, task: Task) -> dict[str, Any]:
        data = task.to_dict()
        data.setdefault("attempt", task_attempt(task))  # until models.Task.to_dict carries it
        if task.status == TaskStatus.QUEUED:
            # a user sees their place among their own queued tasks, not how busy others are;
            # someone else's task is only visible to an admin (taskrun:all), who sees the whole queue
            scope = self.username if task.owner == self.username else None
            data["queue_position"] = self.taskrun.queue_position_for(task.id, scope)
        return data

    def write_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data, default=str))
