"""Reliability (issue 8): faults really injected, limits really hit, outcomes asserted.

Faults: kernels killed from outside, segfaulting or exiting; tasks that fork children and
daemons; SSE/WebSocket clients that vanish, stall or reconnect; SQLite locked by another
connection; a full or read-only disk under the database.
Limits: task/cell timeouts, memory_limit, max_output_bytes, max_queued_tasks,
max_request_bytes, max_streams_per_user.

Server restarts after SIGKILL are in ``test_restart.py``; bad input and auth in
``test_fuzz.py`` / ``test_security.py``; the 500-task burst in ``test_load.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from ._server import JupyterServer
from .conftest import TERMINAL, kernel_processes, parse_sse_frame

# ---------------------------------------------------------------------------
# helpers: a raw HTTP/SSE client (so a test can vanish, stall or resume at will)
# ---------------------------------------------------------------------------


class RawSSE:
    """A minimal HTTP/1.1 SSE client on a raw asyncio connection.

    Unlike a library client it can be aborted (TCP reset) at any byte, resumed with
    ``Last-Event-ID`` and timestamps each frame on arrival.
    """

    def __init__(self, url: str, headers: dict[str, str] | None = None):
        u = urllib.parse.urlsplit(url)
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 80
        self.target = u.path + (f"?{u.query}" if u.query else "")
        self.headers = dict(headers or {})
        self._buf = b""
        self.eof = False
        self.status = 0
        self.resp_headers: dict[str, str] = {}
        self.body = b""

    async def connect(self, timeout: float = 30) -> RawSSE:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
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

    async def next_frame(self, timeout: float = 30) -> dict[str, Any] | None:
        """The next event frame (comments skipped), stamped with its arrival time; None at EOF."""
        deadline = time.monotonic() + timeout
        while True:
            while b"\n\n" not in self._buf:
                if self.eof:
                    return None
                chunk = await asyncio.wait_for(self._chunk(), max(0.01, deadline - time.monotonic()))
                if not chunk:
                    self.eof = True
                    continue
                self._buf += chunk
            raw, self._buf = self._buf.split(b"\n\n", 1)
            frame = parse_sse_frame(raw.decode())
            if frame is None or frame["comment"] and frame["data"] is None:
                continue
            frame["t"] = time.monotonic()
            return frame

    def abort(self) -> None:
        """Vanish: reset the TCP connection without a goodbye."""
        with contextlib.suppress(Exception):
            self.writer.transport.abort()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()
            await self.writer.wait_closed()


async def sse_connect(api, path: str, headers: dict[str, str] | None = None, params: dict | None = None) -> RawSSE:
    return await RawSSE(api.url(path, params), {**api.headers, **(headers or {})}).connect()


async def ws_connect(api, task_id: str, after: int = 0):
    url = api.url(f"tasks/{task_id}/ws", {"after": after}).replace("http://", "ws://")
    return await websocket_connect(HTTPRequest(url, headers=api.headers))


async def wait_for(predicate, timeout: float = 10, interval: float = 0.02, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(interval)


async def logs_of(api, task_id: str) -> str:
    code, text, _ = await api.call("GET", f"tasks/{task_id}/logs")
    assert code == 200
    return text


async def wait_log(api, task_id: str, needle: str, timeout: float = 60) -> str:
    async def check():
        text = await logs_of(api, task_id)
        # the whole line: a log chunk may end in the middle of it
        return text if needle in text and "\n" in text.split(needle, 1)[1] else None

    return await wait_for(check, timeout, 0.05, f"{needle!r} in the logs")


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def task_count(api) -> int:
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
    assert code == status, (code, data)
    assert isinstance(data, dict) and isinstance(data.get("message"), str) and data["message"], data
    if reason is not None:
        assert data.get("reason") == reason, data


# ---------------------------------------------------------------------------
# kernel death
# ---------------------------------------------------------------------------

LINES = "for i in range(200):\n    print('line', i)\nsys.stdout.flush()\n"
DEATHS = {
    "sigkill-from-outside": (
        "import os, sys, time\n" + LINES + "print('READY', os.getpid(), flush=True)\ntime.sleep(120)\n",
        ["kernel died", "SIGKILL"],
    ),
    "segfault": (
        "import ctypes, os, sys, time\n" + LINES + "print('READY', os.getpid(), flush=True)\ntime.sleep(0.3)\nctypes.string_at(0)\n",
        ["kernel died", "SIGSEGV"],
    ),
    "os._exit(3)": (
        "import os, sys, time\n" + LINES + "print('READY', os.getpid(), flush=True)\ntime.sleep(0.3)\nos._exit(3)\n",
        ["kernel died", "exited with code 3"],
    ),
}


@pytest.mark.parametrize("kind", list(DEATHS))
async def test_kernel_death_fails_task_within_2s_keeps_output_next_task_runs(api, kind):
    code, words = DEATHS[kind]
    task = await api.submit(code=code, name=kind, timeout=60)
    sse = await sse_connect(api, f"tasks/{task['id']}/events")
    log_text, t_ready, final = "", None, None
    while True:
        frame = await sse.next_frame(60)
        assert frame is not None, "stream ended without a final status"
        if frame["event"] == "log":
            log_text += frame["data"]["data"]["text"]
            if t_ready is None and "READY" in log_text and "\n" in log_text.split("READY")[1]:
                t_ready = frame["t"]
                if kind == "sigkill-from-outside":
                    pid = int(log_text.split("READY")[1].split()[0])
                    os.kill(pid, signal.SIGKILL)
                    t_death = time.monotonic()
                else:
                    t_death = t_ready + 0.3  # the task dies 0.3 s after printing READY
        if frame["event"] == "status" and frame["data"]["data"]["status"] in TERMINAL:
            final = frame
            break
    await sse.close()
    assert t_ready is not None
    noticed = final["t"] - t_death
    assert noticed < 2.0, f"death noticed after {noticed:.2f} s"
    task = await api.get(task["id"])
    assert task["status"] == "failed", task
    for w in words:
        assert w in task["error"]["reason"], task["error"]
    # all output produced before the death is kept, in order
    logs = await logs_of(api, task["id"])
    assert logs.startswith("".join(f"line {i}\n" for i in range(200)) + "READY"), logs[:200]
    after = await api.run(code="print('fine')")
    assert after["status"] == "completed"
    assert await logs_of(api, after["id"]) == "fine\n"


# ---------------------------------------------------------------------------
# process trees: children, grandchildren, daemons
# ---------------------------------------------------------------------------

TREE = r"""
import os, subprocess, sys, time
kids = [subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']) for _ in range(2)]
shell = subprocess.Popen(['sh', '-c', 'sleep 600 & sleep 600 & wait'])
r, w = os.pipe()
if os.fork() == 0:              # classic daemon: double fork + setsid, parent exits
    os.setsid()
    if os.fork() == 0:
        os.write(w, str(os.getpid()).encode())
        while True:
            time.sleep(1)
    os._exit(0)
os.wait()
daemon = int(os.read(r, 32))
time.sleep(0.3)                 # let the shell start its sleeps
print('TREE', os.getpid(), daemon, flush=True)
time.sleep(600)
"""


def tree_pids(kernel_pid: int, extra: list[int]) -> set[int]:
    pids = {kernel_pid, *extra}
    with contextlib.suppress(psutil.Error):
        pids |= {c.pid for c in psutil.Process(kernel_pid).children(recursive=True)}
    return pids


@pytest.mark.parametrize("how", ["cancel", "timeout"])
async def test_cancel_and_timeout_kill_the_whole_process_tree(api, how):
    body: dict[str, Any] = {"code": TREE}
    if how == "timeout":
        body["timeout"] = 6
    task = await api.submit(**body)
    logs = await wait_log(api, task["id"], "TREE", 60)
    kernel_pid, daemon = map(int, logs.split("TREE")[1].split()[:2])
    pids = tree_pids(kernel_pid, [daemon])
    assert len(pids) >= 7, pids  # kernel, 2 pythons, sh + 2 sleeps, the daemon
    # really detached: its own session, and its parent (the intermediate fork) has exited
    assert not gone(daemon) and os.getsid(daemon) != os.getsid(kernel_pid)
    if how == "cancel":
        code, _, _ = await api.call("POST", f"tasks/{task['id']}/cancel")
        assert code == 202
    t0 = time.monotonic()
    done = await api.wait(task["id"], 30)
    assert done["status"] == ("cancelled" if how == "cancel" else "timed_out"), done
    await wait_for(lambda: all(gone(p) for p in pids), 5, what="every process of the task's tree to be gone")
    assert time.monotonic() - t0 < 10


ESCAPE = r"""
import os, subprocess, time
# a daemon that drops the whole environment (like `env -i`) and leaves the session
out = subprocess.run(['sh', '-c', 'sleep 600 >/dev/null 2>&1 & echo $!'], env={}, start_new_session=True,
                     capture_output=True, text=True).stdout
print('ESCAPED', int(out), flush=True)
time.sleep(600)
"""


async def test_cancel_kills_a_daemon_that_scrubbed_its_environment(api):
    task = await api.submit(code=ESCAPE)
    logs = await wait_log(api, task["id"], "ESCAPED", 60)
    pid = int(logs.split("ESCAPED")[1].split()[0])
    try:
        assert not gone(pid)
        code, _, _ = await api.call("POST", f"tasks/{task['id']}/cancel")
        assert code == 202
        assert (await api.wait(task["id"], 30))["status"] == "cancelled"
        await wait_for(lambda: gone(pid), 5, what="the escaped daemon to be killed")
    finally:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


# ---------------------------------------------------------------------------
# stream clients that vanish, reconnect, stall
# ---------------------------------------------------------------------------

TICKER = "import time\nfor i in range({n}):\n    print(f'tick {{i}}', flush=True)\n    time.sleep({dt})\n"


async def test_vanishing_sse_and_ws_clients_free_everything(api, taskrun):
    task = await api.submit(code=TICKER.format(n=150, dt=0.03) + "time.sleep(2)")
    tid = task["id"]
    await api.wait_status(tid, "running")
    base_streams = taskrun.status()["streams"]
    sse = [await sse_connect(api, f"tasks/{tid}/events") for _ in range(20)]
    feed = [await sse_connect(api, "events") for _ in range(5)]
    for s in sse:
        assert s.status == 200 and (await s.next_frame(10)) is not None
    ws = [await ws_connect(api, tid) for _ in range(10)]
    for w in ws:
        assert json.loads(await w.read_message())["type"] == "connected"
    assert taskrun.status()["streams"] == base_streams + 35
    assert taskrun.broker.subscriber_count(tid) >= 30
    # vanish: TCP resets, no goodbye (WebSockets: the socket closed under them, no close frame)
    for s in sse + feed:
        s.abort()
    for w in ws:
        w.stream.close()
    # clients that send a request and disappear before reading the answer
    for _ in range(10):
        s = socket.create_connection(("127.0.0.1", api.port))
        u = urllib.parse.urlsplit(api.url(f"tasks/{tid}/events"))
        auth = api.headers["Authorization"]
        s.sendall(f"GET {u.path} HTTP/1.1\r\nHost: 127.0.0.1:{api.port}\r\nAuthorization: {auth}\r\n\r\n".encode())
        s.close()
    await wait_for(lambda: taskrun.status()["streams"] == 0, 5, what="every stream slot to be released")
    await wait_for(lambda: taskrun.broker.subscriber_count() == 0, 5, what="every broker subscription to go")
    done = await api.wait(tid)
    assert done["status"] == "completed"
    assert (await logs_of(api, tid)) == "".join(f"tick {i}\n" for i in range(150))




N_RESUME = 1500


async def test_sse_resume_many_times_no_gap_no_duplicate(api, taskrun):
    rnd = random.Random(8)
    task = await api.submit(code=TICKER.format(n=N_RESUME, dt=0.002))
    tid = task["id"]
    seen: list[dict[str, Any]] = []
    last, reconnects, ended = 0, 0, False
    while not ended:
        headers = {"Last-Event-ID": str(last)} if last else {}
        sse = await sse_connect(api, f"tasks/{tid}/events", headers)
        assert sse.status == 200
        reconnects += 1
        for _ in range(rnd.randint(1, 6)):
            frame = await sse.next_frame(30)
            if frame is None or frame["event"] == "end":
                ended = True
                break
            seen.append(frame)
            last = frame["id"]
        sse.abort() if rnd.random() < 0.5 else await sse.close()
    assert reconnects > 20
    seqs = [f["id"] for f in seen]
    assert seqs == list(range(1, len(seqs) + 1)), "a resumed stream has no gap and no duplicate"
    assert [f["data"]["seq"] for f in seen] == seqs
    text = "".join(f["data"]["data"]["text"] for f in seen if f["event"] == "log")
    # what the stream delivered is exactly what the store holds (kernel-side loss: see the busy-loop test)
    assert text == await logs_of(api, tid) and text.startswith("tick 0\ntick 1\n")
    assert seqs[-1] == (await api.get(tid))["last_event_id"]
    await wait_for(lambda: taskrun.status()["streams"] == 0, 5, what="stream slots released")


async def test_ws_resume_many_times_no_gap_no_duplicate(api, taskrun):
    rnd = random.Random(9)
    tid = (await api.submit(code=TICKER.format(n=N_RESUME, dt=0.002)))["id"]
    seen: list[int] = []
    text = ""
    ended = False
    reconnects = 0
    while not ended:
        ws = await ws_connect(api, tid, after=seen[-1] if seen else 0)
        reconnects += 1
        assert json.loads(await ws.read_message())["type"] == "connected"
        for _ in range(rnd.randint(1, 6)):
            msg = await asyncio.wait_for(ws.read_message(), 30)
            if msg is None:
                ended = True
                break
            ev = json.loads(msg)
            if ev.get("type") == "end":
                ended = True
                break
            seen.append(ev["seq"])
            if ev["type"] == "log":
                text += ev["data"]["text"]
        ws.close() if rnd.random() < 0.5 else ws.stream.close()
    assert reconnects > 10
    assert seen == list(range(1, len(seen) + 1))
    assert seen[-1] == (await api.get(tid))["last_event_id"]
    assert text == await logs_of(api, tid) and text.startswith("tick 0\ntick 1\n")
    await wait_for(lambda: taskrun.status()["streams"] == 0, 5, what="stream slots released")


def rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


BIG_OUTPUT = "import sys\nline = 'x' * 99 + '\\n'\nfor i in range({n}):\n    sys.stdout.write(line)\n'done'"


def stall_socket(server: JupyterServer, path: str) -> socket.socket:
    """Send a GET and never read: the server's writes pile up against a full TCP window."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", server.port))
    s.sendall(f"GET /{path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nAuthorization: token {server.token}\r\n\r\n".encode())
    return s


def read_sse_thread(server: JupyterServer, path: str, out: dict[str, Any]) -> threading.Thread:
    def run() -> None:
        req = urllib.request.Request(server.url + path, headers={"Authorization": f"token {server.token}"})
        frames, buf = [], b""
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=300) as resp:
            while True:
                chunk = resp.read1(1 << 16)
                if not chunk:
                    break
                buf += chunk
                while b"\n\n" in buf:
                    raw, buf = buf.split(b"\n\n", 1)
                    f = parse_sse_frame(raw.decode())
                    if f is not None and not f["comment"]:
                        f["t"] = time.monotonic()
                        frames.append(f)
        out["frames"] = frames

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_stalled_clients_do_not_slow_others_or_the_task_and_memory_stays_bounded(tmp_path):
    n_lines = 300_000  # 30 MB of output
    args = ("--TaskRun.kernel_pool_size=0", "--TaskRun.max_concurrent_tasks=1")
    with JupyterServer(tmp_path, extra_args=args) as server:
        pid = server.proc.pid

        def submit() -> dict:
            status, body = server.request("POST", "taskrun/api/tasks", json.dumps({"code": BIG_OUTPUT.format(n=n_lines)}).encode())
            assert status == 201, body
            return json.loads(body)

        def wait(tid: str) -> dict:
            _status, body = server.request("GET", f"taskrun/api/tasks/{tid}?wait=300", timeout=310)
            return json.loads(body)

        baseline = wait(submit()["id"])
        assert baseline["status"] == "completed"
        rss0 = rss(pid)
        task = submit()
        tid = task["id"]
        stalled = [stall_socket(server, f"taskrun/api/tasks/{tid}/events") for _ in range(4)]
        stalled.append(stall_socket(server, "taskrun/api/events?after=0"))
        good: dict[str, Any] = {}
        reader = read_sse_thread(server, f"taskrun/api/tasks/{tid}/events", good)
        peak, stop = rss0, threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                with contextlib.suppress(psutil.Error):
                    peak = max(peak, rss(pid))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        done = wait(tid)
        t_done = time.monotonic()
        reader.join(60)
        stop.set()
        sampler.join()
        assert done["status"] == "completed", done
        # the task was not slowed down by the stalled readers
        assert done["metrics"]["wall"] < 2 * baseline["metrics"]["wall"] + 3, (done["metrics"]["wall"], baseline["metrics"]["wall"])
        # the good client got everything, in order, promptly
        frames = good["frames"]
        ids = [f["id"] for f in frames if f["event"] != "end"]
        assert ids == list(range(1, len(ids) + 1))
        text_bytes = sum(len(f["data"]["data"]["text"]) for f in frames if f["event"] == "log")
        assert text_bytes == n_lines * 100
        assert frames[-1]["event"] == "end" and frames[-1]["t"] - t_done < 2
        growth = (peak - rss0) / 2**20
        print(f"\nstalled clients: server RSS {rss0 / 2**20:.0f} MiB -> peak {peak / 2**20:.0f} MiB (+{growth:.0f} MiB); "
              f"task wall {done['metrics']['wall']:.1f}s vs baseline {baseline['metrics']['wall']:.1f}s")
        # 5 stalled readers x 30 MB would be >150 MB if each buffered the whole output
        assert growth < 96, f"server RSS grew {growth:.0f} MiB with stalled clients"
        # once the stalled clients go away, their stream slots are released
        for s in stalled:
            s.close()
        deadline = time.monotonic() + 10
        while True:
            _, body = server.request("GET", "taskrun/api/status")
            if json.loads(body)["streams"] == 0:
                break
            assert time.monotonic() < deadline, body
            time.sleep(0.1)


