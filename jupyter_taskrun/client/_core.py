"""What the sync and async clients share: the API's calls, request building, response mapping.

Each public method of ``TaskRunClient`` / ``AsyncTaskRunClient`` is one line: it describes its call
with an ``Api`` builder (``ApiCall``: method, path, query, JSON body, extra time-out, how to read the
answer) and hands it to its own transport. So paths, parameters, bodies and result extraction exist
once, and the two clients differ only in how bytes move.

Guarantees:

* request URLs are ``<server>/taskrun/api/<path>``; task and schedule ids are percent-encoded as one
  path segment (an empty or non-string id is a ``ValueError`` before any request); ``None`` query values
  are dropped, booleans become ``true``/``false``, lists (several statuses) become comma lists;
* every request carries ``Accept``, ``User-Agent`` and, when there is a token,
  ``Authorization: token …``; ``POST``s without a body send an empty one;
* an error status becomes ``TaskRunHTTPError`` with the server's JSON ``reason``/``message`` (plain
  text: its first line; an HTML page: the status phrase) and ``Retry-After`` in seconds.
"""

from __future__ import annotations

import http.client
import json
import os
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..models import TaskStatus
from .discovery import discover_server, matching_server
from .errors import TaskRunHTTPError
from .sse import StreamState

API_PREFIX = "taskrun/api/"


# ---------------------------------------------------------------------------
# Responses
# ---------------------------------------------------------------------------


def http_error(status: int, payload: bytes, headers: Any, url: str | None = None) -> TaskRunHTTPError:
    """Build a TaskRunHTTPError from the server's JSON ``{"message", "reason"}`` body."""
    phrase = http.client.responses.get(status, "HTTP error")
    reason, message = "", ""
    text = payload.decode("utf-8", errors="replace").strip() if payload else ""
    try:
        doc = json.loads(text) if text else None
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        message = str(doc.get("message") or "")
        reason = str(doc.get("reason") or "")
    elif text and not text.lstrip().startswith("<"):  # plain text, not an HTML error page
        message = text.splitlines()[0][:500]
    retry_after = None
    raw_retry = headers.get("Retry-After") if headers is not None else None
    if raw_retry:
        try:
            retry_after = float(raw_retry)
        except ValueError:
            retry_after = None
    return TaskRunHTTPError(status, reason or phrase, message or phrase, retry_after=retry_after, url=url)


def not_an_event_stream(status: int, ctype: str) -> TaskRunHTTPError:
    """A stream request answered with something else than an event stream (e.g. a proxy's page)."""
    return TaskRunHTTPError(status, "not-an-event-stream", f"expected text/event-stream, got {ctype or 'nothing'}")


def json_result(payload: bytes) -> Any:
    """The JSON body (None when empty)."""
    if not payload:
        return None
    return json.loads(payload.decode("utf-8"))


def json_field(name: str) -> Callable[[bytes], Any]:
    """Reads one field of the JSON body (``{"tasks": [...]}`` → the list)."""
    return lambda payload: json_result(payload)[name]


def raw_result(payload: bytes) -> bytes:
    return payload


def text_result(payload: bytes) -> str:
    return payload.decode("utf-8", errors="replace")


def no_result(payload: bytes) -> None:
    return None


def notebook_result(payload: bytes) -> dict[str, Any]:
    """The downloaded notebook; the headers (a ``Content-Disposition`` with the task's name) are not needed."""
    return json.loads(payload.decode("utf-8"))


def is_terminal(task: dict[str, Any]) -> bool:
    try:
        return TaskStatus(task.get("status")).is_terminal
    except ValueError:
        return False


# ---------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------


def clean_params(params: dict[str, Any] | None) -> dict[str, Any]:
    """Query parameters as the API reads them (see the module docstring)."""
    out = {}
    for key, value in (params or {}).items():
        if value is None:
            continue
        if isinstance(value, TaskStatus):
            value = value.value
        elif isinstance(value, (list, tuple, set, frozenset)):  # e.g. several statuses
            value = ",".join(str(v.value if isinstance(v, TaskStatus) else v) for v in value)
        elif isinstance(value, bool):
            value = "true" if value else "false"
        out[key] = value
    return out


