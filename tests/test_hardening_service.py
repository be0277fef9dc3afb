"""Hardening from the security/robustness review (issue 19), through real Jupyter servers,
real kernels and real SQLite files.

1. nothing a task carries can leave it a zombie (queued forever in no queue); a stop always ends it
2. deeply nested ``parameters`` are a clear 400
3. a huge notebook is refused (``max_cells``) and the largest accepted one does not freeze the server
4. a full disk: 503 + Retry-After, recovery in bounded batches as soon as some space frees, no loss
5. task events on jupyter_server's event bus are off by default; status counts are the user's own
6. ``OwnerScopedAuthorizer`` isolates users; a fail-open setup is warned about at startup
7. the store is private (0600 files in a 0700 folder)
8. the CLI prints task names and tags without their terminal escape codes
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import os
import sqlite3
import stat
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest
from jupyter_server.auth.identity import IdentityProvider, User
from traitlets.config import Config

from jupyter_taskrun.models import Task, TaskStatus
from jupyter_taskrun.server.auth import OwnerScopedAuthorizer
from jupyter_taskrun.server.store import TaskStore
from jupyter_taskrun.server.telemetry import TASK_SCHEMA_ID

from ._server import JupyterServer

# ---------------------------------------------------------------------------
# servers: single user by default; `multiuser` (+ `authorizer_class`) for identities from a header
# ---------------------------------------------------------------------------


class HeaderIdentityProvider(IdentityProvider):
    """``X-Test-User: alice`` is alice; no header is nobody (403)."""

    def get_user(self, handler):
        name = handler.request.headers.get("X-Test-User")
        return User(username=name) if name else None

    def is_token_authenticated(self, handler) -> bool:
        return handler.request.headers.get("X-Test-User") is not None


@pytest.fixture
def taskrun_config(request):
    if "small_fs" in request.fixturenames:
        return {"db_path": str(request.getfixturevalue("small_fs") / "tasks.sqlite3")}
    return getattr(request, "param", {})


@pytest.fixture
def jp_server_config(taskrun_config, db_path, request):
    settings = {"db_path": db_path, "kernel_pool_size": 0, **taskrun_config}
    server: dict[str, Any] = {"jpserver_extensions": {"jupyter_taskrun": True}}
    config: dict[str, Any] = {"ServerApp": server, "TaskRun": settings}
    if "multiuser" in request.fixturenames:
        server["identity_provider_class"] = HeaderIdentityProvider
        authorizer = request.getfixturevalue("authorizer_class")
        if authorizer is not None:
            server["authorizer_class"] = authorizer
            config["OwnerScopedAuthorizer"] = {"admin_users": ["admin"]}
    return Config(config)


@pytest.fixture
def multiuser():
    return True


@pytest.fixture
def authorizer_class():
    return OwnerScopedAuthorizer


def as_user(name: str) -> dict[str, str]:
    return {"X-Test-User": name}


async def call_as(api, user: str, method: str, path: str, body: Any = None, params: dict | None = None):
    from tornado.httpclient import AsyncHTTPClient, HTTPRequest

    raw = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
    req = HTTPRequest(
        api.url(path, params), method=method, headers=as_user(user), body=raw, allow_nonstandard_methods=True, request_timeout=60
    )
    resp = await AsyncHTTPClient().fetch(req, raise_error=False)
    text = resp.body.decode() if resp.body else ""
    return resp.code, (json.loads(text) if text and "json" in resp.headers.get("Content-Type", "") else text), resp.headers


def processes_with(marker: str) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if any(marker in a for a in p.info["cmdline"] or ()) and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
    return out


# ---------------------------------------------------------------------------
# 1. zombies: any failure before or during the run ends the task failed; a stop always ends it
# ---------------------------------------------------------------------------


def deep(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = {"k": value}
    return value


async def test_unreadable_notebook_files_fail_the_task_and_free_everything(api, taskrun, jp_root_dir):
    # files that stay broken whatever normalisation does: too deep to parse, not JSON, cells not a list
    (jp_root_dir / "deep.ipynb").write_text("[" * 100_000 + "]" * 100_000)
    (jp_root_dir / "garbage.ipynb").write_bytes(b"\x00\xff not json")
    (jp_root_dir / "cells_object.ipynb").write_text(json.dumps({"cells": {"a": 1}, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    ids = [(await api.submit(path=name))["id"] for name in ("deep.ipynb", "garbage.ipynb", "cells_object.ipynb", "deep.ipynb")]
    for task_id in ids:
        task = await api.wait(task_id, 30)  # before the fix: 'queued' forever
        assert task["status"] == "failed", task
        assert task["error"]["reason"], task
    deep_task = await api.get(ids[0])
    assert "RecursionError" in deep_task["error"]["reason"] or "deep" in deep_task["error"]["reason"], deep_task
    code, status, _ = await api.call("GET", "status")
    assert code == 200 and status["queued"] == 0 and status["running"] == 0, status
    assert not taskrun._running and not any(t in taskrun._active for t in ids)
    code, _, _ = await api.call("DELETE", f"tasks/{ids[0]}")
    assert code == 204
    # the dispatcher and its slots are intact
    assert (await api.run(code="print('next')"))["status"] == "completed"


@pytest.fixture
def stored_zombie(db_path):
    """A queued task with parameters nested 800 deep, written by an older version (no depth check)."""
    store = TaskStore(db_path)
    task = Task(
        id=uuid.uuid4().hex, status=TaskStatus.QUEUED, submission={"code": "print(x)", "parameters": {"x": deep(800)}},
        source_kind="code", name="zombie", owner=getpass.getuser(), kernel_name="python3", tags=[], priority=0,
        executor="local", metrics={},
    )  # fmt: skip
    store.insert_tasks([task])
    store.close()
    return task.id


async def test_a_stored_task_that_cannot_be_built_fails_after_restart(stored_zombie, api):
    task = await api.wait(stored_zombie, 30)
    assert task["status"] == "failed" and "nested too deeply" in task["error"]["reason"], task
    code, status, _ = await api.call("GET", "status")
    assert status["queued"] == 0 and status["running"] == 0, status
    frames = await api.sse(f"tasks/{stored_zombie}/events", timeout=10)  # the stream ends
    assert frames[-1]["event"] == "end"
    code, _, _ = await api.call("DELETE", f"tasks/{stored_zombie}")
    assert code == 204


@pytest.fixture
def hanging_kernel(jp_data_dir):
    """A real kernelspec whose process never becomes ready (a runner wedged in kernel start)."""
    marker = f"taskrun-hang-{uuid.uuid4().hex[:8]}"
    spec = jp_data_dir / "kernels" / "hang"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-c", f"import time  # {marker}\ntime.sleep(600)", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "hang", "language": "python"}))
    yield marker
    for p in processes_with(marker):
        p.kill()


@pytest.mark.parametrize("taskrun_config", [{"stop_grace": 1.0, "kernel_start_timeout": 120}], indirect=True)
async def test_cancel_ends_a_task_whose_runner_is_wedged(api, hanging_kernel):
    task = await api.submit(code="print('never')", kernel_name="hang")
    await api.wait_status(task["id"], "running", 30)
    deadline = time.monotonic() + 30
    while not processes_with(hanging_kernel):
        assert time.monotonic() < deadline, "the hanging kernel never started"
        await asyncio.sleep(0.05)
    t0 = time.monotonic()
    code, _, _ = await api.call("POST", f"tasks/{task['id']}/cancel")
    assert code == 202
    done = await api.wait(task["id"], 15)  # before the fix: only at kernel_start_timeout (120 s)
    took = time.monotonic() - t0
    assert done["status"] == "cancelled" and took < 8, (done["status"], took)
    deadline = time.monotonic() + 10
    while processes_with(hanging_kernel):  # the half-started kernel is killed, not left behind
        assert time.monotonic() < deadline, "the wedged kernel process was left running"
        await asyncio.sleep(0.1)
    code, _, _ = await api.call("DELETE", f"tasks/{task['id']}")
    assert code == 204
    assert (await api.run(code="print('next')"))["status"] == "completed"


# ---------------------------------------------------------------------------
# 2 + 3. submission limits
# ---------------------------------------------------------------------------


async def test_deep_parameters_and_too_many_cells_are_a_clear_400(api, taskrun):
    code, data, _ = await api.call("POST", "tasks", {"code": "x", "parameters": {"p": deep(490)}})
    assert code == 400 and data["reason"] == "invalid" and "64 levels" in data["message"], (code, data)
    code, _, _ = await api.call("POST", "tasks", {"code": "x", "parameters": {"p": deep(62)}})
    assert code == 201
    code, data, _ = await api.call("POST", "tasks", {"cells": ["1"] * 200_000})
    assert code == 400 and "2000 cells" in data["message"] and "max_cells" in data["message"], (code, data)
    nb = {"cells": [{"cell_type": "code", "source": "1", "metadata": {}, "outputs": [], "execution_count": None}] * 2001,
          "metadata": {}, "nbformat": 4, "nbformat_minor": 4}  # fmt: skip
    code, data, _ = await api.call("POST", "tasks", {"notebook": nb})
    assert code == 400 and "max_cells" in data["message"], (code, data)


def test_the_largest_accepted_submission_starts_without_freezing_the_server(tmp_path):
    """2000 cells (the default max_cells) of 500 bytes: 1 MB. While it is submitted, built and
    started, another client's GET /taskrun/api/status keeps answering (no stall of the loop)."""
    cells = [f"x{i} = {i}  # " + "p" * 480 for i in range(2000)]
    body = json.dumps({"cells": cells, "name": "big"}).encode()
    with JupyterServer(tmp_path, extra_args=("--TaskRun.kernel_pool_size=0",)) as srv:
        latencies: list[float] = []
        stop = threading.Event()

        def probe() -> None:
            while not stop.is_set():
                t0 = time.perf_counter()
                code, _ = srv.request("GET", "taskrun/api/status", timeout=30)
                latencies.append(time.perf_counter() - t0)
                assert code == 200
                time.sleep(0.01)

        # warm up: the first task imports the kernel, notebook and nbclient machinery (one-time stalls)
        code, raw = srv.request("POST", "taskrun/api/tasks?wait=60", json.dumps({"cells": ["1", "2"]}).encode(), timeout=90)
        assert code == 200 and json.loads(raw)["status"] == "completed", raw[:300]
        # the same probe against the idle server: on a loaded 2-core CI machine even an idle
        # request can take tens of ms; the bound is 100 ms, or twice the idle worst if that is more
        prober = threading.Thread(target=probe, daemon=True)
        prober.start()
        time.sleep(2)
        stop.set()
        prober.join(30)
        idle, latencies[:] = list(latencies), []
        stop.clear()
        prober = threading.Thread(target=probe, daemon=True)
        prober.start()
        try:
            code, created = srv.request("POST", "taskrun/api/tasks", body, timeout=60)
            assert code == 201, created
            task_id = json.loads(created)["id"]
            deadline = time.monotonic() + 120
            while True:
                _, raw = srv.request("GET", f"taskrun/api/tasks/{task_id}", timeout=30)
                task = json.loads(raw)
                # started: running, its kernel up and its first cells executed
                if task["status"] in ("completed", "failed") or (task["status"] == "running" and task["last_event_id"] > 100):
                    break
                assert time.monotonic() < deadline, task["status"]
                time.sleep(0.05)
        finally:
            stop.set()
            prober.join(60)
        srv.request("POST", f"taskrun/api/tasks/{task_id}/cancel")
        code, raw = srv.request("GET", f"taskrun/api/tasks/{task_id}?wait=60", timeout=90)
        assert json.loads(raw)["status"] in ("completed", "cancelled"), raw[:300]
    worst, idle_worst = max(latencies), max(idle)
    # a freeze is the loop blocked for the whole build (~0.5 s before it was fixed); single scheduling
    # hiccups of a loaded 2-core machine are not: 250 ms, or 3x the idle worst where even idle is slower
    bound = max(0.25, 3 * idle_worst)
    print(f"\nstatus latency during the start: n={len(latencies)} max={worst * 1000:.1f} ms "
          f"p50={sorted(latencies)[len(latencies) // 2] * 1000:.1f} ms; idle max {idle_worst * 1000:.1f} ms")  # fmt: skip
    assert len(latencies) > 20 and worst < bound, (
        f"GET /status took {worst * 1000:.0f} ms while the big task started (bound {bound * 1000:.0f} ms)"
    )


