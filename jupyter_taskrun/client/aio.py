"""``AsyncTaskRunClient``: the asyncio client, same methods as ``TaskRunClient``, awaitable.

Guarantees:

* Requests use tornado's ``AsyncHTTPClient`` (imported on first use). Event streams use a small
  HTTP/1.1 reader on ``asyncio.open_connection`` (chunked, sized or until-EOF bodies), so closing
  the async generator (``aclose``) closes the connection at once and no task is left behind.
* Calls, request building, error mapping and every event-stream decision are shared with the sync
  client (``_core.py``, ``sse.py``); only the transport and the awaits below are twins of
  ``sync.py`` (the sync client must not need an event loop, see its docstring).
* Failures are ``TaskRunHTTPError`` or ``TaskRunConnectionError``; streams resume after dropped
  connections with no gap and no duplicate.
"""

from __future__ import annotations

import asyncio
import builtins
import http.client
import os
import ssl
import urllib.parse
from collections.abc import AsyncGenerator, AsyncIterator
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
from .errors import TaskRunConnectionError, TaskRunHTTPError
from .sse import SSE, StreamState, change_item, task_event_item

__all__ = ["AsyncTaskRunClient"]

_READ_SIZE = 65536


class _AsyncBody:
    """Reads an HTTP/1.1 response body (chunked, sized or until EOF) piece by piece."""

    def __init__(self, reader: asyncio.StreamReader, chunked: bool, length: int | None):
        self.reader = reader
        self.chunked = chunked
        self.remaining = length
        self.eof = False

    async def read_chunk(self) -> bytes:
        """The next piece of the body; ``b""`` at its end. A body cut short is a ConnectionError."""
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
                data = await self.reader.read(min(self.remaining, _READ_SIZE))
                if not data:
                    raise ConnectionError("connection closed before the end of the body")
                self.remaining -= len(data)
                return data
            data = await self.reader.read(_READ_SIZE)
            if not data:
                self.eof = True
            return data
        except asyncio.IncompleteReadError as e:
            raise ConnectionError("connection closed inside a chunk") from e

    async def read_all(self) -> bytes:
        parts = []
        while chunk := await self.read_chunk():
            parts.append(chunk)
        return b"".join(parts)


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """The status code and (lower-cased) headers of an HTTP/1.1 response."""
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