# ---------------------------------------------------------------------------
# SQLite locked by another connection (the store's busy_timeout is 5 s)
# ---------------------------------------------------------------------------


def hold_lock(db_path: str, seconds: float | None, mode: str = "IMMEDIATE"):
    """Another connection takes the write lock now; released after ``seconds`` (or by calling ``release``)."""
    locker = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    locker.execute(f"BEGIN {mode}")
    released = threading.Event()

    def release() -> None:
        if not released.is_set():
            locker.execute("COMMIT")
            locker.close()
            released.set()

    if seconds is not None:
        threading.Timer(seconds, release).start()
    released.release = release  # type: ignore[attr-defined]
    return released


async def test_sqlite_lock_shorter_than_busy_timeout_only_delays(api, db_path):
    await api.run(code="1")  # the store exists and is warm
    before = db_count(db_path)
    hold_lock(db_path, 1.5)
    t0 = time.monotonic()
    task = await api.submit(code="print('after the lock')")
    assert time.monotonic() - t0 >= 1.0
    assert (await api.wait(task["id"]))["status"] == "completed"
    assert db_count(db_path) == before + 1


async def test_sqlite_locked_longer_reports_503_changes_nothing_and_recovers(api, db_path):
    ticker = await api.submit(code=TICKER.format(n=120, dt=0.1))
    await wait_log(api, ticker["id"], "tick 5")
    before = db_count(db_path)
    lock = hold_lock(db_path, None, "EXCLUSIVE")
    try:
        code, data, _headers = await api.call("POST", "tasks", {"code": "print(1)"})
        assert_json_error(code, data, 503, "store-unavailable")
        code, data, _ = await api.call("POST", "tasks/batch", {"tasks": [{"code": "1"}, {"code": "2"}]})
        assert_json_error(code, data, 503, "store-unavailable")
        # reads keep working while the writer is locked out (WAL)
        code, data, _ = await api.call("GET", f"tasks/{ticker['id']}")
        assert code == 200
    finally:
        lock.release()
    assert db_count(db_path) == before, "a refused submission left a record"
    assert await task_count(api) == before
    # the running task's events, held back during the lock, are all stored without a gap
    done = await api.wait(ticker["id"])
    assert done["status"] == "completed"
    assert await logs_of(api, ticker["id"]) == "".join(f"tick {i}\n" for i in range(120))
    events = await api.events(ticker["id"])
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert (await api.run(code="print('ok')"))["status"] == "completed"


