"""Shared fixtures: a real in-process Jupyter server (pytest-jupyter) with jupyter_taskrun enabled."""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.parse
from typing import Any

import psutil
import pytest
from traitlets.config import Config

pytest_plugins = ["pytest_jupyter.jupyter_server"]


def pytest_collection_modifyitems(config, items):
    """Browser tests last: they are the slowest, and Playwright's sync API owns the main thread's loop."""
    items.sort(key=lambda item: "browser" in item.nodeid.split("::")[0].split("/"))

TERMINAL = {"completed", "failed", "cancelled", "timed_out"}


@pytest.fixture
def taskrun_config() -> dict[str, Any]:
    """Override in a test module (or with indirect parametrize) to configure TaskRun."""
    return {}


@pytest.fixture
def db_path(tmp_path) -> str:
    return str(tmp_path / "state" / "tasks.sqlite3")


@pytest.fixture
def jp_server_config(taskrun_config, db_path):
    # the pool is off by default in tests: fewer kernels on a 2-core CI, deterministic counts
    settings = {"db_path": db_path, "kernel_pool_size": 0, **taskrun_config}
    return Config({"ServerApp": {"jpserver_extensions": {"jupyter_taskrun": True}}, "TaskRun": settings})


@pytest.fixture
def taskrun(jp_serverapp, jp_asyncio_loop):
    """The live TaskRun service of the test server; stopped at teardown, then no kernel may remain."""
    service = jp_serverapp.web_app.settings["taskrun"]
    yield service
    jp_asyncio_loop.run_until_complete(service.stop())
    deadline = time.monotonic() + 10
    while kernel_processes() and time.monotonic() < deadline:
        time.sleep(0.05)
    leaked = kernel_processes()
    for p in leaked:
        p.kill()
    assert not leaked, f"kernels leaked: {[p.pid for p in leaked]}"


class Api:
    """Thin JSON helper over pytest-jupyter's jp_fetch (real HTTP through the real server)."""

    def __init__(self, fetch, base_url: str, port: int, headers: dict[str, str]):
        self.fetch = fetch
        self.base_url = base_url
        self.port = port
        self.headers = headers

    async def call(self, method: str, path: str, body: Any = None, params: dict | None = None, headers: dict | None = None, raw_body: bytes | None = None):
        kwargs: dict[str, Any] = {"method": method, "raise_error": False, "headers": headers or {}}
        if raw_body is not None:
            kwargs["body"] = raw_body
        elif body is not None:
            kwargs["body"] = json.dumps(body)
        elif method in ("POST", "PUT", "PATCH"):
            kwargs["body"] = b""
            kwargs["allow_nonstandard_methods"] = True
        parts = ["taskrun", "api", *[p for p in path.split("/") if p]]
        resp = await self.fetch(*parts, params=params or {}, request_timeout=120, **kwargs)
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

    async def sse(self, path: str, params: dict | None = None, headers: dict | None = None, stop=None, timeout: float = 90) -> list[dict[str, Any]]:
        """Read a real SSE stream until the server closes it, or ``stop(frames)`` says enough (then hang up)."""
        frames: list[dict[str, Any]] = []
        async with asyncio.timeout(timeout):
            async for frame in sse_stream(self.url(path, params), {**self.headers, **(headers or {})}):
                frames.append(frame)
                if stop is not None and stop(frames):
                    break
        return frames


async def sse_stream(url: str, headers: dict[str, str]):
    """Minimal real HTTP/1.1 SSE client over a raw socket (chunked decoding included).

    Closing the generator closes the socket at once, which is how a client vanishes.
    """
    parts = urllib.parse.urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        head = [f"GET {target} HTTP/1.1", f"Host: {parts.netloc}", "Accept: text/event-stream"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        await writer.drain()
        status_line = await reader.readline()
        status = int(status_line.split()[1])
        resp_headers = {}
        while True:
            line = (await reader.readline()).decode().strip()
            if not line:
                break
            k, _, v = line.partition(":")
            resp_headers[k.strip().lower()] = v.strip()
        if status != 200:
            body = await reader.read(65536)
            raise AssertionError(f"SSE request failed: {status} {body[:300]!r}")
        chunked = resp_headers.get("transfer-encoding", "").lower() == "chunked"
        buf = b""
        while True:
            if chunked:
                size_line = await reader.readline()
                if not size_line:
                    return
                size = int(size_line.strip().split(b";")[0], 16)
                if size == 0:
                    return
                data = await reader.readexactly(size + 2)
                buf += data[:-2]
            else:
                data = await reader.read(65536)
                if not data:
                    return
                buf += data
            while b"\n\n" in buf:
                raw, buf = buf.split(b"\n\n", 1)
                frame = parse_sse_frame(raw.decode())
                if frame is not None:
                    yield frame
    finally:
        writer.close()


def parse_sse_frame(raw: str) -> dict[str, Any] | None:
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


@pytest.fixture
def api(jp_fetch, jp_base_url, jp_http_port, jp_auth_header, taskrun) -> Api:
    return Api(jp_fetch, jp_base_url, jp_http_port, dict(jp_auth_header))


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