class AsyncTaskRunClient(ClientBase):
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

    async def _call(self, call: ApiCall) -> Any:
        from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

        req = self._prepare(call)
        request = HTTPRequest(
            req.url,
            method=req.method,
            headers=req.headers,
            body=req.data,
            connect_timeout=min(req.timeout, self.request_timeout),
            request_timeout=req.timeout,
            allow_nonstandard_methods=True,
            decompress_response=True,
        )
        try:
            resp = await AsyncHTTPClient().fetch(request, raise_error=False)
        except HTTPClientError as e:  # 599: time-out or connection problem
            raise TaskRunConnectionError(f"request to the Jupyter server at {self.url} failed: {e}") from None
        except (OSError, http.client.HTTPException) as e:
            raise TaskRunConnectionError(f"cannot reach the Jupyter server at {self.url}: {e}") from None
        if resp.code == 599 or (resp.error is not None and resp.code < 400 and resp.code != 304):
            raise TaskRunConnectionError(f"request to the Jupyter server at {self.url} failed: {resp.error}")
        if resp.code >= 400:
            raise http_error(resp.code, resp.body or b"", resp.headers, req.url)
        return call.result(resp.body or b"")

    # -- tasks (documented on TaskRunClient) ------------------------------------

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
        return await self._call(Api.submit(code, cells, path, notebook, wait, options))

    async def submit_batch(self, submissions: Any) -> Any:
        """See ``TaskRunClient.submit_batch``."""
        return keyed(submissions, await self._call(Api.submit_batch(submissions)))

    async def attempts(self, task_id: str) -> list[dict[str, Any]]:
        return await self._call(Api.attempts(task_id))

    async def dependencies(self, task_id: str) -> dict[str, Any]:
        return await self._call(Api.dependencies(task_id))

    async def wait_all(self, tasks: Any, timeout: float | None = None) -> Any:
        """See ``TaskRunClient.wait_all``: the tasks are waited for together."""
        deadline = deadline_after(timeout)

        async def last_try(task: Any) -> dict[str, Any]:
            last = await self.wait(task_id_of(task), remaining(deadline))
            while last.get("retried_as"):
                last = await self.wait(last["retried_as"], remaining(deadline))
            return last

        items = list(tasks.items()) if isinstance(tasks, dict) else list(enumerate(tasks))
        done = await asyncio.gather(*(last_try(task) for _, task in items))
        return {name: last for (name, _), last in zip(items, done)} if isinstance(tasks, dict) else list(done)

    async def get(self, task_id: str) -> dict[str, Any]:
        return await self._call(Api.get(task_id))

    async def list(
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
        return await self._call(Api.list_tasks(status, tag, owner, name, limit, cursor, schedule, sort, where))

    async def iter_tasks(
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
    ) -> AsyncIterator[dict[str, Any]]:
        cursor = None
        while True:
            page = await self.list(status, tag, owner, name, page_size, cursor, schedule=schedule, sort=sort, where=where)
            for task in page.get("tasks", []):
                yield task
            cursor = page.get("next_cursor")
            if not cursor:
                return

    async def cancel(self, task_id: str, cascade: bool = False) -> dict[str, Any]:
        return await self._call(Api.cancel(task_id, cascade))

    async def rerun(self, task_id: str) -> dict[str, Any]:
        return await self._call(Api.rerun(task_id))

    async def delete(self, task_id: str) -> None:
        await self._call(Api.delete(task_id))

    async def logs_bytes(self, task_id: str, stream: str | None = None, offset: int = 0) -> bytes:
        return await self._call(Api.logs(task_id, stream, offset, text=False))

    async def logs(self, task_id: str, stream: str | None = None, offset: int = 0) -> str:
        return await self._call(Api.logs(task_id, stream, offset, text=True))

    async def outputs(self, task_id: str) -> builtins.list[dict[str, Any]]:  # `list` is a method here
        return await self._call(Api.outputs(task_id))

    async def notebook(self, task_id: str, save: str | None = None, *, overwrite: bool = False) -> dict[str, Any]:
        if save is not None:
            return await self.save_notebook(task_id, save, overwrite=overwrite)
        return await self._call(Api.notebook(task_id))

    async def save_notebook(self, task_id: str, path: str, *, overwrite: bool = False) -> dict[str, Any]:
        return await self._call(Api.save_notebook(task_id, path, overwrite))

    async def metrics(self, task_id: str) -> dict[str, Any]:
        return await self._call(Api.metrics(task_id))

    async def status(self) -> dict[str, Any]:
        return await self._call(Api.status())

    async def values(self, task_id: str) -> dict[str, Any]:
        return await self._call(Api.values(task_id))

    async def files(self, task_id: str) -> dict[str, Any]:
        return await self._call(Api.files(task_id))

    async def download_file(self, task_id: str, path: str) -> bytes:
        return await self._call(Api.download_file(task_id, path))

    async def notebook_html(self, task_id: str, *, no_input: bool = False) -> str:
        return await self._call(Api.notebook_html(task_id, no_input))

    async def variables(self, task_id: str) -> dict[str, Any]:
        return await self._call(Api.variables(task_id))

    async def variable_bytes(self, task_id: str, name: str) -> bytes:
        return await self._call(Api.variable_bytes(task_id, name))

    # -- schedules (documented on TaskRunClient) ---------------------------------

    async def create_schedule(
        self, task: dict[str, Any], cron: str, *, name: str | None = None, timezone: str | None = None, **options: Any
    ) -> dict[str, Any]:
        """See ``TaskRunClient.create_schedule``."""
        return await self._call(Api.create_schedule(task, cron, name, timezone, options))

    async def list_schedules(self, owner: str | None = None) -> builtins.list[dict[str, Any]]:
        return await self._call(Api.list_schedules(owner))

    async def get_schedule(self, schedule_id: str) -> dict[str, Any]:
        return await self._call(Api.get_schedule(schedule_id))

    async def update_schedule(self, schedule_id: str, **fields: Any) -> dict[str, Any]:
        return await self._call(Api.update_schedule(schedule_id, fields))

    async def pause_schedule(self, schedule_id: str) -> dict[str, Any]:
        return await self._call(Api.update_schedule(schedule_id, {"enabled": False}))

    async def resume_schedule(self, schedule_id: str) -> dict[str, Any]:
        return await self._call(Api.update_schedule(schedule_id, {"enabled": True}))

    async def run_schedule(self, schedule_id: str) -> dict[str, Any]:
        return await self._call(Api.run_schedule(schedule_id))

    async def delete_schedule(self, schedule_id: str) -> None:
        await self._call(Api.delete_schedule(schedule_id))

    async def preview_schedule(self, cron: str, timezone: str | None = None) -> dict[str, Any]:
        return await self._call(Api.preview_schedule(cron, timezone))

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
        deadline = deadline_after(timeout)
        task = await self.get(task_id)
        if is_terminal(task):
            return task
        if use_sse:
            stream = self._stream_task(task_id, task.get("last_event_id") or 0, deadline, True)
            try:
                async for event in stream:
                    if event["type"] == "end":
                        break
                task = await self.get(task_id)
                if is_terminal(task):
                    return task
            except (TaskRunHTTPError, TaskRunConnectionError) as e:
                if stream_error_is_final(e):
                    raise
            finally:
                await stream.aclose()
        schedule = PollSchedule(task_id, deadline, poll_interval)
        while True:
            task = await self.get(task_id)
            if is_terminal(task):
                return task
            await asyncio.sleep(schedule.next_delay(task))

    def stream_events(
        self,
        task_id: str,
        after: int = 0,
        *,
        reconnect: bool = True,
        timeout: float | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Async generator twin of ``TaskRunClient.stream_events``."""
        return self._stream_task(task_id, after, deadline_after(timeout), reconnect)

    async def _stream_task(self, task_id: str, after: int, deadline: float | None, reconnect: bool) -> AsyncGenerator[dict[str, Any], None]:
        state = self._stream_state(after, deadline, reconnect, "end")
        stream = self._sse(task_path(task_id, "/events"), state)
        try:
            async for sse, payload in stream:
                yield task_event_item(sse, payload, task_id)
        finally:
            await stream.aclose()

    async def stream_changes(
        self, after: int | None = None, *, reconnect: bool = True, timeout: float | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Async generator twin of ``TaskRunClient.stream_changes``."""
        stream = self._sse("events", self._stream_state(after, deadline_after(timeout), reconnect, None))
        try:
            async for sse, payload in stream:
                change = change_item(sse, payload)
                if change is not None:
                    yield change
        finally:
            await stream.aclose()

    async def _open_stream(self, url: str, headers: dict[str, str], timeout: float):
        parts = urllib.parse.urlsplit(url)
        https = parts.scheme == "https"
        port = parts.port or (443 if https else 80)
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(parts.hostname, port, ssl=ssl.create_default_context() if https else None),
            timeout,
        )
        try:
            target = parts.path + ("?" + parts.query if parts.query else "")
            lines = [f"GET {target} HTTP/1.1", f"Host: {parts.netloc}"]
            lines += [f"{k}: {v}" for k, v in headers.items()]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            await writer.drain()
            status, head = await asyncio.wait_for(_read_head(reader), timeout)
            chunked = "chunked" in head.get("transfer-encoding", "").lower()
            length = head.get("content-length")
            body = _AsyncBody(reader, chunked, int(length) if length and length.isdigit() else None)
            ctype = head.get("content-type", "")
            if status >= 400:
                payload = await asyncio.wait_for(body.read_all(), timeout)
                raise http_error(status, payload, {"Retry-After": head.get("retry-after")}, url)
            if status != 200 or not ctype.startswith("text/event-stream"):
                raise not_an_event_stream(status, ctype)
        except BaseException:
            writer.close()
            raise
        return writer, body

    async def _sse(self, path: str, state: StreamState) -> AsyncGenerator[tuple[SSE, Any], None]:
        """Twin of ``TaskRunClient._sse``: the I/O of one stream; every decision is ``state``'s."""
        while True:
            url, headers = self._stream_request(path, state.resume())
            try:
                writer, body = await self._open_stream(url, headers, state.connect_timeout(self.request_timeout))
            except (TaskRunHTTPError, OSError, asyncio.TimeoutError) as e:
                await asyncio.sleep(state.open_failed(e, url))
                continue
            state.opened()
            try:
                while True:
                    read_timeout = state.read_timeout()  # outside the try: its TimeoutError is final
                    try:
                        raw = await asyncio.wait_for(body.read_chunk(), read_timeout)
                    except (OSError, asyncio.TimeoutError, ValueError) as e:
                        state.read_failed(e)
                        break
                    if not raw:
                        state.read_failed(ConnectionError("the server closed the event stream"))
                        break
                    for item in state.receive(raw):
                        yield item
                    if state.ended:
                        return
            finally:
                writer.close()
            await asyncio.sleep(state.lost())
