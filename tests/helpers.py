"""Helpers shared by the test files (no fixtures here: those live in ``conftest.py``).

- ``Api``: JSON calls through the in-process test server (pytest-jupyter's ``jp_fetch``).
- ``RawSSE``: the one Server-Sent-Events reader of the test suite, on a raw asyncio
  connection, so a test can vanish (TCP reset), stall, resume with ``Last-Event-ID`` or
  shrink its receive window at will; ``sse_stream`` / ``read_sse`` are built on it.
- Small waits and counts used across files (``wait_for``, ``wait_log``, ``task_count``...).
- ``kernel_processes``: the ipykernel processes this test process started, to assert none leaked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sqlite3
import time
import urllib.parse
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

import psutil
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

TERMINAL = {"completed", "failed", "cancelled", "timed_out"}

#: A task that prints ``tick 0`` ... ``tick {n-1}``, one line every ``dt`` seconds.
TICKER = "import time\nfor i in range({n}):\n    print(f'tick {{i}}', flush=True)\n    time.sleep({dt})\n"


# ---------------------------------------------------------------------------
# Server-Sent Events
# ---------------------------------------------------------------------------


def parse_sse_frame(raw: str) -> dict[str, Any] | None:
    """One SSE frame (the text between two blank lines) as ``{id, event, data, comment}``; None if empty."""
    frame: dict[str, Any] = {"id": None, "event": "message", "data": None, "comment": False}
    data_lines = []
    for line in raw.split("\n"):
        if line.startswith(":"):
            frame["comment"] = True
        elif line.startswith("id: "):
            frame["id"] = int(line[4:])
        elif line.startswith("event: "):
            frame["event"] = line[7:]
        elif line.startswith("data: "):
            data_lines.append(line[6:])
        elif line.startswith("retry: "):
            pass
    if data_lines:
        frame["data"] = json.loads("\n".join(data_lines))
    elif not frame["comment"]:
        return None
    return frame


class RawSSE:
    """A minimal HTTP/1.1 SSE client on a raw asyncio connection (chunked decoding included).

    Unlike a library client it can be aborted (TCP reset) at any byte, resumed with
    ``Last-Event-ID``, given a tiny receive buffer (``rcvbuf``) so the server's writes
    block, and it timestamps each frame (``frame["t"]``) as it hands it out.
    """

    def __init__(self, url: str, headers: dict[str, str] | None = None, *, rcvbuf: int | None = None):
        u = urllib.parse.urlsplit(url)
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 80
        self.target = u.path + (f"?{u.query}" if u.query else "")
        self.headers = dict(headers or {})
        self.rcvbuf = rcvbuf
        self._buf = bytearray()
        self._frames: deque[bytes] = deque()
        self.eof = False
        self.status = 0
        self.resp_headers: dict[str, str] = {}
        self.body = b""

    async def connect(self, timeout: float = 30) -> RawSSE:
        """Send the request and read the response head (and, for a refusal, its body)."""
        if self.rcvbuf is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        else:
            # the buffer size must be set before connecting: it sets the TCP window offered
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
            sock.setblocking(False)
            try:
                await asyncio.get_running_loop().sock_connect(sock, (self.host, self.port))
            except BaseException:
                sock.close()
                raise
            self.reader, self.writer = await asyncio.open_connection(sock=sock)
        lines = [f"GET {self.target} HTTP/1.1", f"Host: {self.host}:{self.port}", "Accept: text/event-stream"]
        lines += [f"{k}: {v}" for k, v in self.headers.items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        status_line, *hdrs = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        for h in hdrs:
            if ":" in h:
                k, v = h.split(":", 1)
                self.resp_headers[k.strip().lower()] = v.strip()
        self.chunked = "chunked" in self.resp_headers.get("transfer-encoding", "")
        if self.status != 200:
            n = int(self.resp_headers.get("content-length", "0") or 0)
            self.body = await asyncio.wait_for(self.reader.readexactly(n), timeout) if n else b""
        return self

    def json(self) -> Any:
        return json.loads(self.body)

    async def _chunk(self) -> bytes:
        try:
            if not self.chunked:
                return await self.reader.read(65536)
            line = await self.reader.readline()
            if not line:
                return b""
            size = int(line.strip().split(b";")[0] or b"0", 16)
            if size == 0:
                return b""
            data = await self.reader.readexactly(size)
            await self.reader.readexactly(2)
            return data
        except (asyncio.IncompleteReadError, ConnectionError):
            return b""

    async def _fill(self, deadline: float | None) -> None:
        """Read until at least one whole frame is buffered, or EOF."""
        while not self._frames and not self.eof:
            if deadline is None:
                chunk = await self._chunk()
            else:
                chunk = await asyncio.wait_for(self._chunk(), max(0.01, deadline - time.monotonic()))
            if not chunk:
                self.eof = True
                return
            # look for a frame end only where this chunk could have completed one: big frames
            # arrive in many chunks, and rescanning the whole buffer each time would be quadratic
            start = max(0, len(self._buf) - 1)
            self._buf += chunk
            if self._buf.find(b"\n\n", start) < 0:
                continue
            *frames, rest = bytes(self._buf).split(b"\n\n")
            self._frames.extend(frames)
            self._buf = bytearray(rest)

    async def next_frame(self, timeout: float | None = 30, *, comments: bool = False) -> dict[str, Any] | None:
        """The next event frame, stamped with the time it was handed out; None at EOF.

        Keep-alive comments are skipped unless ``comments``. ``timeout`` bounds the wait for
        the frame (None: no bound).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            await self._fill(deadline)
            if not self._frames:
                return None
            frame = parse_sse_frame(self._frames.popleft().decode())
            if frame is None or (not comments and frame["comment"] and frame["data"] is None):
                continue
            frame["t"] = time.monotonic()
            return frame

    def abort(self) -> None:
        """Vanish: reset the TCP connection without a goodbye."""
        with contextlib.suppress(Exception):
            self.writer.transport.abort()

    async def close(self) -> None:
        """Hang up politely (FIN)."""
        with contextlib.suppress(Exception):
            self.writer.close()
            await self.writer.wait_closed()