# ---------------------------------------------------------------------------
# 4. a full disk under the store
# ---------------------------------------------------------------------------


@pytest.fixture
def small_fs_size() -> str:
    return "6m"  # this module's fill steps are sized for 6 MiB


def fill_in_pieces(mnt: Path, piece: int = 256 * 1024) -> list[Path]:
    """Fill the filesystem with files of ``piece`` bytes (so a little space can be freed), then to the last byte."""
    pieces = []
    for i in range(10_000):
        path = mnt / f"filler-{i:05d}"
        try:
            with open(path, "wb") as f:
                pieces.append(path)
                f.write(b"\0" * piece)
        except OSError:
            break
    with contextlib.suppress(OSError):
        last = mnt / "filler-last"
        with open(last, "wb") as f:
            pieces.append(last)
            while True:
                f.write(b"\0" * 4096)
                f.flush()
    return pieces


def stored_log_events(db: str, task_id: str) -> int:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return con.execute("SELECT COUNT(*) FROM events WHERE task_id=? AND type='log'", (task_id,)).fetchone()[0]
    finally:
        con.close()


PHASED = """
import os, secrets, time
def wait_for(name):
    while not os.path.exists(name):
        time.sleep(0.02)
lines = []
def out(i):
    line = f"{i:05d} " + secrets.token_hex(700)
    lines.append(line)
    print(line, flush=True)
for i in range(50):
    out(i)
open('phase1', 'w').close()
wait_for('full')
for i in range(50, 1250):  # ~1.7 MB held back while the disk is full
    out(i)
    if i % 50 == 0:
        time.sleep(0.01)
open('phase2', 'w').close()
wait_for('finish')
open('expected.txt', 'w').write(''.join(l + '\\n' for l in lines))
"""


