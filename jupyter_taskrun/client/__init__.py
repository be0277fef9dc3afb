"""Python clients of the jupyter_taskrun HTTP API: ``TaskRunClient`` (sync) and ``AsyncTaskRunClient``.

Both speak the REST + Server-Sent-Events API described in ``docs/API_CONTRACT.md`` and
return plain JSON dicts exactly as the server sends them.

* The sync client uses only the standard library (``urllib.request`` for requests,
  ``http.client`` for event streams, so read time-outs can be adjusted while streaming).
  It never touches an event loop, so it is safe inside a running IPython kernel, where an
  asyncio loop is already running in the calling thread.
* The async client uses tornado's ``AsyncHTTPClient`` for requests and a small asyncio
  stream reader for Server-Sent Events (so closing the generator closes the connection
  at once).

Finding the server, in order: explicit ``url``/``token``; the ``JUPYTER_TASKRUN_URL`` /
``JUPYTER_TASKRUN_TOKEN`` environment variables; the runtime info files of running Jupyter
servers (the ``jpserver-<pid>.json`` files of ``jupyter_server.serverapp.list_running_servers``) — the server that started this
kernel (``JPY_PARENT_PID``), else the one whose ``root_dir`` contains the current directory,
else the newest. Task kernels never receive the server token in their environment.

Event streams (``stream_events``, ``stream_changes``) reconnect transparently after a dropped
connection, resuming with ``Last-Event-ID`` so that no event is lost or repeated.
"""

from __future__ import annotations

import asyncio
import http.client
import ipaddress
import json
import os
import re
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..errors import TaskRunError
from ..models import TaskStatus

__all__ = [
    "AsyncTaskRunClient",
    "ServerInfo",
    "ServerNotFound",
    "TaskRunClient",
    "TaskRunConnectionError",
    "TaskRunHTTPError",
    "discover_server",
]

API_PREFIX = "taskrun/api/"
ENV_URL = "JUPYTER_TASKRUN_URL"
ENV_TOKEN = "JUPYTER_TASKRUN_TOKEN"

# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


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


def _http_error(status: int, payload: bytes, headers: Any, url: str | None = None) -> TaskRunHTTPError:
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
    return TaskRunHTTPError(
        status, reason or phrase, message or phrase, retry_after=retry_after, url=url
    )


# ---------------------------------------------------------------------------
# Server discovery
# ---------------------------------------------------------------------------


@dataclass
class ServerInfo:
    """Where a jupyter_taskrun server is: base URL (ending in ``/``), token, root dir if known."""

    url: str
    token: str = ""
    root_dir: str | None = None
    pid: int | None = None


def _normalise_url(url: str) -> str:
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    return url if url.endswith("/") else url + "/"


_LOOPBACK_NAMES = {"localhost", "ip6-localhost", ""}


def _is_loopback(host: str | None) -> bool:
    host = (host or "").strip("[]").lower()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    return addr.is_loopback or addr.is_unspecified


def _url_key(url: str) -> tuple[str, str, int, str]:
    """A comparable identity of a server URL (loopback aliases and default ports folded)."""
    parts = urllib.parse.urlsplit(_normalise_url(url))
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if _is_loopback(host):
        host = "loopback"
    port = parts.port or (443 if scheme == "https" else 80)
    return scheme, host, port, parts.path.rstrip("/")


_SERVER_INFO_FILE = re.compile(r"^jpserver-(.+)\.json$")


def _pid_alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except PermissionError:  # alive, another user's
        return True
    except (OSError, ValueError, TypeError):
        return False
    return True


def _running_servers() -> list[dict[str, Any]]:
    """Runtime info of the running Jupyter servers (TCP ones only), newest first.

    Reads the same ``jpserver-<pid>.json`` files as ``jupyter_server.serverapp.list_running_servers``
    (with the same liveness check), without importing ``jupyter_server.serverapp``, which costs
    seconds of start-up in a short-lived CLI.
    """
    try:
        from jupyter_core.paths import jupyter_runtime_dir

        runtime_dir = jupyter_runtime_dir()
        names = os.listdir(runtime_dir)
    except Exception:  # no runtime dir yet: nothing discovered
        return []
    found: list[tuple[float, dict[str, Any]]] = []
    for name in names:
        if not _SERVER_INFO_FILE.match(name):
            continue
        path = os.path.join(runtime_dir, name)
        try:
            with open(path, encoding="utf-8") as f:
                info = json.load(f)
            mtime = os.path.getmtime(path)
        except (OSError, ValueError):  # unreadable, or being written right now
            continue
        if not isinstance(info, dict) or not _pid_alive(info.get("pid")):
            continue
        if info.get("url") and not info.get("sock"):
            found.append((mtime, info))
    found.sort(key=lambda item: (item[0], int(item[1].get("pid") or 0)), reverse=True)
    return [info for _, info in found]


