"""``TaskRunClient``: the blocking client, standard library only.

Guarantees:

* It never touches an event loop, so it works inside a running IPython kernel, where an asyncio
  loop is already running in the calling thread. That is why it is not a wrapper over
  ``AsyncTaskRunClient`` (``asyncio.run`` refuses to run there), and why its transport stays a
  twin of the async one; everything else (calls, requests, errors, stream decisions) is shared
  through ``_core.py`` and ``sse.py``.
* Requests use ``urllib.request``; a loopback server's traffic (and token) never goes through a
  configured proxy. Event streams use ``http.client`` so the socket's read time-out can follow the
  caller's deadline while streaming.
* Failures are ``TaskRunHTTPError`` (the server said no) or ``TaskRunConnectionError`` (it could
  not be reached); event streams resume after dropped connections with no gap and no duplicate.
"""

from __future__ import annotations

import builtins
import http.client
import os
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Generator, Iterator
from typing import Any

from ._core import (
    Api,
    ApiCall,
    ClientBase,
    PollSchedule,
    deadline_after,
    http_error,
    is_terminal,
    keyed,
    not_an_event_stream,
    remaining,
    stream_error_is_final,
    task_id_of,
    task_path,
)
from .discovery import is_loopback
from .errors import TaskRunConnectionError, TaskRunHTTPError
from .sse import SSE, StreamState, change_item, task_event_item

__all__ = ["TaskRunClient"]

#: bytes asked of the socket per read of an event stream
_READ_SIZE = 65536