async def test_disk_full_503_retry_after_and_recovery_in_bounded_batches(api, small_fs, taskrun, jp_root_dir):
    db = taskrun.db_path
    assert db.startswith(str(small_fs))
    task = await api.submit(code=PHASED, name="phased")
    tid = task["id"]
    deadline = time.monotonic() + 60
    while not (jp_root_dir / "phase1").exists():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    pieces = await asyncio.to_thread(fill_in_pieces, small_fs)
    (jp_root_dir / "full").touch()
    while not (jp_root_dir / "phase2").exists():
        assert time.monotonic() < deadline + 60
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)  # the held-back events are all in the server's memory now
    # the store cannot write: 503 with Retry-After, reads keep working
    code, data, headers = await api.call("POST", "tasks", {"code": "print(1)"})
    assert code == 503 and data["reason"] == "store-unavailable", (code, data)
    assert int(headers["Retry-After"]) > 0
    code, status, _ = await api.call("GET", "status")
    assert code == 200 and status["store_writable"] is False
    stuck = stored_log_events(db, tid)
    # free a little (256 KiB, much less than the ~1.7 MB held back): writing resumes at once
    pieces.pop(0).unlink()
    deadline = time.monotonic() + 20
    while stored_log_events(db, tid) <= stuck:  # before the fix: one all-or-nothing batch, never
        assert time.monotonic() < deadline, "freeing 256 KiB did not let any held-back event be written"
        await asyncio.sleep(0.2)
    for p in pieces:  # then all the space
        p.unlink()
    (jp_root_dir / "finish").touch()
    done = await api.wait(tid, 120)
    assert done["status"] == "completed", done
    code, logs, _ = await api.call("GET", f"tasks/{tid}/logs")
    assert logs == (jp_root_dir / "expected.txt").read_text(), "held-back output was lost or reordered"
    events = await api.events(tid)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert (await api.run(code="print('after')"))["status"] == "completed"
    code, status, _ = await api.call("GET", "status")
    assert status["store_writable"] is True
    wal = Path(db + "-wal")
    assert not wal.exists() or wal.stat().st_size <= 4 * 2**20, f"WAL left at {wal.stat().st_size} bytes"