def probe_latencies(url: str, token: str, stop: threading.Event, out: list[float]) -> threading.Thread:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def run() -> None:
        while not stop.is_set():
            t0 = time.monotonic()
            with contextlib.suppress(Exception):
                opener.open(urllib.request.Request(url, headers={"Authorization": f"token {token}"}), timeout=30).read()
            out.append(time.monotonic() - t0)
            time.sleep(0.05)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


async def test_sqlite_lock_does_not_freeze_the_server(api, db_path, jp_serverapp):
    ticker = await api.submit(code=TICKER.format(n=100, dt=0.05))
    await wait_log(api, ticker["id"], "tick 2")
    stop, lat = threading.Event(), []
    # a core Jupyter endpoint that never touches the task store
    probe = probe_latencies(f"http://127.0.0.1:{api.port}{api.base_url}api/status", jp_serverapp.identity_provider.token, stop, lat)
    await asyncio.sleep(0.5)
    released = hold_lock(db_path, 6)
    await asyncio.to_thread(released.wait, 30)
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.to_thread(probe.join, 40)
    await api.wait(ticker["id"])
    assert max(lat) < 1.0, f"server unresponsive for {max(lat):.1f} s while the database was locked"


# ---------------------------------------------------------------------------
# disk write errors: the database on a tiny tmpfs that fills up / turns read-only
# ---------------------------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path):
    mnt = tmp_path / "smallfs"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], check=False, capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False, capture_output=True)