class TaskRunClient(ClientBase):
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
        if is_loopback(host):  # never send a local server's traffic (and token) through a proxy
            handlers.append(urllib.request.ProxyHandler({}))
        self._opener = urllib.request.build_opener(*handlers)

    def __enter__(self) -> TaskRunClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Nothing is held between calls; kept for symmetry with the async client."""

    # -- transport ---------------------------------------------------------

    def _call(self, call: ApiCall) -> Any:
        req = self._prepare(call)
        request = urllib.request.Request(req.url, data=req.data, method=req.method, headers=req.headers)
        try:
            with self._opener.open(request, timeout=req.timeout) as resp:
                payload = resp.read()
        except urllib.error.HTTPError as e:
            try:
                body = e.read()
            except Exception:
                body = b""
            raise http_error(e.code, body, e.headers, req.url) from None
        except urllib.error.URLError as e:
            raise TaskRunConnectionError(f"cannot reach the Jupyter server at {self.url}: {e.reason}") from None
        except (OSError, http.client.HTTPException) as e:
            raise TaskRunConnectionError(f"request to the Jupyter server at {self.url} failed: {e or type(e).__name__}") from None
        return call.result(payload)

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
        return self._call(Api.submit(code, cells, path, notebook, wait, options))

    def submit_batch(self, submissions: Any) -> Any:
        """Submit several tasks at once, all or nothing (one transaction); returns the created tasks
        in order. A workflow: give ``{key: submission}`` (or entries with a ``"key"``) and name keys in
        ``depends_on`` and in ``{"$value": "KEY.name"}`` / ``{"$result": "KEY"}`` parameters; a dict
        given returns ``{key: task}``."""
        return keyed(submissions, self._call(Api.submit_batch(submissions)))

    def attempts(self, task_id: str) -> list[dict[str, Any]]:
        """Every try of the task's retry chain, the first first."""
        return self._call(Api.attempts(task_id))

    def dependencies(self, task_id: str) -> dict[str, Any]:
        """``{"waiting_for", "depends_on": [task], "dependents": [task]}`` (last tries)."""
        return self._call(Api.dependencies(task_id))

    def wait_all(self, tasks: Any, timeout: float | None = None) -> Any:
        """Wait until every task (ids, task dicts, or ``submit_batch``'s answer) and its retries have
        ended; returns each one's last try, in the same shape. ``TimeoutError`` after ``timeout`` s."""
        deadline = deadline_after(timeout)
        out = {}
        for name, task in tasks.items() if isinstance(tasks, dict) else enumerate(tasks):
            last = self.wait(task_id_of(task), remaining(deadline))
            while last.get("retried_as"):
                last = self.wait(last["retried_as"], remaining(deadline))
            out[name] = last
        return out if isinstance(tasks, dict) else list(out.values())

    def get(self, task_id: str) -> dict[str, Any]:
        return self._call(Api.get(task_id))

    def list(
        self,
        status: str | None = None,
        tag: str | None = None,
        owner: str | None = None,
        name: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        *,
        schedule: str | None = None,
        sort: str | None = None,
        where: str | builtins.list[str] | None = None,
    ) -> dict[str, Any]:
        """One page of tasks, newest first: ``{"tasks": [...], "next_cursor": str | None}``.

        ``status`` may be one status or several (a list); ``name`` matches a prefix; ``schedule``
        (a schedule id) keeps the tasks that schedule made, its history; pass the previous page's
        ``next_cursor`` as ``cursor`` for the next page (see ``iter_tasks``).
        """
        return self._call(Api.list_tasks(status, tag, owner, name, limit, cursor, schedule, sort, where))

    def iter_tasks(
        self,
        status: str | None = None,
        tag: str | None = None,
        owner: str | None = None,
        name: str | None = None,
        page_size: int | None = None,
        *,
        schedule: str | None = None,
        sort: str | None = None,
        where: str | builtins.list[str] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every matching task, newest first, following ``next_cursor`` page by page."""
        cursor = None
        while True:
            page = self.list(status, tag, owner, name, page_size, cursor, schedule=schedule, sort=sort, where=where)
            yield from page.get("tasks", [])
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def cancel(self, task_id: str, cascade: bool = False) -> dict[str, Any]:
        """Ask for cancellation (idempotent while cancelling); 409 once the task has finished.
        ``cascade``: first cancel the waiting tasks that depend on it, directly or not."""
        return self._call(Api.cancel(task_id, cascade))

    def rerun(self, task_id: str) -> dict[str, Any]:
        """Submit the same task again; returns the new task (``rerun_of`` = the old id)."""
        return self._call(Api.rerun(task_id))

    def delete(self, task_id: str) -> None:
        """Delete a finished task with its events and artifacts (409 while active)."""
        self._call(Api.delete(task_id))

    def logs_bytes(self, task_id: str, stream: str | None = None, offset: int = 0) -> bytes:
        """The raw log bytes from byte ``offset`` (stdout and stderr merged, or one ``stream``)."""
        return self._call(Api.logs(task_id, stream, offset, text=False))

    def logs(self, task_id: str, stream: str | None = None, offset: int = 0) -> str:
        """The log text from byte ``offset`` (decoded; for incremental reads prefer ``logs_bytes``,
        whose length is exactly how far to move ``offset``)."""
        return self._call(Api.logs(task_id, stream, offset, text=True))

    def outputs(self, task_id: str) -> builtins.list[dict[str, Any]]:  # `list` is a method here
        """Rich outputs as nbformat output dicts (each with ``cell_index``)."""
        return self._call(Api.outputs(task_id))

    def notebook(self, task_id: str, save: str | None = None, *, overwrite: bool = False) -> dict[str, Any]:
        """The executed notebook (nbformat dict); with ``save=path`` the server writes it into its
        contents instead (``POST .../notebook``; an existing file only with ``overwrite=True``,
        else HTTP 409) and this returns ``{"path": ...}``."""
        if save is not None:
            return self.save_notebook(task_id, save, overwrite=overwrite)
        return self._call(Api.notebook(task_id))

    def save_notebook(self, task_id: str, path: str, *, overwrite: bool = False) -> dict[str, Any]:
        """Write the executed notebook to ``path`` in the server's contents; returns ``{"path": ...}``."""
        return self._call(Api.save_notebook(task_id, path, overwrite))

    def metrics(self, task_id: str) -> dict[str, Any]:
        """``{"summary": {...}, "samples": [{"t", "cpu", "rss"}, ...], "cells": [...]}``."""
        return self._call(Api.metrics(task_id))

    def status(self) -> dict[str, Any]:
        """Server status: version, executor, capacity, running, queued, max_queued."""
        return self._call(Api.status())

    def values(self, task_id: str) -> dict[str, Any]:
        """What the task ``record()``ed: ``{"task_id", "values": {name: latest}, "series": {name: [{"value",
        "step", "time", "seq"}, ...]}}`` (every recording, in order)."""
        return self._call(Api.values(task_id))

    def files(self, task_id: str) -> dict[str, Any]:
        """The task's ``outputs`` files: ``{"task_id", "outputs", "collected", "files": [{"path", "size",
        "sha256", "content_type"}], "refused": [{"path", "size", "reason"}], "missing": [pattern]}``."""
        return self._call(Api.files(task_id))

    def download_file(self, task_id: str, path: str) -> bytes:
        """One collected output file's bytes, exactly as the task wrote them."""
        return self._call(Api.download_file(task_id, path))

    def notebook_html(self, task_id: str, *, no_input: bool = False) -> str:
        """The executed notebook as HTML (nbconvert); ``no_input=True``: the report, without code."""
        return self._call(Api.notebook_html(task_id, no_input))

    def variables(self, task_id: str) -> dict[str, Any]:
        """What the task sends back (``variables_out``): ``{"ready", "requested", "variables": [{"name",
        "size", "type", "error"}], "inputs": [...]}``."""
        return self._call(Api.variables(task_id))

    def variable_bytes(self, task_id: str, name: str) -> bytes:
        """One variable's pickle, as the task kernel made it (load it only if you trust the task:
        ``TaskHandle.get`` does); HTTP 409 while the task runs or when the variable has an error."""
        return self._call(Api.variable_bytes(task_id, name))

    # -- schedules -------------------------------------------------------------

    def create_schedule(
        self, task: dict[str, Any], cron: str, *, name: str | None = None, timezone: str | None = None, **options: Any
    ) -> dict[str, Any]:
        """Run ``task`` (a submission as ``submit`` takes it, e.g. ``{"path": "nightly.ipynb",
        "parameters": {...}}``) at the times of ``cron``; returns the schedule (with ``description``
        and ``next_runs``).

        ``cron`` is 5 fields (``"0 3 * * *"``) or an alias (``@daily``, ``@hourly``, ...) in
        ``timezone`` (an IANA name; default: the server's zone). Options: ``enabled`` (False: created
        paused), ``start_at``, ``end_at`` (ISO 8601), ``max_runs``, ``overlap`` (``"skip"``,
        ``"queue"``, ``"cancel_previous"``), ``catch_up`` (``"skip"``, ``"run_once"``),
        ``callback_url``. Bad input is ``TaskRunHTTPError`` 400 naming the field; nothing is stored.
        """
        return self._call(Api.create_schedule(task, cron, name, timezone, options))

    def list_schedules(self, owner: str | None = None) -> builtins.list[dict[str, Any]]:
        """Every schedule the caller may see, newest first (an admin: everyone's, or ``owner``'s)."""
        return self._call(Api.list_schedules(owner))

    def get_schedule(self, schedule_id: str) -> dict[str, Any]:
        return self._call(Api.get_schedule(schedule_id))

    def update_schedule(self, schedule_id: str, **fields: Any) -> dict[str, Any]:
        """Change some of the fields ``create_schedule`` sets (``task``, ``cron``, ``timezone``,
        ``name``, ...); ``None`` clears a field (``end_at=None``). Returns the schedule."""
        return self._call(Api.update_schedule(schedule_id, fields))

    def pause_schedule(self, schedule_id: str) -> dict[str, Any]:
        """No more runs until ``resume_schedule``; returns the schedule (``next_runs`` empty)."""
        return self._call(Api.update_schedule(schedule_id, {"enabled": False}))

    def resume_schedule(self, schedule_id: str) -> dict[str, Any]:
        return self._call(Api.update_schedule(schedule_id, {"enabled": True}))

    def run_schedule(self, schedule_id: str) -> dict[str, Any]:
        """Run the schedule's task now, whatever its ``overlap`` says; returns the new task."""
        return self._call(Api.run_schedule(schedule_id))

    def delete_schedule(self, schedule_id: str) -> None:
        """Delete the schedule; the tasks it made are kept (and keep their ``schedule_id``)."""
        self._call(Api.delete_schedule(schedule_id))

    def preview_schedule(self, cron: str, timezone: str | None = None) -> dict[str, Any]:
        """``{"cron", "timezone", "description", "next_runs"}`` of a cron, without storing anything."""
        return self._call(Api.preview_schedule(cron, timezone))

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
        deadline = deadline_after(timeout)
        task = self.get(task_id)
        if is_terminal(task):
            return task
        if use_sse:
            stream = self._stream_task(task_id, task.get("last_event_id") or 0, deadline, True)
            try:
                for event in stream:
                    if event["type"] == "end":
                        break
                task = self.get(task_id)
                if is_terminal(task):
                    return task
            except (TaskRunHTTPError, TaskRunConnectionError) as e:
                if stream_error_is_final(e):
                    raise
            finally:
                stream.close()
        schedule = PollSchedule(task_id, deadline, poll_interval)
        while True:
            task = self.get(task_id)
            if is_terminal(task):
                return task
            time.sleep(schedule.next_delay(task))

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
        return self._stream_task(task_id, after, deadline_after(timeout), reconnect)

    def _stream_task(self, task_id: str, after: int, deadline: float | None, reconnect: bool) -> Generator[dict[str, Any], None, None]:
        path = task_path(task_id, "/events")
        for sse, payload in self._sse(path, self._stream_state(after, deadline, reconnect, "end")):
            yield task_event_item(sse, payload, task_id)

    def stream_changes(self, after: int | None = None, *, reconnect: bool = True, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """Yield the global change feed (``created|status|progress|deleted`` of every task), forever.

        Items are ``{"seq", "type", "task_id", "time", "data"}``. ``after=None`` starts with what
        happens from now on; ``after=N`` first replays the changes after seq N (0: all that are
        kept). Resumes after disconnects with no gap and no duplicate.
        """
        state = self._stream_state(after, deadline_after(timeout), reconnect, None)
        for sse, payload in self._sse("events", state):
            change = change_item(sse, payload)
            if change is not None:
                yield change

    # SSE transport: http.client, so the socket time-out can follow the caller's deadline.

    def _open_stream(self, url: str, headers: dict[str, str], connect_timeout: float):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                parts.hostname or "", parts.port, timeout=connect_timeout, context=ssl.create_default_context()
            )
        else:
            conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=connect_timeout)
        try:
            conn.connect()
            sock = conn.sock
            target = parts.path + ("?" + parts.query if parts.query else "")
            conn.request("GET", target, headers=headers)
            resp = conn.getresponse()
            ctype = resp.getheader("Content-Type", "")
            if resp.status >= 400:
                raise http_error(resp.status, resp.read(), resp.headers, url)
            if resp.status != 200 or not ctype.startswith("text/event-stream"):
                raise not_an_event_stream(resp.status, ctype)
        except BaseException:
            conn.close()
            raise
        return conn, sock, resp

    def _sse(self, path: str, state: StreamState) -> Generator[tuple[SSE, Any], None, None]:
        """The I/O of one logical event stream; every decision is ``state``'s (see ``sse.py``)."""
        while True:
            url, headers = self._stream_request(path, state.resume())
            try:
                conn, sock, resp = self._open_stream(url, headers, state.connect_timeout(self.request_timeout))
            except (TaskRunHTTPError, OSError, http.client.HTTPException) as e:
                time.sleep(state.open_failed(e, url))
                continue
            state.opened()
            try:
                while True:
                    read_timeout = state.read_timeout()  # outside the try: its TimeoutError is final
                    try:
                        sock.settimeout(read_timeout)
                        raw = resp.read1(_READ_SIZE)
                    except (OSError, http.client.HTTPException, ValueError) as e:
                        state.read_failed(e)
                        break
                    if not raw:
                        state.read_failed(ConnectionError("the server closed the event stream"))
                        break
                    yield from state.receive(raw)
                    if state.ended:
                        return
            finally:
                resp.close()
                conn.close()
            time.sleep(state.lost())