def test_events_are_stored_compactly(tmp_path):
    """1-2 KB events used to take a 4 KiB overflow page each (4-4.7x their size on disk)."""
    import secrets

    store = TaskStore(str(tmp_path / "s.sqlite3"))
    from jupyter_taskrun.models import TaskEvent

    tid = uuid.uuid4().hex
    payload = 0
    for batch in range(20):
        events = []
        for i in range(100):
            text = " ".join(secrets.choice(["alpha", "beta", "gamma", "delta", "x=1", "loss 0.25"]) for _ in range(230))[:1500] + "\n"
            events.append(TaskEvent(task_id=tid, seq=batch * 100 + i + 1, type="log", data={"stream": "stdout", "text": text}))
            payload += len(json.dumps(events[-1].data))
        store.append_events(events)
    store.checkpoint()
    assert [e.seq for e in store.read_events(tid)] == list(range(1, 2001))
    store.close()
    per_event = os.path.getsize(tmp_path / "s.sqlite3") / 2000
    print(f"\n{per_event:.0f} bytes on disk per event of {payload / 2000:.0f} bytes")
    assert per_event < 1.5 * payload / 2000


# ---------------------------------------------------------------------------
# 5. what other users can learn: the event bus, status counts
# ---------------------------------------------------------------------------