@pytest.fixture
def taskrun_config(request):
    # tests that need the database on the small filesystem ask for it by name
    if "small_fs" in request.fixturenames:
        mnt = request.getfixturevalue("small_fs")
        return {"db_path": str(mnt / "tasks.sqlite3")}
    return getattr(request, "param", {})


def fill(mnt: Path) -> Path:
    filler = mnt / "filler"
    with open(filler, "wb") as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 65536)
            f.flush()
    return filler


def orphans(db: str) -> int:
    con = sqlite3.connect(db, timeout=30)
    try:
        q = "SELECT COUNT(*) FROM {t} WHERE task_id NOT IN (SELECT id FROM tasks)"
        return sum(con.execute(q.format(t=t)).fetchone()[0] for t in ("events", "artifacts", "task_tags"))
    finally:
        con.close()


async def test_disk_full_reports_503_keeps_serving_no_partial_records(api, small_fs, taskrun):
    db = taskrun.db_path
    assert db.startswith(str(small_fs))
    assert (await api.run(code="print('before')"))["status"] == "completed"
    ticker = await api.submit(code=TICKER.format(n=60, dt=0.1))
    await wait_log(api, ticker["id"], "tick 3")
    filler = fill(small_fs)
    big = "#" + "x" * 200_000
    refused = None
    for _ in range(60):
        before = db_count(db)
        code, data, _ = await api.call("POST", "tasks/batch", {"tasks": [{"code": big, "tags": ["t"]} for _ in range(3)]})
        if code == 503:
            refused = data
            assert db_count(db) == before, "a refused batch left records"
            break
        assert code == 201, data
        assert db_count(db) == before + 3
    assert refused is not None, "the disk never filled up"
    assert_json_error(503, refused, 503, "store-unavailable")
    code, data, _ = await api.call("POST", "tasks", {"code": big})
    assert_json_error(code, data, 503, "store-unavailable")
    # still serving reads
    for path in ("status", f"tasks/{ticker['id']}", "tasks"):
        code, _, _ = await api.call("GET", path)
        assert code == 200, path
    assert orphans(db) == 0
    filler.unlink()
    # space is back: held-back events are written, nothing lost, new work accepted
    done = await api.wait(ticker["id"], 120)
    assert done["status"] == "completed"
    assert await logs_of(api, ticker["id"]) == "".join(f"tick {i}\n" for i in range(60))
    events = await api.events(ticker["id"])
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert (await api.run(code="print('after')"))["status"] == "completed"
    assert orphans(db) == 0