def submission(code: str | None, cells: Any, path: Any, notebook: Any, options: dict[str, Any]) -> dict[str, Any]:
    """The JSON body of one submission (``None`` options left out, ``tags`` always a list)."""
    body: dict[str, Any] = {}
    if code is not None:
        body["code"] = code
    if cells is not None:
        body["cells"] = list(cells)
    if path is not None:
        body["path"] = os.fspath(path).replace(os.sep, "/")
    if notebook is not None:
        body["notebook"] = notebook
    for key, value in options.items():
        if value is None:
            continue
        if key == "tags" and isinstance(value, str):
            value = [value]
        elif key == "tags":
            value = list(value)
        body[key] = value
    return body


@dataclass(frozen=True)
class ApiCall:
    """One API request, independent of the transport that will send it."""

    method: str
    path: str
    params: dict[str, Any] | None = None
    #: JSON-encodable body, or None for none
    body: Any = None
    #: seconds added to the request time-out (a submission that waits for the task)
    extra_timeout: float = 0.0
    #: turns the response body into the method's result
    result: Callable[[bytes], Any] = field(default=json_result)


def task_path(task_id: str, suffix: str = "") -> str:
    if not isinstance(task_id, str) or not task_id:
        raise ValueError("a task id must be a non-empty string")
    return "tasks/" + urllib.parse.quote(task_id, safe="") + suffix


def schedule_path(schedule_id: str, suffix: str = "") -> str:
    if not isinstance(schedule_id, str) or not schedule_id:
        raise ValueError("a schedule id must be a non-empty string")
    return "schedules/" + urllib.parse.quote(schedule_id, safe="") + suffix


def schedule_body(task: dict[str, Any], cron: str, name: str | None, timezone: str | None, options: dict[str, Any]) -> dict[str, Any]:
    """The JSON body of ``POST /schedules``: the task as one submission (``None`` options left out,
    a ``path`` made a string), the schedule's own fields without the ``None`` ones."""
    if not isinstance(task, dict):
        raise TypeError("task must be a submission dict, e.g. {'code': 'print(1)'} or {'path': 'nightly.ipynb'}")
    fields = dict(task)
    path = fields.pop("path", None)
    body: dict[str, Any] = {"task": submission(None, None, path, None, fields), "cron": cron}
    body.update({key: value for key, value in {"name": name, "timezone": timezone, **options}.items() if value is not None})
    return body


def batch_entries(submissions: Any) -> list[dict[str, Any]]:
    """A batch's entries: a list as given, or ``{key: submission}`` with each entry's ``key`` set."""
    if isinstance(submissions, dict):
        return [{**sub, "key": key} for key, sub in submissions.items()]
    return list(submissions)


def keyed(submissions: Any, tasks: list[dict[str, Any]]) -> Any:
    """The created tasks as ``submit_batch`` returns them: by key when given by key, else a list."""
    return dict(zip(submissions, tasks)) if isinstance(submissions, dict) else tasks