async def test_no_task_events_on_the_server_event_bus_by_default(api, jp_serverapp, taskrun):
    seen: list[dict] = []

    async def listener(logger, schema_id, data):
        seen.append(dict(data))

    jp_serverapp.event_logger.add_listener(schema_id=TASK_SCHEMA_ID, listener=listener)
    await api.run(code="print(1)", name="private-name")
    await asyncio.sleep(0.3)
    assert seen == [], seen


async def test_status_counts_are_the_users_own_admin_sees_all(api, multiuser, taskrun):
    taskrun.pause()
    try:
        for user, n in (("alice", 3), ("bob", 1)):
            for _ in range(n):
                code, data, _ = await call_as(api, user, "POST", "tasks", {"code": "print(1)"})
                assert code == 201, data
        code, bob, _ = await call_as(api, "bob", "GET", "status")
        assert code == 200 and bob["queued"] == 1, bob
        code, admin, _ = await call_as(api, "admin", "GET", "status")
        assert admin["queued"] == 4, admin
        assert taskrun.status("carol")["queued"] == 0
    finally:
        taskrun.resume()
    for task in taskrun.list()[0]:
        code, data, _ = await call_as(api, "admin", "GET", f"tasks/{task.id}", params={"wait": 60})
        assert data["status"] == "completed", data


# ---------------------------------------------------------------------------
# 6. isolation: the shipped authorizer, and the startup warning when it is fail-open
# ---------------------------------------------------------------------------