# ---------------------------------------------------------------------------
# limits
# ---------------------------------------------------------------------------

HOG = "import time\nblocks = []\nfor i in range(200):\n    blocks.append(b'x' * (16 << 20))\n    time.sleep(0.02)\nprint('survived')"


async def test_memory_limit_per_task(api):
    task = await api.run(code=HOG, memory_limit=256 * 2**20, timeout=120)
    assert task["status"] == "failed", task
    assert "memory limit exceeded" in task["error"]["reason"]
    assert "survived" not in await logs_of(api, task["id"])
    assert not kernel_processes()
    # the server is unharmed
    assert (await api.run(code="print('next')"))["status"] == "completed"


async def test_memory_limit_fast_single_allocation(api):
    # 3 GiB in one statement: stopped long before it completes
    task = await api.run(code="x = b'y' * (3 << 30)\nprint('survived')", memory_limit=256 * 2**20, timeout=120)
    assert task["status"] == "failed", task
    assert "memory limit exceeded" in task["error"]["reason"]
    assert "survived" not in await logs_of(api, task["id"])


@pytest.mark.parametrize("taskrun_config", [{"memory_limit": 200 * 2**20}], indirect=True)
async def test_memory_limit_from_config(api):
    task = await api.run(code=HOG, timeout=120)
    assert task["status"] == "failed" and "memory limit exceeded" in task["error"]["reason"], task
    small = await api.run(code="x = b'y' * (10 << 20)\nprint('fits')")
    assert small["status"] == "completed"