class Api:
    """The API's calls (documented on ``TaskRunClient``)."""

    @staticmethod
    def submit(code, cells, path, notebook, wait: float | None, options: dict[str, Any]) -> ApiCall:
        body = submission(code, cells, path, notebook, options)
        return ApiCall("POST", "tasks", {"wait": wait}, body, float(wait) if wait else 0.0)

    @staticmethod
    def submit_batch(submissions: Any) -> ApiCall:
        return ApiCall("POST", "tasks/batch", body={"tasks": batch_entries(submissions)}, result=json_field("tasks"))

    @staticmethod
    def attempts(task_id: str) -> ApiCall:
        return ApiCall("GET", task_path(task_id, "/attempts"), result=json_field("attempts"))

    @staticmethod
    def dependencies(task_id: str) -> ApiCall:
        return ApiCall("GET", task_path(task_id, "/dependencies"))

    @staticmethod
    def get(task_id: str) -> ApiCall:
        return ApiCall("GET", task_path(task_id))

    @staticmethod
    def list_tasks(status, tag, owner, name, limit, cursor, schedule=None, sort=None, where=None) -> ApiCall:
        params = {"status": status, "tag": tag, "owner": owner, "name": name, "limit": limit, "cursor": cursor, "schedule": schedule}
        if isinstance(where, (list, tuple)):  # several conditions: all must hold
            where = ",".join(where)
        return ApiCall("GET", "tasks", {**params, "sort": sort, "where": where})

    @staticmethod
    def cancel(task_id: str, cascade: bool = False) -> ApiCall:
        return ApiCall("POST", task_path(task_id, "/cancel"), {"cascade": 1 if cascade else None})

    @staticmethod
    def rerun(task_id: str) -> ApiCall:
        return ApiCall("POST", task_path(task_id, "/rerun"))

    @staticmethod
    def delete(task_id: str) -> ApiCall:
        return ApiCall("DELETE", task_path(task_id), result=no_result)

    @staticmethod
    def logs(task_id: str, stream: str | None, offset: int, *, text: bool) -> ApiCall:
        params = {"stream": stream, "offset": offset or None}
        return ApiCall("GET", task_path(task_id, "/logs"), params, result=text_result if text else raw_result)

    @staticmethod
    def outputs(task_id: str) -> ApiCall:
        return ApiCall("GET", task_path(task_id, "/outputs"), result=json_field("outputs"))

    @staticmethod
    def notebook(task_id: str) -> ApiCall:
        return ApiCall("GET", task_path(task_id, "/notebook"), result=notebook_result)

    @staticmethod
    def save_notebook(task_id: str, path: str, overwrite: bool) -> ApiCall:
        return ApiCall("POST", task_path(task_id, "/notebook"), body={"path": path, "overwrite": overwrite})

    @staticmethod
    def metrics(task_id: str) -> ApiCall:
        return ApiCall("GET", task_path(task_id, "/metrics"))

    @staticmethod
    def status() -> ApiCall:
        return ApiCall("GET", "status")

    # -- recorded values, output files, HTML (server/results.py) ---------------------

    @staticmethod
    def values(task_id: str) -> ApiCall:
        return ApiCall("GET", task_path(task_id, "/values"))

    @staticmethod
    def files(task_id: str) -> ApiCall:
        return ApiCall("GET", task_path(task_id, "/files"))

    @staticmethod
    def download_file(task_id: str, path: str) -> ApiCall:
        if not isinstance(path, str) or not path:
            raise ValueError("a file path must be a non-empty string")
        return ApiCall("GET", task_path(task_id, "/files/" + urllib.parse.quote(path, safe="/")), result=raw_result)

    @staticmethod
    def notebook_html(task_id: str, no_input: bool) -> ApiCall:
        params = {"format": "html", "no_input": 1 if no_input else None}
        return ApiCall("GET", task_path(task_id, "/notebook"), params, result=text_result)

    # -- variables (variables_out) ----------------------------------------------

    @staticmethod
    def variables(task_id: str) -> ApiCall:
        return ApiCall("GET", task_path(task_id, "/variables"))

    @staticmethod
    def variable_bytes(task_id: str, name: str) -> ApiCall:
        if not isinstance(name, str) or not name:
            raise ValueError("a variable name must be a non-empty string")
        return ApiCall("GET", task_path(task_id, "/variables/" + urllib.parse.quote(name, safe="")), result=raw_result)

    # -- schedules -------------------------------------------------------------

    @staticmethod
    def create_schedule(task, cron: str, name: str | None, timezone: str | None, options: dict[str, Any]) -> ApiCall:
        return ApiCall("POST", "schedules", body=schedule_body(task, cron, name, timezone, options))

    @staticmethod
    def list_schedules(owner: str | None) -> ApiCall:
        return ApiCall("GET", "schedules", {"owner": owner}, result=json_field("schedules"))

    @staticmethod
    def get_schedule(schedule_id: str) -> ApiCall:
        return ApiCall("GET", schedule_path(schedule_id))

    @staticmethod
    def update_schedule(schedule_id: str, fields: dict[str, Any]) -> ApiCall:
        # None is sent as null here: in a PATCH it clears a field (end_at, max_runs, callback_url)
        if not fields:
            raise ValueError("update_schedule needs at least one field to change")
        return ApiCall("PATCH", schedule_path(schedule_id), body=dict(fields))

    @staticmethod
    def run_schedule(schedule_id: str) -> ApiCall:
        return ApiCall("POST", schedule_path(schedule_id, "/run"))

    @staticmethod
    def delete_schedule(schedule_id: str) -> ApiCall:
        return ApiCall("DELETE", schedule_path(schedule_id), result=no_result)

    @staticmethod
    def preview_schedule(cron: str, timezone: str | None) -> ApiCall:
        return ApiCall("GET", "schedules/preview", {"cron": cron, "timezone": timezone})