async def sse_stream(url: str, headers: dict[str, str], *, comments: bool = True) -> AsyncIterator[dict[str, Any]]:
    """Every frame of a real SSE stream (keep-alive comments included) until the server ends it.

    A refusal (status other than 200) raises ``AssertionError``. Closing the generator
    closes the socket at once, which is how a client vanishes.
    """
    sse = await RawSSE(url, headers).connect()
    try:
        if sse.status != 200:
            raise AssertionError(f"SSE request failed: {sse.status} {sse.body[:300]!r}")
        while (frame := await sse.next_frame(None, comments=comments)) is not None:
            yield frame
    finally:
        await sse.close()


async def read_sse(
    url: str,
    headers: dict[str, str],
    *,
    stop: Callable[[list[dict[str, Any]]], bool] | None = None,
    timeout: float = 90,
    comments: bool = True,
) -> list[dict[str, Any]]:
    """Read a stream until the server closes it, or ``stop(frames)`` says enough (then hang up)."""
    frames: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout), contextlib.aclosing(sse_stream(url, headers, comments=comments)) as stream:
        async for frame in stream:
            frames.append(frame)
            if stop is not None and stop(frames):
                break
    return frames


# ---------------------------------------------------------------------------
# the in-process server's API
# ---------------------------------------------------------------------------