@pytest.mark.parametrize("taskrun_config", [{"max_output_bytes": 100_000}], indirect=True)
async def test_max_output_bytes_truncates_with_marker_and_task_completes(api):
    code = "for i in range(20000):\n    print(f'{i:09d}')\nopen('after.txt', 'w').write('ran')\n'finished'"
    task = await api.run(code=code)
    assert task["status"] == "completed", task
    assert task["result"]["data"]["text/plain"] == "'finished'"
    assert task["metrics"]["output_truncated"] is True
    events = await api.events(task["id"])
    marks = [e for e in events if e["type"] == "truncated"]
    assert len(marks) == 1 and marks[0]["data"]["limit"] == 100_000
    logs = await logs_of(api, task["id"])
    assert 0 < len(logs.encode()) <= 100_000
    assert logs.startswith("000000000\n000000001\n")
    # the marker comes after the last stored log chunk
    last_log = max(e["seq"] for e in events if e["type"] == "log")
    assert marks[0]["seq"] > last_log
    code_, nb, _ = await api.call("GET", f"tasks/{task['id']}/notebook")
    assert code_ == 200 and len(json.dumps(nb)) < 400_000


@pytest.mark.parametrize("taskrun_config", [{"max_queued_tasks": 3, "max_concurrent_tasks": 1}], indirect=True)
async def test_max_queued_tasks_429_retry_after_nothing_changed(api, taskrun):
    taskrun.pause()
    ids = [(await api.submit(code=f"print({i})"))["id"] for i in range(3)]
    before = await task_count(api)
    code, data, headers = await api.call("POST", "tasks", {"code": "print('too many')"})
    assert_json_error(code, data, 429, "queue-full")
    assert int(headers["Retry-After"]) > 0
    code, data, headers = await api.call("POST", "tasks/batch", {"tasks": [{"code": "1"}]})
    assert code == 429 and "Retry-After" in headers
    code, data, _ = await api.call("POST", f"tasks/{ids[0]}/rerun")
    assert code == 429
    assert await task_count(api) == before
    code, status, _ = await api.call("GET", "status")
    assert status["queued"] == 3
    # a cancelled task makes room again
    code, _, _ = await api.call("POST", f"tasks/{ids[2]}/cancel")
    assert code == 202
    assert (await api.call("POST", "tasks", {"code": "print('fits')"}))[0] == 201
    taskrun.resume()
    for tid in ids[:2]:
        assert (await api.wait(tid))["status"] == "completed"


@pytest.mark.parametrize("taskrun_config", [{"max_request_bytes": 20_000}], indirect=True)
async def test_max_request_bytes_413(api):
    before = await task_count(api)
    code, data, _ = await api.call("POST", "tasks", {"code": "#" + "x" * 30_000})
    assert_json_error(code, data, 413, "too-large")
    code, data, _ = await api.call("POST", "tasks/batch", {"tasks": [{"code": "#" + "x" * 8_000}] * 3})
    assert_json_error(code, data, 413, "too-large")
    assert await task_count(api) == before
    code, data, _ = await api.call("POST", "tasks", {"code": "#" + "x" * 10_000})
    assert code == 201
    assert (await api.wait(data["id"]))["status"] == "completed"