@dataclass(frozen=True)
class PreparedRequest:
    method: str
    url: str
    headers: dict[str, str]
    data: bytes | None
    timeout: float


# ---------------------------------------------------------------------------
# Waiting
# ---------------------------------------------------------------------------


def deadline_after(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def remaining(deadline: float | None) -> float | None:
    """Seconds left until ``deadline`` (None: no deadline); TimeoutError once it has passed."""
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the tasks did not all finish in time")
    return left


def task_id_of(task: Any) -> str:
    """A task's id, from the id itself or a task dict."""
    return task["id"] if isinstance(task, dict) else str(task)


def stream_error_is_final(error: Exception) -> bool:
    """While waiting, a refused stream means polling instead, unless the refusal is about auth."""
    return isinstance(error, TaskRunHTTPError) and error.status in (401, 403)


class PollSchedule:
    """Delays between polls of a task: 0.1 s growing by half to ``poll_interval``, within the deadline."""

    def __init__(self, task_id: str, deadline: float | None, poll_interval: float):
        self.task_id = task_id
        self.deadline = deadline
        self.poll_interval = poll_interval
        self.delay = 0.1

    def next_delay(self, task: dict[str, Any]) -> float:
        """Seconds until the next poll; ``TimeoutError`` once the deadline has passed."""
        delay = self.delay
        if self.deadline is not None:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"task {self.task_id} still {task.get('status')} after the time-out")
            delay = min(delay, remaining)
        self.delay = min(delay * 1.5, self.poll_interval)
        return delay


# ---------------------------------------------------------------------------
# Shared client base
# ---------------------------------------------------------------------------

_UNKNOWN = object()


class ClientBase:
    """Server address, credentials and time-outs, and request building, for both clients."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        request_timeout: float = 30.0,
        stream_read_timeout: float = 60.0,
        reconnect_timeout: float = 30.0,
    ):
        info = discover_server(url, token)
        self.url: str = info.url
        self.token: str = info.token
        self._root_dir: Any = info.root_dir if info.root_dir is not None else _UNKNOWN
        #: time-out of one request (s)
        self.request_timeout = request_timeout
        #: an event stream with no data (not even a keep-alive) for this long is reconnected
        self.stream_read_timeout = stream_read_timeout
        #: give up reconnecting an event stream after failing for this long (s)
        self.reconnect_timeout = reconnect_timeout

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self.url!r})"

    @property
    def server_root(self) -> str | None:
        """The server's root directory when the server runs on this machine (from its runtime info)."""
        if self._root_dir is _UNKNOWN:
            match = matching_server(self.url)
            self._root_dir = match.get("root_dir") if match else None
        return self._root_dir

    def _api_url(self, path: str, params: dict[str, Any] | None = None) -> str:
        url = self.url + API_PREFIX + path
        query = clean_params(params)
        if query:
            url += "?" + urllib.parse.urlencode(query)
        return url

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "jupyter-taskrun-client"}
        if self.token:
            headers["Authorization"] = f"token {self.token}"
        if extra:
            headers.update(extra)
        return headers

    def _prepare(self, call: ApiCall) -> PreparedRequest:
        headers = self._headers()
        data = None
        if call.body is not None:
            data = json.dumps(call.body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        elif call.method in ("POST", "PUT", "PATCH"):
            data = b""
        timeout = self.request_timeout + call.extra_timeout
        return PreparedRequest(call.method, self._api_url(call.path, call.params), headers, data, timeout)

    def _stream_state(self, after: int | None, deadline: float | None, reconnect: bool, stop_event: str | None) -> StreamState:
        return StreamState(
            after,
            reconnect=reconnect,
            deadline=deadline,
            reconnect_budget=self.reconnect_timeout,
            read_timeout=self.stream_read_timeout,
            stop_event=stop_event,
        )

    def _stream_request(self, path: str, resume: tuple[dict[str, Any], dict[str, str]]) -> tuple[str, dict[str, str]]:
        """URL and headers of one connection of an event stream, resuming where ``resume`` says."""
        params, extra = resume
        headers = self._headers({"Accept": "text/event-stream", "Cache-Control": "no-cache", **extra})
        return self._api_url(path, params), headers
