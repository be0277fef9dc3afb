"""HTTP-layer hardening (issue 19): WebSocket floods, leaked stream slots on refused handshakes,
saving the executed notebook only by POST, RFC 6266 downloads, quiet and secret-free refusal logs,
and 403/404 for unknown API paths. Real servers only (in-process pytest-jupyter and a subprocess)."""

from __future__ import annotations

import base64
import json
import logging
import os
import signal
import socket
import struct
import subprocess
import time
import urllib.parse

import psutil
import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from jupyter_taskrun.client import TaskRunClient

UNICODE_NAME = "print('こんにちは')\x07"


async def raw(api, method: str, path: str, headers: dict | None = None, body: bytes | None = None, params: dict | None = None):
    req = HTTPRequest(
        api.url(path, params), method=method, headers=headers or {}, body=body, allow_nonstandard_methods=True, request_timeout=30
    )
    resp = await AsyncHTTPClient().fetch(req, raise_error=False)
    text = resp.body.decode("utf-8", "replace") if resp.body else ""
    data = json.loads(text) if text and "json" in resp.headers.get("Content-Type", "") else text
    return resp.code, data, resp.headers


# ---------------------------------------------------------------------------
# 2. refused handshakes keep no stream slot; 6. origin refusal is JSON
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("taskrun_config", [{"max_streams_per_user": 3}])
async def test_failed_ws_handshakes_do_not_leak_stream_slots(api, taskrun):
    task = await api.run(code="print('x')")
    path = f"tasks/{task['id']}/ws"
    auth = dict(api.headers)
    ws_headers = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13"}
    key = {"Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode()}
    # a browser's login cookie (token-authenticated requests skip the origin check)
    _, _, h = await raw(api, "GET", "status", headers=auth)
    cookie = {"Cookie": next(c.split(";", 1)[0] for c in h.get_list("Set-Cookie") if c.startswith("username-"))}
    bad = [
        ("plain GET", auth, 400),
        ("no Sec-WebSocket-Key", {**auth, **ws_headers}, 400),
        ("cross-origin", {**cookie, **ws_headers, **key, "Origin": "http://evil.example"}, 403),
    ]
    for what, headers, status in bad:
        for _ in range(4):  # more than max_streams_per_user each
            code, data, _ = await raw(api, "GET", path, headers=headers)
            assert code == status, (what, code, data)
            assert isinstance(data, dict) and data.get("reason"), (what, data)  # JSON like every route
    assert taskrun.status()["streams"] == 0
    frames = await api.sse(f"tasks/{task['id']}/events")
    assert frames[-1]["event"] == "end"
    assert taskrun.status()["streams"] == 0


# ---------------------------------------------------------------------------
# 3. saving is a POST; overwrite, hidden files, long names, full disk
# ---------------------------------------------------------------------------


async def test_notebook_save_is_a_post_with_contents_rules(api, jp_root_dir):
    tid = (await api.run(code="print('saved text')"))["id"]
    code, data, _ = await api.call("GET", f"tasks/{tid}/notebook", params={"save": "via-get.ipynb"})
    assert code == 405 and data["reason"] == "method-not-allowed" and "POST" in data["message"], (code, data)
    assert not (jp_root_dir / "via-get.ipynb").exists()
    code, data, _ = await api.call("POST", f"tasks/{tid}/notebook", {"path": "out.ipynb"})
    assert code == 201 and data["path"] == "out.ipynb", data
    assert "saved text" in (jp_root_dir / "out.ipynb").read_text()
    (jp_root_dir / "out.ipynb").write_text("{}")  # the user edited it
    code, data, _ = await api.call("POST", f"tasks/{tid}/notebook", {"path": "out.ipynb"})
    assert code == 409 and data["reason"] == "exists", data
    assert (jp_root_dir / "out.ipynb").read_text() == "{}"
    code, data, _ = await api.call("POST", f"tasks/{tid}/notebook", {"path": "out.ipynb", "overwrite": True})
    assert code == 201 and "saved text" in (jp_root_dir / "out.ipynb").read_text()
    (jp_root_dir / ".hidden").mkdir()
    for hidden in (".hidden/x.ipynb", ".x.ipynb"):
        code, data, _ = await api.call("POST", f"tasks/{tid}/notebook", {"path": hidden})
        assert 400 <= code < 500 and code != 404, (hidden, code, data)
    assert list((jp_root_dir / ".hidden").iterdir()) == [] and not (jp_root_dir / ".x.ipynb").exists()
    for long in ("a" * 300 + ".ipynb", "d/" * 3000 + "x.ipynb"):
        code, data, _ = await api.call("POST", f"tasks/{tid}/notebook", {"path": long})
        assert code == 400 and data["reason"] == "invalid", (code, data)
    for body in ({"path": 3}, {"path": "x.ipynb", "overwrite": "yes"}, {"path": "x.ipynb", "extra": 1}, ["x.ipynb"], {"path": "x.txt"}):
        code, data, _ = await api.call("POST", f"tasks/{tid}/notebook", body)
        assert code == 400, (body, code, data)


async def test_notebook_save_on_a_full_disk_is_507_json(api, jp_root_dir):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mnt = jp_root_dir / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.strip()}")
    try:
        with open(mnt / "filler", "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        tid = (await api.run(code="print('x' * 100_000)"))["id"]
        code, data, _ = await api.call("POST", f"tasks/{tid}/notebook", {"path": "small/full.ipynb"})
        assert code == 507 and data["reason"] == "insufficient-storage", (code, data)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


# ---------------------------------------------------------------------------
# 4. downloads of tasks with non-Latin-1 / control characters in their names
# ---------------------------------------------------------------------------


async def test_notebook_download_with_unicode_name_uses_rfc6266(api):
    tid = (await api.run(code="print(1)", name=UNICODE_NAME))["id"]
    code, nb, headers = await api.call("GET", f"tasks/{tid}/notebook")
    assert code == 200 and nb["nbformat"] == 4
    cd = headers["Content-Disposition"]
    assert cd.isascii() and cd.startswith('attachment; filename="') and "\x07" not in cd
    star = cd.split("filename*=UTF-8''", 1)[1]
    assert urllib.parse.unquote(star) == f"print('こんにちは')-{tid[:8]}.ipynb"


# ---------------------------------------------------------------------------
# 5, 7. refusals are logged once, at INFO, without traceback or token
# ---------------------------------------------------------------------------


async def test_refusals_are_logged_without_traceback_or_token(api, caplog):
    tid = (await api.run(code="print(1)"))["id"]
    code, _, _ = await api.call("DELETE", f"tasks/{tid}")
    assert code == 204
    token = api.headers["Authorization"].split()[1]
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        for path in (f"tasks/{tid}", f"tasks/{tid}/logs", f"tasks/{tid}/notebook"):
            code, data, _ = await raw(api, "GET", path, params={"token": token})
            assert code == 404 and data["reason"] == "not-found"
        code, _, _ = await raw(api, "GET", "tasks", params={"limit": "0", "token": token})
        assert code == 400
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert token not in text
    assert "Uncaught exception" not in text and "Traceback" not in caplog.text
    assert not [r for r in caplog.records if r.exc_info and r.name != "asyncio"], [r.getMessage() for r in caplog.records if r.exc_info]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR and "taskrun" in r.getMessage()]