class Api:
    """Thin JSON helper over pytest-jupyter's jp_fetch (real HTTP through the real server)."""

    def __init__(self, fetch, base_url: str, port: int, headers: dict[str, str]):
        self.fetch = fetch
        self.base_url = base_url
        self.port = port
        self.headers = headers

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: dict | None = None,
        headers: dict | None = None,
        raw_body: bytes | None = None,
    ):
        kwargs: dict[str, Any] = {"method": method, "raise_error": False, "headers": headers or {}}
        if raw_body is not None:
            kwargs["body"] = raw_body
        elif body is not None:
            kwargs["body"] = json.dumps(body)
        elif method in ("POST", "PUT", "PATCH"):
            kwargs["body"] = b""
            kwargs["allow_nonstandard_methods"] = True
        parts = ["taskrun", "api", *[p for p in path.split("/") if p]]
        # a long poll answers after at most `wait` seconds: the client waits longer, so that a task
        # that did not end shows its state rather than an HTTP timeout
        try:
            wait = float((params or {}).get("wait") or 0)
        except (TypeError, ValueError):  # a test of bad input (wait=abc): the server answers 400 at once
            wait = 0
        resp = await self.fetch(*parts, params=params or {}, request_timeout=max(120, wait + 60), **kwargs)
        text = resp.body.decode("utf-8", "replace") if resp.body else ""
        ctype = resp.headers.get("Content-Type", "")
        data = json.loads(text) if text and "json" in ctype else text
        return resp.code, data, resp.headers

    async def submit(self, **body: Any) -> dict[str, Any]:
        code, data, _ = await self.call("POST", "tasks", body)
        assert code == 201, data
        return data

    async def get(self, task_id: str) -> dict[str, Any]:
        code, data, _ = await self.call("GET", f"tasks/{task_id}")
        assert code == 200, data
        return data

    async def wait(self, task_id: str, wait_s: float = 90) -> dict[str, Any]:
        code, data, _ = await self.call("GET", f"tasks/{task_id}", params={"wait": wait_s})
        assert code == 200, data
        assert data["status"] in TERMINAL, f"task did not finish in {wait_s}s: {data['status']}"
        return data

    async def wait_status(self, task_id: str, status: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            task = await self.get(task_id)
            if task["status"] == status:
                return task
            assert time.monotonic() < deadline, f"task never reached {status}: {task['status']}"
            await asyncio.sleep(0.02)

    async def run(self, wait_s: float = 90, **body: Any) -> dict[str, Any]:
        return await self.wait((await self.submit(**body))["id"], wait_s)

    async def events(self, task_id: str) -> list[dict[str, Any]]:
        frames = await self.sse(f"tasks/{task_id}/events")
        return [f["data"] for f in frames if f["event"] != "end"]

    def url(self, path: str, params: dict | None = None) -> str:
        q = ("?" + urllib.parse.urlencode(params)) if params else ""
        return f"http://127.0.0.1:{self.port}{self.base_url}taskrun/api/{path}{q}"

    async def sse(
        self, path: str, params: dict | None = None, headers: dict | None = None, stop=None, timeout: float = 90
    ) -> list[dict[str, Any]]:
        """Read a real SSE stream until the server closes it, or ``stop(frames)`` says enough (then hang up)."""
        return await read_sse(self.url(path, params), {**self.headers, **(headers or {})}, stop=stop, timeout=timeout)


async def sse_connect(api: Api, path: str, headers: dict[str, str] | None = None, params: dict | None = None) -> RawSSE:
    return await RawSSE(api.url(path, params), {**api.headers, **(headers or {})}).connect()


async def ws_connect(api: Api, task_id: str, after: int = 0):
    url = api.url(f"tasks/{task_id}/ws", {"after": after}).replace("http://", "ws://")
    return await websocket_connect(HTTPRequest(url, headers=api.headers))


# ---------------------------------------------------------------------------
# waits, counts and checks
# ---------------------------------------------------------------------------


async def wait_for(predicate, timeout: float = 10, interval: float = 0.02, what: str = "condition"):
    """Poll ``predicate`` (sync or async) until it returns something truthy; that value is returned."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(interval)


async def logs_of(api: Api, task_id: str) -> str:
    code, text, _ = await api.call("GET", f"tasks/{task_id}/logs")
    assert code == 200
    return text


async def wait_log(api: Api, task_id: str, needle: str, timeout: float = 60) -> str:
    """The task's logs once they contain the whole line holding ``needle``."""

    async def check():
        text = await logs_of(api, task_id)
        # the whole line: a log chunk may end in the middle of it
        return text if needle in text and "\n" in text.split(needle, 1)[1] else None

    return await wait_for(check, timeout, 0.05, f"{needle!r} in the logs")


async def task_count(api: Api) -> int:
    n, cursor = 0, None
    while True:
        params = {"limit": 500, **({"cursor": cursor} if cursor else {})}
        code, data, _ = await api.call("GET", "tasks", params=params)
        assert code == 200, data
        n += len(data["tasks"])
        cursor = data["next_cursor"]
        if not cursor:
            return n


def db_count(db_path: str, table: str = "tasks") -> int:
    db = sqlite3.connect(db_path, timeout=30)
    try:
        return db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    finally:
        db.close()


def assert_json_error(code: int, data: Any, status: int, reason: str | None = None) -> None:
    """A refusal the house way: this status and a JSON body with a message (and this reason)."""
    assert code == status, (code, data)
    assert isinstance(data, dict) and isinstance(data.get("message"), str) and data["message"], data
    if reason is not None:
        assert data.get("reason") == reason, data


# ---------------------------------------------------------------------------
# processes
# ---------------------------------------------------------------------------


def gone(pid: int) -> bool:
    """The process has exited (a zombie counts: it runs no more)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def kernel_processes() -> list[psutil.Process]:
    """Live ipykernel processes started by this test process (its descendants)."""
    me = psutil.Process(os.getpid())
    out = []
    for p in me.children(recursive=True):
        try:
            if any("ipykernel" in a for a in p.cmdline()) and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.Error:
            continue
    return out