@pytest.mark.parametrize("taskrun_config", [{"max_request_bytes": 20_000}], indirect=True)
async def test_oversized_body_is_refused_before_it_is_read(api):
    reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
    path = urllib.parse.urlsplit(api.url("tasks")).path
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{api.port}\r\nAuthorization: {api.headers['Authorization']}\r\n"
        "Content-Type: application/json\r\nContent-Length: 200000000\r\n\r\n"
    )
    writer.write(head.encode() + b'{"code": "#')
    try:
        line = await asyncio.wait_for(reader.readline(), 5)
    except asyncio.TimeoutError:
        line = b""
    finally:
        writer.transport.abort()
    assert line.split()[1:2] == [b"413"], f"no early refusal, got {line!r}"


@pytest.mark.parametrize("taskrun_config", [{"max_streams_per_user": 3}], indirect=True)
async def test_max_streams_per_user_429_for_sse_and_ws(api, taskrun):
    tid = (await api.submit(code="import time\ntime.sleep(30)"))["id"]
    a = await sse_connect(api, f"tasks/{tid}/events")
    b = await sse_connect(api, "events")
    c = await ws_connect(api, tid)
    assert (a.status, b.status) == (200, 200)
    assert json.loads(await c.read_message())["type"] == "connected"
    d = await sse_connect(api, f"tasks/{tid}/events")
    assert d.status == 429 and d.json()["reason"] == "too-many-streams" and "retry-after" in d.resp_headers
    e = await sse_connect(api, "events")
    assert e.status == 429
    with pytest.raises(Exception) as exc:
        await ws_connect(api, tid)
    assert "429" in str(exc.value)
    # other REST calls are not limited
    assert (await api.call("GET", f"tasks/{tid}"))[0] == 200
    a.abort()
    await wait_for(lambda: taskrun.status()["streams"] == 2, 5, what="the vanished stream's slot")
    f = await sse_connect(api, f"tasks/{tid}/events")
    assert f.status == 200
    for s in (b, f):
        s.abort()
    c.close()
    await api.call("POST", f"tasks/{tid}/cancel")
    await wait_for(lambda: taskrun.status()["streams"] == 0, 5, what="all slots released")


async def test_task_timeout_and_cell_timeout_with_busy_children(api):
    # whole-task timeout while a child process burns CPU; the task ends on time and the child goes
    code = "import subprocess, sys, time, os\np = subprocess.Popen([sys.executable, '-c', 'while True: pass'])\nprint('CHILD', p.pid, flush=True)\ntime.sleep(600)"
    task = await api.submit(code=code, timeout=8)
    logs = await wait_log(api, task["id"], "CHILD")
    child = int(logs.split()[1])
    done = await api.wait(task["id"], 30)
    assert done["status"] == "timed_out" and "timeout of 8 s" in done["error"]["reason"]
    assert 7.5 < done["metrics"]["wall"] < 12
    await wait_for(lambda: gone(child), 5, what="the busy child to be killed")
    # per-cell timeout: earlier cells' output kept, later cells never run
    task = await api.run(cells=["print('one')", "while True: pass", "print('never')"], cell_timeout=2)
    assert task["status"] == "timed_out" and task["error"]["cell_index"] == 1
    assert await logs_of(api, task["id"]) == "one\n"


async def test_fractional_cell_timeout(api):
    task = await api.run(cells=["print('one')", "import time\ntime.sleep(60)"], cell_timeout=1.5)
    assert task["status"] == "timed_out", task["error"]
    assert task["error"]["cell_index"] == 1


async def test_no_output_lost_while_the_server_loop_is_busy(api):
    """The server stalls (GC, a slow request, a locked database...) while a task prints fast."""
    code = "for i in range(20000):\n    print(i, flush=True)\nprint('END', flush=True)"
    task = await api.submit(code=code)
    await wait_log(api, task["id"], "0")
    time.sleep(5)  # noqa: ASYNC251 - block the event loop the server runs on, on purpose
    done = await api.wait(task["id"])
    assert done["status"] == "completed"
    logs = await logs_of(api, task["id"])
    assert logs == "".join(f"{i}\n" for i in range(20000)) + "END\n", f"{len(logs.splitlines())} of 20001 lines kept"