def _within(path: str, root: str) -> bool:
    try:
        path = os.path.realpath(path)
        root = os.path.realpath(root)
        return os.path.commonpath([path, root]) == root
    except (ValueError, OSError):
        return False


def _pick_server(servers: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not servers:
        return None
    parent = os.environ.get("JPY_PARENT_PID")
    if parent and parent.isdigit():
        for info in servers:
            if str(info.get("pid")) == parent:
                return info
    try:
        cwd = os.getcwd()
    except OSError:
        cwd = None
    if cwd:
        containing = [s for s in servers if s.get("root_dir") and _within(cwd, s["root_dir"])]
        if containing:
            # the most specific root wins; among equals the newest (the list is newest first)
            return max(containing, key=lambda s: len(os.path.realpath(s["root_dir"])))
    return servers[0]


def _info_from_runtime(info: dict[str, Any]) -> ServerInfo:
    return ServerInfo(
        url=_normalise_url(info["url"]),
        token=info.get("token") or "",
        root_dir=info.get("root_dir"),
        pid=info.get("pid"),
    )


def _matching_server(url: str) -> dict[str, Any] | None:
    key = _url_key(url)
    for info in _running_servers():
        if _url_key(info["url"]) == key:
            return info
    return None


def discover_server(url: str | None = None, token: str | None = None) -> ServerInfo:
    """Resolve the server to talk to (see the module docstring for the order).

    ``root_dir`` is filled only when the server was found through its runtime info.
    """
    if url is None:
        url = os.environ.get(ENV_URL) or None
    if url is not None:
        if token is None:
            token = os.environ.get(ENV_TOKEN)
        if token is None:
            match = _matching_server(url)
            if match is not None:
                return ServerInfo(
                    _normalise_url(url), match.get("token") or "", match.get("root_dir"), match.get("pid")
                )
        return ServerInfo(_normalise_url(url), token or "")
    info = _pick_server(_running_servers())
    if info is None:
        raise ServerNotFound(
            "no Jupyter server found: pass url= and token=, set "
            f"{ENV_URL} and {ENV_TOKEN}, or start a Jupyter server"
        )
    found = _info_from_runtime(info)
    if token is not None:
        found.token = token
    return found


# ---------------------------------------------------------------------------
# Server-Sent Events parsing (shared by both clients)
# ---------------------------------------------------------------------------


class SSE(NamedTuple):
    event: str
    data: str
    id: str | None


class _SSEDecoder:
    """Incremental parser of the text/event-stream format, fed one line at a time."""

    def __init__(self) -> None:
        self.last_id: str | None = None
        self._event = ""
        self._data: list[str] = []

    def feed(self, line: str) -> SSE | None:
        line = line.rstrip("\r\n")
        if not line:
            if not self._data:
                self._event = ""
                return None
            sse = SSE(self._event or "message", "\n".join(self._data), self.last_id)
            self._event, self._data = "", []
            return sse
        if line.startswith(":"):  # comment / keep-alive
            return None
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id" and "\x00" not in value:
            self.last_id = value
        return None


def _int_id(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


class _StreamState:
    """Tracks the resume point of one logical stream across reconnections."""

    def __init__(self, after: int | None):
        self.last: int | None = after

    def accept(self, sse: SSE, payload: Any) -> bool:
        """True if the event is new; False for a duplicate already delivered."""
        seq = _int_id(sse.id)
        if seq is None and isinstance(payload, dict):
            seq = _int_id(payload.get("seq"))
        if seq is None:
            return True
        if self.last is not None and seq <= self.last:
            return False
        self.last = seq
        return True

    def resume_params(self, params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
        params = dict(params)
        headers: dict[str, str] = {}
        if self.last is not None:
            params["after"] = self.last
            headers["Last-Event-ID"] = str(self.last)
        return params, headers


def _decode_payload(sse: SSE) -> Any:
    try:
        return json.loads(sse.data)
    except ValueError:
        return sse.data


def _task_event(sse: SSE, payload: Any, task_id: str) -> dict[str, Any]:
    if sse.event == "end":
        data = payload if isinstance(payload, dict) else {"status": payload}
        return {"task_id": task_id, "seq": None, "type": "end", "time": None, "data": data}
    if isinstance(payload, dict) and "type" in payload and "data" in payload:
        return payload
    return {"task_id": task_id, "seq": _int_id(sse.id), "type": sse.event, "time": None, "data": payload}


#: protocol-level events of the change feed (e.g. ``hello`` carries the resume point of a fresh
#: client); they move the resume point but are not changes
_FEED_CONTROL_EVENTS = {"hello"}


def _change(sse: SSE, payload: Any) -> dict[str, Any] | None:
    if sse.event in _FEED_CONTROL_EVENTS or not isinstance(payload, dict):
        return None
    return payload


def _is_terminal(task: dict[str, Any]) -> bool:
    try:
        return TaskStatus(task.get("status")).is_terminal
    except ValueError:
        return False


def _clean(params: dict[str, Any] | None) -> dict[str, Any]:
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


def _submission(
    code: str | None,
    cells: Any,
    path: Any,
    notebook: Any,
    options: dict[str, Any],
) -> dict[str, Any]:
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


#: refusals worth retrying when re-opening a dropped stream (429: the server may not have
#: noticed the old connection is gone and still counts it against the per-user stream limit)
_RETRYABLE_STATUSES = {429, 502, 503, 504}


class _Backoff:
    """Reconnection delays: 0.1 s doubling to 5 s; gives up after ``budget`` s of failures."""

    def __init__(self, budget: float):
        self.budget = budget
        self.reset()

    def reset(self) -> None:
        self.delay = 0.1
        self.failing_since: float | None = None

    def next_delay(self, error: Exception, deadline: float | None) -> float:
        now = time.monotonic()
        if self.failing_since is None:
            self.failing_since = now
        elif now - self.failing_since > self.budget:
            raise TaskRunConnectionError(
                f"event stream lost and not re-established within {self.budget:g} s: {error}"
            ) from error
        if deadline is not None and now >= deadline:
            raise TimeoutError("timed out while reconnecting the event stream")
        delay = self.delay
        if isinstance(error, TaskRunHTTPError) and error.retry_after:
            delay = max(delay, min(error.retry_after, 30.0))
        self.delay = min(self.delay * 2, 5.0)
        if deadline is not None:
            delay = min(delay, max(0.0, deadline - now))
        return delay


# ---------------------------------------------------------------------------
# Shared client base
# ---------------------------------------------------------------------------

_UNKNOWN = object()


class _ClientBase:
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
            match = _matching_server(self.url)
            self._root_dir = match.get("root_dir") if match else None
        return self._root_dir

    def _api_url(self, path: str, params: dict[str, Any] | None = None) -> str:
        url = self.url + API_PREFIX + path
        query = _clean(params)
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

    @staticmethod
    def _task_path(task_id: str, suffix: str = "") -> str:
        if not isinstance(task_id, str) or not task_id:
            raise ValueError("a task id must be a non-empty string")
        return "tasks/" + urllib.parse.quote(task_id, safe="") + suffix

    @staticmethod
    def _list_params(status, tag, owner, name, limit, cursor) -> dict[str, Any]:
        return {"status": status, "tag": tag, "owner": owner, "name": name, "limit": limit, "cursor": cursor}


def _loads(payload: bytes) -> Any:
    if not payload:
        return None
    return json.loads(payload.decode("utf-8"))


def _loads_notebook(payload: bytes) -> dict[str, Any]:
    """The downloaded notebook; the headers (a ``Content-Disposition`` with the task's name) are not needed."""
    return json.loads(payload.decode("utf-8"))


# ---------------------------------------------------------------------------
# Sync client
# ---------------------------------------------------------------------------


class TaskRunClient(_ClientBase):
    """Blocking client of a jupyter_taskrun server (stdlib only; safe inside a running kernel).

    >>> c = TaskRunClient()                      # or TaskRunClient("http://127.0.0.1:8888/", "token")
    >>> t = c.submit("print('hi')", name="hello", tags=["demo"])
    >>> c.wait(t["id"])["status"]
    'completed'
    >>> c.logs(t["id"])
    'hi\\n'
    """

    def __init__(self, url: str | None = None, token: str | None = None, **kwargs: Any):
        super().__init__(url, token, **kwargs)
        host = urllib.parse.urlsplit(self.url).hostname
        handlers: list[Any] = []
        if _is_loopback(host):  # never send a local server's traffic (and token) through a proxy
            handlers.append(urllib.request.ProxyHandler({}))
        self._opener = urllib.request.build_opener(*handlers)

    def __enter__(self) -> TaskRunClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Nothing is held between calls; kept for symmetry with the async client."""

    # -- transport ---------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        timeout: float | None = None,
    ) -> tuple[int, Any, bytes]:
        url = self._api_url(path, params)
        headers = self._headers()
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        elif method in ("POST", "PUT", "PATCH"):
            data = b""
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with self._opener.open(req, timeout=timeout or self.request_timeout) as resp:
                return resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as e:
            try:
                payload = e.read()
            except Exception:
                payload = b""
            raise _http_error(e.code, payload, e.headers, url) from None
        except urllib.error.URLError as e:
            raise TaskRunConnectionError(f"cannot reach the Jupyter server at {self.url}: {e.reason}") from None
        except (OSError, http.client.HTTPException) as e:
            raise TaskRunConnectionError(
                f"request to the Jupyter server at {self.url} failed: {e or type(e).__name__}"
            ) from None

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return _loads(self._request(method, path, **kwargs)[2])

    # -- tasks ---------------------------------------------------------------

    def submit(
        self,
        code: str | None = None,
        *,
        cells: list[str] | None = None,
        path: str | os.PathLike[str] | None = None,
        notebook: dict[str, Any] | None = None,
        wait: float | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        """Submit one task; returns the task (as created, or finished when ``wait`` seconds suffice).

        Give exactly one source: ``code`` (one cell), ``cells`` (list of sources), ``path``
        (server-relative ``.py``/``.ipynb``) or ``notebook`` (nbformat v4 dict). Options: ``name``,
        ``kernel_name``, ``parameters``, ``timeout``, ``cell_timeout``, ``env``, ``cwd``, ``tags``,
        ``priority``, ``memory_limit``, ``resources``, ``args`` (a ``.py`` script's ``sys.argv[1:]``).
        """
        body = _submission(code, cells, path, notebook, options)
        timeout = self.request_timeout + (float(wait) if wait else 0.0)
        return self._json("POST", "tasks", params={"wait": wait}, body=body, timeout=timeout)

    def submit_batch(self, submissions: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Submit several tasks at once, all or nothing; returns the created tasks in order."""
        return self._json("POST", "tasks/batch", body={"tasks": list(submissions)})["tasks"]

    def get(self, task_id: str) -> dict[str, Any]:
        return self._json("GET", self._task_path(task_id))

    def list(
        self,
        status: str | None = None,
        tag: str | None = None,
        owner: str | None = None,
        name: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """One page of tasks, newest first: ``{"tasks": [...], "next_cursor": str | None}``.

        ``status`` may be one status or several (a list); ``name`` matches a prefix; pass the
        previous page's ``next_cursor`` as ``cursor`` for the next page (see ``iter_tasks``).
        """
        params = self._list_params(status, tag, owner, name, limit, cursor)
        return self._json("GET", "tasks", params=params)

    def iter_tasks(
        self,
        status: str | None = None,
        tag: str | None = None,
        owner: str | None = None,
        name: str | None = None,
        page_size: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every matching task, newest first, following ``next_cursor`` page by page."""
        cursor = None
        while True:
            page = self.list(status, tag, owner, name, page_size, cursor)
            yield from page.get("tasks", [])
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def cancel(self, task_id: str) -> dict[str, Any]:
        """Ask for cancellation (idempotent while cancelling); 409 once the task has finished."""
        return self._json("POST", self._task_path(task_id, "/cancel"))

    def rerun(self, task_id: str) -> dict[str, Any]:
        """Submit the same task again; returns the new task (``rerun_of`` = the old id)."""
        return self._json("POST", self._task_path(task_id, "/rerun"))

    def delete(self, task_id: str) -> None:
        """Delete a finished task with its events and artifacts (409 while active)."""
        self._request("DELETE", self._task_path(task_id))

    def logs_bytes(self, task_id: str, stream: str | None = None, offset: int = 0) -> bytes:
        """The raw log bytes from byte ``offset`` (stdout and stderr merged, or one ``stream``)."""
        params = {"stream": stream, "offset": offset or None}
        return self._request("GET", self._task_path(task_id, "/logs"), params=params)[2]

    def logs(self, task_id: str, stream: str | None = None, offset: int = 0) -> str:
        """The log text from byte ``offset`` (decoded; for incremental reads prefer ``logs_bytes``,
        whose length is exactly how far to move ``offset``)."""
        return self.logs_bytes(task_id, stream, offset).decode("utf-8", errors="replace")

    def outputs(self, task_id: str) -> list[dict[str, Any]]:
        """Rich outputs as nbformat output dicts (each with ``cell_index``)."""
        return self._json("GET", self._task_path(task_id, "/outputs"))["outputs"]

    def notebook(self, task_id: str, save: str | None = None, *, overwrite: bool = False) -> dict[str, Any]:
        """The executed notebook (nbformat dict); with ``save=path`` the server writes it into its
        contents instead (``POST .../notebook``; an existing file only with ``overwrite=True``,
        else HTTP 409) and this returns ``{"path": ...}``."""
        if save is not None:
            return self.save_notebook(task_id, save, overwrite=overwrite)
        return _loads_notebook(self._request("GET", self._task_path(task_id, "/notebook"))[2])

    def save_notebook(self, task_id: str, path: str, *, overwrite: bool = False) -> dict[str, Any]:
        """Write the executed notebook to ``path`` in the server's contents; returns ``{"path": ...}``."""
        return self._json("POST", self._task_path(task_id, "/notebook"), body={"path": path, "overwrite": overwrite})

    def metrics(self, task_id: str) -> dict[str, Any]:
        """``{"summary": {...}, "samples": [{"t", "cpu", "rss"}, ...], "cells": [...]}``."""
        return self._json("GET", self._task_path(task_id, "/metrics"))

    def status(self) -> dict[str, Any]:
        """Server status: version, executor, capacity, running, queued, max_queued."""
        return self._json("GET", "status")

    # -- waiting and streaming -----------------------------------------------

    def wait(
        self,
        task_id: str,
        timeout: float | None = None,
        *,
        poll_interval: float = 2.0,
        use_sse: bool = True,
    ) -> dict[str, Any]:
        """Block until the task has finished and return it; ``TimeoutError`` after ``timeout`` s.

        Follows the task's event stream; if streaming is impossible it polls instead.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        task = self.get(task_id)
        if _is_terminal(task):
            return task
        if use_sse:
            stream = self._stream_task(task_id, task.get("last_event_id") or 0, deadline, True)
            try:
                for event in stream:
                    if event["type"] == "end":
                        break
                task = self.get(task_id)
                if _is_terminal(task):
                    return task
            except (TaskRunHTTPError, TaskRunConnectionError) as e:
                if isinstance(e, TaskRunHTTPError) and e.status in (401, 403):
                    raise
            finally:
                stream.close()
        return self._poll(task_id, deadline, poll_interval)

    def _poll(self, task_id: str, deadline: float | None, poll_interval: float) -> dict[str, Any]:
        delay = 0.1
        while True:
            task = self.get(task_id)
            if _is_terminal(task):
                return task
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"task {task_id} still {task.get('status')} after the time-out")
                delay = min(delay, remaining)
            time.sleep(delay)
            delay = min(delay * 1.5, poll_interval)

    def stream_events(
        self,
        task_id: str,
        after: int = 0,
        *,
        reconnect: bool = True,
        timeout: float | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Yield the task's events (seq > ``after``) in order, live, ending with the ``end`` event.

        Each item is the event JSON ``{"task_id", "seq", "type", "time", "data"}``; the last one is
        ``{"type": "end", "seq": None, "data": {"status": final_status}}``. A dropped connection is
        re-established with ``Last-Event-ID``: no gap, no duplicate. ``timeout`` (s) bounds the
        whole stream (``TimeoutError``).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        return self._stream_task(task_id, after, deadline, reconnect)

    def _stream_task(
        self, task_id: str, after: int, deadline: float | None, reconnect: bool
    ) -> Iterator[dict[str, Any]]:
        for sse, payload in self._sse(self._task_path(task_id, "/events"), after, deadline, reconnect, "end"):
            yield _task_event(sse, payload, task_id)

    def stream_changes(
        self, after: int | None = None, *, reconnect: bool = True, timeout: float | None = None
    ) -> Iterator[dict[str, Any]]:
        """Yield the global change feed (``created|status|progress|deleted`` of every task), forever.

        Items are ``{"seq", "type", "task_id", "time", "data"}``. ``after=None`` starts with what
        happens from now on; ``after=N`` first replays the changes after seq N (0: all that are
        kept). Resumes after disconnects with no gap and no duplicate.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        for sse, payload in self._sse("events", after, deadline, reconnect, None):
            change = _change(sse, payload)
            if change is not None:
                yield change

    # SSE transport: http.client, so the socket time-out can follow the caller's deadline.

    def _open_stream(self, url: str, headers: dict[str, str], deadline: float | None):
        parts = urllib.parse.urlsplit(url)
        connect_timeout = self.request_timeout
        if deadline is not None:
            connect_timeout = max(0.01, min(connect_timeout, deadline - time.monotonic()))
        if parts.scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                parts.hostname, parts.port, timeout=connect_timeout, context=ssl.create_default_context()
            )
        else:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=connect_timeout)
        try:
            conn.connect()
            sock = conn.sock
            target = parts.path + ("?" + parts.query if parts.query else "")
            conn.request("GET", target, headers=headers)
            resp = conn.getresponse()
            ctype = resp.getheader("Content-Type", "")
            if resp.status >= 400:
                raise _http_error(resp.status, resp.read(), resp.headers, url)
            if resp.status != 200 or not ctype.startswith("text/event-stream"):
                raise TaskRunHTTPError(
                    resp.status, "not-an-event-stream", f"expected text/event-stream, got {ctype or 'nothing'}"
                )
        except BaseException:
            conn.close()
            raise
        return conn, sock, resp

    def _sse(
        self,
        path: str,
        after: int | None,
        deadline: float | None,
        reconnect: bool,
        stop_event: str | None,
    ) -> Iterator[tuple[SSE, Any]]:
        state = _StreamState(after)
        backoff = _Backoff(self.reconnect_timeout)
        first = True
        while True:
            params, extra = state.resume_params({})
            url = self._api_url(path, params)
            headers = self._headers({"Accept": "text/event-stream", "Cache-Control": "no-cache", **extra})
            try:
                conn, sock, resp = self._open_stream(url, headers, deadline)
            except TaskRunHTTPError as e:
                if first or not reconnect or e.status not in _RETRYABLE_STATUSES:
                    raise
                time.sleep(backoff.next_delay(e, deadline))
                continue
            except (OSError, http.client.HTTPException) as e:
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError("timed out connecting to the event stream") from None
                if first or not reconnect:
                    raise TaskRunConnectionError(f"cannot open the event stream at {url}: {e}") from None
                time.sleep(backoff.next_delay(e, deadline))
                continue
            first = False
            backoff.reset()
            decoder = _SSEDecoder()
            error: Exception | None = None
            try:
                while True:
                    read_timeout = self.stream_read_timeout
                    if deadline is not None:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            raise TimeoutError("timed out waiting for task events")
                        read_timeout = min(read_timeout, remaining)
                    try:
                        sock.settimeout(read_timeout)
                        raw = resp.readline()
                    except (OSError, http.client.HTTPException, ValueError) as e:
                        if deadline is not None and time.monotonic() >= deadline:
                            raise TimeoutError("timed out waiting for task events") from None
                        error = e
                        break
                    if not raw:
                        error = ConnectionError("the server closed the event stream")
                        break
                    sse = decoder.feed(raw.decode("utf-8", errors="replace"))
                    if sse is None:
                        continue
                    payload = _decode_payload(sse)
                    if not state.accept(sse, payload):
                        continue
                    yield sse, payload
                    if stop_event is not None and sse.event == stop_event:
                        return
            finally:
                resp.close()
                conn.close()
            if not reconnect:
                raise TaskRunConnectionError(f"event stream interrupted: {error}")
            time.sleep(backoff.next_delay(error or ConnectionError("stream closed"), deadline))


# ---------------------------------------------------------------------------
# Async client
# ---------------------------------------------------------------------------


class _AsyncBody:
    """Reads an HTTP/1.1 response body (chunked, sized or until EOF) line by line."""

    def __init__(self, reader: asyncio.StreamReader, chunked: bool, length: int | None):
        self.reader = reader
        self.chunked = chunked
        self.remaining = length
        self.eof = False
        self._buf = bytearray()

    async def _read_chunk(self) -> bytes:
        if self.eof:
            return b""
        try:
            if self.chunked:
                line = await self.reader.readline()
                if not line:
                    raise ConnectionError("connection closed inside a chunked body")
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while (await self.reader.readline()) not in (b"\r\n", b"\n", b""):
                        pass
                    self.eof = True
                    return b""
                data = await self.reader.readexactly(size + 2)
                return data[:-2]
            if self.remaining is not None:
                if self.remaining <= 0:
                    self.eof = True
                    return b""
                data = await self.reader.read(min(self.remaining, 65536))
                if not data:
                    raise ConnectionError("connection closed before the end of the body")
                self.remaining -= len(data)
                return data
            data = await self.reader.read(65536)
            if not data:
                self.eof = True
            return data
        except asyncio.IncompleteReadError as e:
            raise ConnectionError("connection closed inside a chunk") from e

    async def readline(self) -> bytes:
        while True:
            i = self._buf.find(b"\n")
            if i >= 0:
                line = bytes(self._buf[: i + 1])
                del self._buf[: i + 1]
                return line
            chunk = await self._read_chunk()
            if not chunk:
                rest = bytes(self._buf)
                self._buf.clear()
                return rest
            self._buf += chunk

    async def read_all(self) -> bytes:
        parts = [bytes(self._buf)]
        self._buf.clear()
        while True:
            chunk = await self._read_chunk()
            if not chunk:
                return b"".join(parts)
            parts.append(chunk)


class AsyncTaskRunClient(_ClientBase):
    """Asyncio client of a jupyter_taskrun server; same methods as ``TaskRunClient``, awaitable.

    ``stream_events`` / ``stream_changes`` / ``iter_tasks`` are async generators.
    """

    async def __aenter__(self) -> AsyncTaskRunClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        """Nothing is held between calls (tornado's shared client is reused)."""

    # -- transport ---------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        timeout: float | None = None,
    ) -> tuple[int, Any, bytes]:
        from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

        url = self._api_url(path, params)
        headers = self._headers()
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        elif method in ("POST", "PUT", "PATCH"):
            data = b""
        timeout = timeout or self.request_timeout
        req = HTTPRequest(
            url,
            method=method,
            headers=headers,
            body=data,
            connect_timeout=min(timeout, self.request_timeout),
            request_timeout=timeout,
            allow_nonstandard_methods=True,
            decompress_response=True,
        )
        try:
            resp = await AsyncHTTPClient().fetch(req, raise_error=False)
        except HTTPClientError as e:  # 599: time-out or connection problem
            raise TaskRunConnectionError(f"request to the Jupyter server at {self.url} failed: {e}") from None
        except (OSError, http.client.HTTPException) as e:
            raise TaskRunConnectionError(f"cannot reach the Jupyter server at {self.url}: {e}") from None
        if resp.code == 599 or (resp.error is not None and resp.code < 400 and resp.code != 304):
            raise TaskRunConnectionError(f"request to the Jupyter server at {self.url} failed: {resp.error}")
        if resp.code >= 400:
            raise _http_error(resp.code, resp.body or b"", resp.headers, url)
        return resp.code, resp.headers, resp.body or b""

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return _loads((await self._request(method, path, **kwargs))[2])

    # -- tasks ---------------------------------------------------------------

    async def submit(
        self,
        code: str | None = None,
        *,
        cells: list[str] | None = None,
        path: str | os.PathLike[str] | None = None,
        notebook: dict[str, Any] | None = None,
        wait: float | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        """See ``TaskRunClient.submit``."""
        body = _submission(code, cells, path, notebook, options)
        timeout = self.request_timeout + (float(wait) if wait else 0.0)
        return await self._json("POST", "tasks", params={"wait": wait}, body=body, timeout=timeout)

    async def submit_batch(self, submissions: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return (await self._json("POST", "tasks/batch", body={"tasks": list(submissions)}))["tasks"]

    async def get(self, task_id: str) -> dict[str, Any]:
        return await self._json("GET", self._task_path(task_id))

    async def list(
        self,
        status: str | None = None,
        tag: str | None = None,
        owner: str | None = None,
        name: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        params = self._list_params(status, tag, owner, name, limit, cursor)
        return await self._json("GET", "tasks", params=params)

    async def iter_tasks(
        self,
        status: str | None = None,
        tag: str | None = None,
        owner: str | None = None,
        name: str | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        cursor = None
        while True:
            page = await self.list(status, tag, owner, name, page_size, cursor)
            for task in page.get("tasks", []):
                yield task
            cursor = page.get("next_cursor")
            if not cursor:
                return

    async def cancel(self, task_id: str) -> dict[str, Any]:
        return await self._json("POST", self._task_path(task_id, "/cancel"))

    async def rerun(self, task_id: str) -> dict[str, Any]:
        return await self._json("POST", self._task_path(task_id, "/rerun"))

    async def delete(self, task_id: str) -> None:
        await self._request("DELETE", self._task_path(task_id))

    async def logs_bytes(self, task_id: str, stream: str | None = None, offset: int = 0) -> bytes:
        params = {"stream": stream, "offset": offset or None}
        return (await self._request("GET", self._task_path(task_id, "/logs"), params=params))[2]

    async def logs(self, task_id: str, stream: str | None = None, offset: int = 0) -> str:
        return (await self.logs_bytes(task_id, stream, offset)).decode("utf-8", errors="replace")

    async def outputs(self, task_id: str) -> list[dict[str, Any]]:
        return (await self._json("GET", self._task_path(task_id, "/outputs")))["outputs"]

    async def notebook(self, task_id: str, save: str | None = None, *, overwrite: bool = False) -> dict[str, Any]:
        if save is not None:
            return await self.save_notebook(task_id, save, overwrite=overwrite)
        return _loads_notebook((await self._request("GET", self._task_path(task_id, "/notebook")))[2])

    async def save_notebook(self, task_id: str, path: str, *, overwrite: bool = False) -> dict[str, Any]:
        return await self._json("POST", self._task_path(task_id, "/notebook"), body={"path": path, "overwrite": overwrite})

    async def metrics(self, task_id: str) -> dict[str, Any]:
        return await self._json("GET", self._task_path(task_id, "/metrics"))

    async def status(self) -> dict[str, Any]:
        return await self._json("GET", "status")

    # -- waiting and streaming -----------------------------------------------

    async def wait(
        self,
        task_id: str,
        timeout: float | None = None,
        *,
        poll_interval: float = 2.0,
        use_sse: bool = True,
    ) -> dict[str, Any]:
        """See ``TaskRunClient.wait``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        task = await self.get(task_id)
        if _is_terminal(task):
            return task
        if use_sse:
            stream = self._stream_task(task_id, task.get("last_event_id") or 0, deadline, True)
            try:
                async for event in stream:
                    if event["type"] == "end":
                        break
                task = await self.get(task_id)
                if _is_terminal(task):
                    return task
            except (TaskRunHTTPError, TaskRunConnectionError) as e:
                if isinstance(e, TaskRunHTTPError) and e.status in (401, 403):
                    raise
            finally:
                await stream.aclose()
        delay = 0.1
        while True:
            task = await self.get(task_id)
            if _is_terminal(task):
                return task
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"task {task_id} still {task.get('status')} after the time-out")
                delay = min(delay, remaining)
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, poll_interval)

    def stream_events(
        self,
        task_id: str,
        after: int = 0,
        *,
        reconnect: bool = True,
        timeout: float | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Async generator twin of ``TaskRunClient.stream_events``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        return self._stream_task(task_id, after, deadline, reconnect)

    async def _stream_task(
        self, task_id: str, after: int, deadline: float | None, reconnect: bool
    ) -> AsyncIterator[dict[str, Any]]:
        stream = self._sse(self._task_path(task_id, "/events"), after, deadline, reconnect, "end")
        try:
            async for sse, payload in stream:
                yield _task_event(sse, payload, task_id)
        finally:
            await stream.aclose()

    async def stream_changes(
        self, after: int | None = None, *, reconnect: bool = True, timeout: float | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Async generator twin of ``TaskRunClient.stream_changes``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        stream = self._sse("events", after, deadline, reconnect, None)
        try:
            async for sse, payload in stream:
                change = _change(sse, payload)
                if change is not None:
                    yield change
        finally:
            await stream.aclose()

    async def _open_stream(self, url: str, headers: dict[str, str], deadline: float | None):
        parts = urllib.parse.urlsplit(url)
        https = parts.scheme == "https"
        port = parts.port or (443 if https else 80)
        timeout = self.request_timeout
        if deadline is not None:
            timeout = max(0.01, min(timeout, deadline - time.monotonic()))
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                parts.hostname, port, ssl=ssl.create_default_context() if https else None
            ),
            timeout,
        )
        try:
            target = parts.path + ("?" + parts.query if parts.query else "")
            lines = [f"GET {target} HTTP/1.1", f"Host: {parts.netloc}"]
            lines += [f"{k}: {v}" for k, v in headers.items()]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            await writer.drain()

            async def read_head() -> tuple[int, dict[str, str]]:
                status_line = await reader.readline()
                fields = status_line.decode("latin-1").split(None, 2)
                if len(fields) < 2 or not fields[1].isdigit():
                    raise ConnectionError(f"bad HTTP status line {status_line!r}")
                head: dict[str, str] = {}
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b"\n"):
                        return int(fields[1]), head
                    if not line:
                        raise ConnectionError("connection closed inside the response head")
                    key, _, value = line.decode("latin-1").partition(":")
                    head[key.strip().lower()] = value.strip()

            status, head = await asyncio.wait_for(read_head(), timeout)
            chunked = "chunked" in head.get("transfer-encoding", "").lower()
            length = head.get("content-length")
            body = _AsyncBody(reader, chunked, int(length) if length and length.isdigit() else None)
            ctype = head.get("content-type", "")
            if status >= 400:
                payload = await asyncio.wait_for(body.read_all(), timeout)
                raise _http_error(status, payload, {"Retry-After": head.get("retry-after")}, url)
            if status != 200 or not ctype.startswith("text/event-stream"):
                raise TaskRunHTTPError(
                    status, "not-an-event-stream", f"expected text/event-stream, got {ctype or 'nothing'}"
                )
        except BaseException:
            writer.close()
            raise
        return writer, body

    async def _sse(
        self,
        path: str,
        after: int | None,
        deadline: float | None,
        reconnect: bool,
        stop_event: str | None,
    ) -> AsyncIterator[tuple[SSE, Any]]:
        state = _StreamState(after)
        backoff = _Backoff(self.reconnect_timeout)
        first = True
        while True:
            params, extra = state.resume_params({})
            url = self._api_url(path, params)
            headers = self._headers({"Accept": "text/event-stream", "Cache-Control": "no-cache", **extra})
            try:
                writer, body = await self._open_stream(url, headers, deadline)
            except TaskRunHTTPError as e:
                if first or not reconnect or e.status not in _RETRYABLE_STATUSES:
                    raise
                await asyncio.sleep(backoff.next_delay(e, deadline))
                continue
            except (OSError, asyncio.TimeoutError) as e:
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError("timed out connecting to the event stream") from None
                if first or not reconnect:
                    raise TaskRunConnectionError(f"cannot open the event stream at {url}: {e!r}") from None
                await asyncio.sleep(backoff.next_delay(e, deadline))
                continue
            first = False
            backoff.reset()
            decoder = _SSEDecoder()
            error: Exception | None = None
            try:
                while True:
                    wait_for = self.stream_read_timeout
                    if deadline is not None:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            raise TimeoutError("timed out waiting for task events")
                        wait_for = min(wait_for, remaining)
                    try:
                        raw = await asyncio.wait_for(body.readline(), wait_for)
                    except (OSError, asyncio.TimeoutError, ValueError) as e:
                        if deadline is not None and time.monotonic() >= deadline:
                            raise TimeoutError("timed out waiting for task events") from None
                        error = e
                        break
                    if not raw:
                        error = ConnectionError("the server closed the event stream")
                        break
                    sse = decoder.feed(raw.decode("utf-8", errors="replace"))
                    if sse is None:
                        continue
                    payload = _decode_payload(sse)
                    if not state.accept(sse, payload):
                        continue
                    yield sse, payload
                    if stop_event is not None and sse.event == stop_event:
                        return
            finally:
                writer.close()
            if not reconnect:
                raise TaskRunConnectionError(f"event stream interrupted: {error!r}")
            await asyncio.sleep(backoff.next_delay(error or ConnectionError("stream closed"), deadline))