# ---------------------------------------------------------------------------
# 6. unknown paths under /taskrun/api/: 403 without auth, 404 JSON with
# ---------------------------------------------------------------------------


async def test_unknown_api_paths_are_403_without_auth_and_404_with(api):
    for method in ("GET", "POST", "DELETE", "PUT"):
        for path in ("nope", "tasks/zzz/logs", "tasks/" + "0" * 32 + "/bogus"):
            body = b"" if method in ("POST", "PUT") else None
            code, data, _ = await raw(api, method, path, body=body)
            assert code == 403, (method, path, code, data)
            code, data, _ = await raw(api, method, path, headers=api.headers, body=body)
            assert code == 404 and data["reason"] == "not-found", (method, path, code, data)


# ---------------------------------------------------------------------------
# 1. a WebSocket message flood (subprocess server) + 4. the sync client download
# ---------------------------------------------------------------------------


def _frame(payload: bytes, opcode: int = 0x1) -> bytes:
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


def test_ws_message_flood_is_bounded_and_the_server_stays_healthy(server_factory):
    server = server_factory()
    client = TaskRunClient(server.url, server.token)
    # 4. the client downloads a notebook of a task with a non-Latin-1 name
    done = client.wait(client.submit("print(2)", name=UNICODE_NAME)["id"], timeout=120)
    assert client.notebook(done["id"])["nbformat"] == 4
    assert client.notebook(done["id"], save="c.ipynb")["path"] == "c.ipynb"
    # a task that stays open, so the socket has a live stream
    task = client.submit("import time; time.sleep(120)")
    proc = psutil.Process(server.proc.pid)
    rss0 = proc.memory_info().rss
    sock = socket.create_connection(("127.0.0.1", server.port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /taskrun/api/tasks/{task['id']}/ws HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\nAuthorization: token {server.token}\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    sock.setblocking(False)
    frame = _frame(b"x")
    sent, t0 = 0, time.monotonic()
    closed = False
    while sent < 100_000 and time.monotonic() - t0 < 60:
        try:
            sock.send(frame)  # never read
            sent += 1
        except BlockingIOError:
            time.sleep(0.001)
        except OSError:
            closed = True
            break
    peak = proc.memory_info().rss
    # the socket was closed by the server: a close frame 1008, EOF or a reset
    sock.setblocking(True)
    sock.settimeout(10)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                closed = True
                break
            data += chunk
    except (ConnectionResetError, BrokenPipeError):
        closed = True
    except TimeoutError:
        pass
    assert closed or b"\x88\x02\x03\xf0" in data, "the flooding socket was not closed"
    if b"\x88" in data:
        assert struct.pack(">H", 1008) in data
    sock.close()
    assert peak - rss0 < 64 * 2**20, f"server RSS grew {(peak - rss0) / 2**20:.0f} MiB"
    t = time.monotonic()
    status, _ = server.request("GET", "taskrun/api/status", timeout=5)
    assert status == 200 and time.monotonic() - t < 1.0
    time.sleep(2)  # let the closed socket's pending writes fail
    lines = server.log_path.read_text(errors="replace").splitlines()
    assert len(lines) < 200, f"{len(lines)} log lines"
    assert not [ln for ln in lines if "Traceback" in ln], "\n".join(lines[-40:])
    client.cancel(task["id"])
    # SIGTERM stops it
    p = server.proc
    p.send_signal(signal.SIGTERM)
    p.wait(30)