def test_fast_big_output_arrives_whole_in_bounded_messages(tmp_path):
    """100 MiB written as fast as Python can: nothing lost, no giant IOPub message, bounded server memory.

    Without back-pressure ipykernel sends everything buffered between two flushes as one
    message (tens of MiB, parsed and HMAC-checked in one go) and the server holds it several
    times over. A real server process, so that its RSS is the server's alone (in-process,
    pytest's log capture keeps jupyter_client's debug dump of every message).
    """
    mib = 100
    code = f"import sys\nchunk = ('x' * 1023 + '\\n') * 1024\nfor _ in range({mib}):\n    sys.stdout.write(chunk)\nprint('END')"
    with JupyterServer(tmp_path, extra_args=("--TaskRun.kernel_pool_size=0", f"--TaskRun.max_output_bytes={256 * 2**20}")) as srv:
        server = psutil.Process(srv.proc.pid)
        rss0, peak, stop = server.memory_info().rss, [0], threading.Event()

        def sample() -> None:
            while not stop.is_set():
                with contextlib.suppress(psutil.Error):
                    peak[0] = max(peak[0], server.memory_info().rss)
                time.sleep(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            status, body = srv.request("POST", "taskrun/api/tasks?wait=120", json.dumps({"code": code}).encode(), timeout=150)
        finally:
            stop.set()
            sampler.join()
        task = json.loads(body)
        assert status == 200 and task["status"] == "completed", task
        from jupyter_taskrun.server.store import TaskStore  # large events are stored zlib-compressed

        store = TaskStore(str(srv.db_path))
        try:
            sizes = [len(ev.data["text"]) for ev in store.iter_events(task["id"], ("log",))]
            total, biggest = sum(sizes), max(sizes)
        finally:
            store.close()
    assert total == mib * 2**20 + len("END\n")
    assert biggest <= 2**20, f"a single log message of {biggest} characters"  # max(64 Ki, buffer / 256)
    assert peak[0] - rss0 < 96 * 2**20, f"server RSS grew {(peak[0] - rss0) / 2**20:.0f} MiB"  # measured: ~41 MiB


def slow_reader(url: str, headers: dict[str, str], pause: float) -> list[dict[str, Any]]:
    """Connect, send the request, read nothing for ``pause`` seconds, then read to the end."""
    u = urllib.parse.urlsplit(url)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect((u.hostname, u.port))
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    s.sendall(f"GET {u.path}?{u.query} HTTP/1.1\r\nHost: 127.0.0.1:{u.port}\r\n{head}\r\n".encode())
    time.sleep(pause)
    s.settimeout(5)
    parts = []
    tail = b""
    deadline = time.monotonic() + 40
    while not tail.endswith(b"\r\n0\r\n\r\n") and time.monotonic() < deadline:
        try:
            chunk = s.recv(1 << 20)
        except TimeoutError:
            continue
        if not chunk:
            break
        parts.append(chunk)
        tail = (tail + chunk)[-16:]
    s.close()
    data = b"".join(parts)
    body = memoryview(data)[data.index(b"\r\n\r\n") + 4 :]
    out, pos = [], 0
    while pos < len(body):  # de-chunk without copying
        if b"\r\n" not in bytes(body[pos : pos + 20]):
            break  # cut short by the deadline
        eol = bytes(body[pos : pos + 20]).index(b"\r\n")
        size = int(bytes(body[pos : pos + eol]), 16)
        if size == 0:
            break
        start = pos + eol + 2
        out.append(body[start : start + size])
        pos = start + size + 2
    text = b"".join(out)
    frames = [parse_sse_frame(raw) for raw in text.decode().split("\n\n") if raw]
    return [f for f in frames if f is not None and not f["comment"]]


async def test_slow_reader_during_replay_gets_no_gap(api):
    """A client whose replay write blocks (full TCP window) while live events keep coming."""
    code = (
        "import time\nline = 'y' * 8000\nfor i in range(2500):\n    print(i, line)\n"
        "print('BIG DONE', flush=True)\nfor i in range(300):\n    print('tick', i, flush=True)\n    time.sleep(0.01)\n"
    )
    tid = (await api.submit(code=code))["id"]
    await wait_log(api, tid, "BIG DONE")
    frames = await asyncio.to_thread(slow_reader, api.url(f"tasks/{tid}/events", {"after": 0}), api.headers, 1.5)
    ids = [f["id"] for f in frames if f["event"] != "end"]
    last = (await api.get(tid))["last_event_id"]
    missing = sorted(set(range(1, last + 1)) - set(ids))
    assert not missing, f"{len(missing)} of {last} events never sent (first {missing[:5]}); stream ended: {frames[-1]['event'] == 'end'}"
    assert frames[-1]["event"] == "end"
    missing = sorted(set(range(1, ids[-1] + 1)) - set(ids))
    assert not missing, f"{len(missing)} events never sent, first {missing[:5]}"
    assert ids == list(range(1, len(ids) + 1))




@pytest.mark.parametrize("delay", [0.0, 0.02, 0.05, 0.1, 0.2, 0.4])
async def test_server_stop_while_a_kernel_is_starting_leaves_no_kernel(api, taskrun, delay):
    await api.submit(code="import time\ntime.sleep(60)")
    await asyncio.sleep(delay)  # the task is being dispatched / its kernel started
    await taskrun.stop()
    await asyncio.sleep(3)
    leaked = kernel_processes()
    for p in leaked:
        p.kill()
    assert not leaked, f"kernel(s) left running after stop: {[p.pid for p in leaked]}"