async def test_owner_scoped_authorizer_isolates_users_admins_see_all(api, multiuser, taskrun):
    code, alice, _ = await call_as(api, "alice", "POST", "tasks", {"code": "print('alice-private')", "name": "alice-job"})
    assert code == 201
    code, data, _ = await call_as(api, "bob", "GET", f"tasks/{alice['id']}")
    assert code == 404, data
    code, data, _ = await call_as(api, "bob", "GET", "tasks")
    assert code == 200 and data["tasks"] == []
    code, data, _ = await call_as(api, "admin", "GET", f"tasks/{alice['id']}", params={"wait": 60})
    assert code == 200 and data["status"] == "completed", data
    code, data, _ = await call_as(api, "bob", "POST", f"tasks/{alice['id']}/cancel")
    assert code == 404
    # everything else is allowed as with jupyter_server's default authorizer
    for path in ("api/status", "api/contents"):
        req = urllib.request.Request(f"http://127.0.0.1:{api.port}{api.base_url}{path}", headers=as_user("bob"))
        with await asyncio.to_thread(urllib.request.urlopen, req, timeout=30) as resp:
            assert resp.status == 200
    assert taskrun.isolation_warning is None


@pytest.mark.parametrize("authorizer_class", [None])
async def test_multi_user_identities_with_allow_all_authorizer_warn_at_startup(api, multiuser, authorizer_class, taskrun):
    warning = taskrun.isolation_warning
    assert warning and "NOT ISOLATED" in warning and "OwnerScopedAuthorizer" in warning, warning


async def test_single_user_token_server_does_not_warn(api, taskrun):
    assert taskrun.isolation_warning is None


# ---------------------------------------------------------------------------
# 7. the store is private
# ---------------------------------------------------------------------------


async def test_store_files_are_private(api, taskrun, db_path):
    assert (await api.run(code="import os; print(os.environ.get('HOME'))"))["status"] == "completed"
    folder = os.path.dirname(db_path)
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    for suffix in ("", "-wal", "-shm"):
        path = db_path + suffix
        if os.path.exists(path):
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, (path, oct(os.stat(path).st_mode))
    assert os.path.exists(db_path + "-wal")


def test_an_existing_world_readable_store_is_made_private(tmp_path):
    path = tmp_path / "old.sqlite3"
    sqlite3.connect(path).close()
    os.chmod(path, 0o644)
    TaskStore(str(path)).close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


# ---------------------------------------------------------------------------
# 8. the CLI and terminal escape codes
# ---------------------------------------------------------------------------

EVIL_NAME = "evil\x1b]0;pwned\x07\x1b[2J\rname\x9b"
EVIL_TAG = "t\x1b[31m"


def test_cli_prints_names_and_tags_without_escape_codes_but_logs_raw(tmp_path):
    with JupyterServer(tmp_path, extra_args=("--TaskRun.kernel_pool_size=0",)) as srv:
        body = json.dumps({"code": "print('\\x1b[31mred\\x1b[0m')\n1/0", "name": EVIL_NAME, "tags": [EVIL_TAG]})
        code, raw = srv.request("POST", "taskrun/api/tasks?wait=60", body.encode(), timeout=90)
        task = json.loads(raw)
        assert task["status"] == "failed", task

        def cli(*args: str) -> subprocess.CompletedProcess:
            cmd = [sys.executable, "-m", "jupyter_taskrun.cli", "--url", srv.url, "--token", srv.token, *args]
            return subprocess.run(cmd, env=srv.env, capture_output=True, text=True, timeout=60)

        for args in (("list",), ("show", task["id"]), ("status",)):
            out = cli(*args)
            assert out.returncode == 0, out.stderr
            printed = out.stdout + out.stderr
            assert "\x1b" not in printed and "\x07" not in printed and "\r" not in printed and "\x9b" not in printed, (args, printed)
            if args[0] != "status":
                assert "evil\\x1b]0;pwned\\x07" in printed, printed  # shown, escaped
        assert "t\\x1b[31m" in cli("list").stdout
        out = cli("logs", task["id"])
        assert out.stdout == "\x1b[31mred\x1b[0m\n"  # logs stay raw, as a terminal shows them
