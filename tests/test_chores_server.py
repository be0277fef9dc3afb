"""Server-side chores of issue 13: "Clear finished" (``DELETE /taskrun/api/tasks?status=…&before=…``)
scoped to its owner, the opt-in restart policy (re-queue interrupted tasks, attempts recorded and
capped) and a quiet server log for ordinary 404s after a delete. All through real servers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import time
from datetime import datetime, timezone
from typing import Any

import pytest
from jupyter_server.auth.authorizer import Authorizer
from jupyter_server.auth.identity import IdentityProvider, User
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect
from traitlets.config import Config

from jupyter_taskrun.models import TaskSubmission

from ._server import JupyterServer
from .helpers import RawSSE, parse_sse_frame, wait_for

# ---------------------------------------------------------------------------
# a multi-user in-process server: the user comes from a header; "admin" sees every task
# ---------------------------------------------------------------------------


class HeaderIdentity(IdentityProvider):
    def get_user(self, handler):
        name = handler.request.headers.get("X-Test-User")
        return User(username=name) if name else None

    def is_token_authenticated(self, handler) -> bool:
        return handler.request.headers.get("X-Test-User") is not None  # a header credential: no XSRF


class AdminSeesAll(Authorizer):
    def is_authorized(self, handler, user, action, resource):
        return user.username == "admin" if resource == "taskrun:all" else True


@pytest.fixture
def jp_server_config(taskrun_config, db_path):
    settings = {"db_path": db_path, "kernel_pool_size": 0, **taskrun_config}
    server = {"jpserver_extensions": {"jupyter_taskrun": True}, "identity_provider_class": HeaderIdentity, "authorizer_class": AdminSeesAll}
    return Config({"ServerApp": server, "TaskRun": settings})


async def call(api, method: str, path: str, user: str, body: Any = None, params: dict | None = None) -> tuple[int, Any]:
    raw = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
    req = HTTPRequest(
        api.url(path, params), method=method, headers={"X-Test-User": user}, body=raw, allow_nonstandard_methods=True, request_timeout=60
    )
    resp = await AsyncHTTPClient().fetch(req, raise_error=False)
    text = resp.body.decode() if resp.body else ""
    return resp.code, json.loads(text) if text and "json" in resp.headers.get("Content-Type", "") else text


async def cancelled_tasks(api, taskrun, user: str, n: int, tag: str) -> list[str]:
    """``n`` of ``user``'s tasks, cancelled while queued (finished without a kernel)."""
    taskrun.pause()
    ids = []
    for i in range(n):
        code, task = await call(api, "POST", "tasks", user, {"code": "print(1)", "name": f"{tag}-{i}", "tags": [tag]})
        assert code == 201, task
        code, _ = await call(api, "POST", f"tasks/{task['id']}/cancel", user)
        assert code == 202
        ids.append(task["id"])
    taskrun.resume()
    return ids


async def ids_of(api, user: str) -> set[str]:
    code, data = await call(api, "GET", "tasks", user, params={"limit": 500})
    assert code == 200, data
    return {t["id"] for t in data["tasks"]}


def rows(db_path: str, table: str, ids: list[str]) -> int:
    db = sqlite3.connect(db_path, timeout=30)
    try:
        marks = ", ".join("?" * len(ids))
        column = "id" if table == "tasks" else "task_id"
        return db.execute(f"SELECT COUNT(*) FROM {table} WHERE {column} IN ({marks})", ids).fetchone()[0]
    finally:
        db.close()


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat().replace("+00:00", "Z")


# ---------------------------------------------------------------------------
# 1. DELETE /taskrun/api/tasks?status=…&before=…
# ---------------------------------------------------------------------------


async def test_clear_finished_by_status_and_age_deletes_everything_of_those_tasks(api, taskrun, db_path):
    done = [(await call(api, "POST", "tasks", "alice", {"code": c}))[1]["id"] for c in ("print('ok')", "1/0")]
    for task_id in done:
        code, task = await call(api, "GET", f"tasks/{task_id}", "alice", params={"wait": 90})
        assert task["status"] in ("completed", "failed"), task
    old = await cancelled_tasks(api, taskrun, "alice", 3, "old")
    await asyncio.sleep(0.05)
    cutoff = time.time()
    await asyncio.sleep(0.05)
    new = await cancelled_tasks(api, taskrun, "alice", 2, "new")
    taskrun.pause()  # an active task is never touched, whatever the filter
    code, queued = await call(api, "POST", "tasks", "alice", {"code": "print(2)"})
    assert rows(db_path, "events", done) > 0 and rows(db_path, "artifacts", done) == 2

    feed = await RawSSE(api.url("events", {"after": 0}), {"X-Test-User": "alice"}).connect()
    # older than the cutoff, cancelled only: the three old ones, oldest first
    code, data = await call(api, "DELETE", "tasks", "alice", params={"status": "cancelled", "before": iso(cutoff)})
    assert code == 200, data
    assert data == {"deleted": 3, "ids": old, "more": False}
    # bounded: limit=1 deletes the oldest one and says more remain
    code, data = await call(api, "DELETE", "tasks", "alice", params={"status": "cancelled", "limit": 1})
    assert (code, data) == (200, {"deleted": 1, "ids": new[:1], "more": True})
    # no filter: every finished task left (completed, failed, the last cancelled), not the queued one
    code, data = await call(api, "DELETE", "tasks", "alice")
    assert code == 200 and sorted(data["ids"]) == sorted([*done, new[1]]) and data["more"] is False, data
    assert await ids_of(api, "alice") == {queued["id"]}
    gone = [*done, *old, *new]
    for table in ("tasks", "events", "artifacts", "task_tags"):
        assert rows(db_path, table, gone) == 0, table
    for task_id in gone:  # each went the single DELETE's way: 404 now
        assert (await call(api, "GET", f"tasks/{task_id}", "alice"))[0] == 404
    # live views drop them: a 'deleted' change-feed entry per task
    deleted: set[str] = set()
    while deleted != set(gone):
        frame = await feed.next_frame(30)
        assert frame is not None, f"feed ended; missing {set(gone) - deleted}"
        if frame["event"] == "deleted":
            deleted.add(frame["data"]["task_id"])
    await feed.close()
    code, _ = await call(api, "POST", f"tasks/{queued['id']}/cancel", "alice")
    taskrun.resume()


async def test_clear_finished_is_scoped_to_the_caller(api, taskrun):
    alice = await cancelled_tasks(api, taskrun, "alice", 2, "a")
    bob = await cancelled_tasks(api, taskrun, "bob", 2, "b")
    admin = await cancelled_tasks(api, taskrun, "admin", 1, "c")
    # bob clears his own; alice's are untouched
    code, data = await call(api, "DELETE", "tasks", "bob")
    assert code == 200 and sorted(data["ids"]) == sorted(bob), data
    assert await ids_of(api, "alice") == set(alice)
    # another user's tasks: only with taskrun:all
    code, data = await call(api, "DELETE", "tasks", "bob", params={"owner": "alice"})
    assert code == 403 and data["reason"] == "forbidden", data
    assert await ids_of(api, "alice") == set(alice)
    # an admin clears their own by default, and a named user's on request
    code, data = await call(api, "DELETE", "tasks", "admin")
    assert code == 200 and data["ids"] == admin, data
    assert await ids_of(api, "alice") == set(alice)
    code, data = await call(api, "DELETE", "tasks", "admin", params={"owner": "alice"})
    assert code == 200 and data["ids"] == alice, data
    assert await ids_of(api, "alice") == set()


@pytest.mark.parametrize(
    "params",
    [
        {"status": "running"},
        {"status": "completed,queued"},
        {"status": "done"},
        {"before": "yesterday"},
        {"before": ""},
        {"before": "2026-13-01"},
        {"limit": "0"},
        {"limit": "10001"},
        {"olderThan": "7"},
        {"status": "failed", "tag": "x"},
    ],
)
async def test_clear_finished_refusals_are_400_and_delete_nothing(api, taskrun, params):
    ids = await cancelled_tasks(api, taskrun, "alice", 2, "keep")
    code, data = await call(api, "DELETE", "tasks", "alice", params=params)
    assert code == 400, (params, code, data)
    assert isinstance(data, dict) and data["message"] and data["reason"] == "invalid", data
    assert await ids_of(api, "alice") == set(ids)


async def test_clear_finished_needs_authentication(api, taskrun):
    ids = await cancelled_tasks(api, taskrun, "alice", 1, "keep")
    resp = await AsyncHTTPClient().fetch(HTTPRequest(api.url("tasks"), method="DELETE"), raise_error=False)
    assert resp.code == 403
    assert await ids_of(api, "alice") == set(ids)


# ---------------------------------------------------------------------------
# 2. restart policy: interrupted tasks re-queued when they (or the server) opt in
# ---------------------------------------------------------------------------

#: counts its runs in a file; sleeps (to be interrupted) while the run number is below ``finish_at``
COUNTED_RUN = (
    "import os, time\n"
    "path = {path!r}\n"
    "with open(path, 'a') as f: f.write('x')\n"
    "n = len(open(path).read())\n"
    "print('run', n, flush=True)\n"
    "time.sleep(600 if n < {finish_at} else 0)\n"
)


def submit(server: JupyterServer, **body) -> dict:
    status, data = server.request("POST", "taskrun/api/tasks", json.dumps(body).encode())
    assert status == 201, data
    return json.loads(data)


def get(server: JupyterServer, task_id: str, wait: float = 0) -> dict:
    status, data = server.request("GET", f"taskrun/api/tasks/{task_id}" + (f"?wait={wait}" if wait else ""), timeout=wait + 10)
    assert status == 200, data
    return json.loads(data)


def wait_logs(server: JupyterServer, task_id: str, needle: bytes, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = server.request("GET", f"taskrun/api/tasks/{task_id}/logs")
        if status == 200 and needle in body:
            return
        time.sleep(0.05)
    raise AssertionError(f"{needle!r} never in the logs of {task_id}: {body!r}")


def status_events(server: JupyterServer, task_id: str) -> list[dict]:
    status, body = server.request("GET", f"taskrun/api/tasks/{task_id}/events", timeout=30)
    assert status == 200, body
    frames = [parse_sse_frame(raw) for raw in body.decode().split("\n\n") if raw.strip()]
    return [f["data"]["data"] for f in frames if f and f["event"] == "status"]


def test_requeue_interrupted_by_config_keeps_order_records_attempts_and_is_capped(tmp_path):
    runs = str(tmp_path / "runs.txt")
    config = {"requeue_interrupted": True, "max_requeue_attempts": 1, "max_concurrent_tasks": 1, "kernel_pool_size": 0}
    with JupyterServer(tmp_path, taskrun=config) as first:
        long = submit(first, code=COUNTED_RUN.format(path=runs, finish_at=99), name="long")
        assert long["attempt"] == 1
        wait_logs(first, long["id"], b"run 1\n")
        later = submit(first, code="print('later')", name="later")
    # clean stop: the running task went back to the queue, ahead of the one queued after it
    with JupyterServer(tmp_path, taskrun=config) as second:
        wait_logs(second, long["id"], b"run 2\n")
        task = get(second, long["id"])
        assert task["status"] == "running" and task["attempt"] == 2, task
        assert get(second, later["id"])["status"] == "queued"
    assert "re-queued after the server stopped (attempt 2)" in second.log_path.read_text()
    # interrupted again: re-queued once already (max_requeue_attempts=1), so it fails as without the policy
    with JupyterServer(tmp_path, taskrun=config) as third:
        task = get(third, long["id"])
        assert task["status"] == "failed" and task["attempt"] == 2, task
        assert task["error"]["reason"].startswith("interrupted: server stopped while the task was running"), task["error"]
        assert "max_requeue_attempts" in task["error"]["reason"]
        assert get(third, later["id"], wait=90)["status"] == "completed"
        events = status_events(third, long["id"])
    assert [e["status"] for e in events] == ["running", "queued", "running", "failed"], events
    assert events[1]["reason"] == "re-queued after the server stopped (attempt 2)" and events[1]["attempt"] == 2
    assert open(runs).read() == "xx"


@pytest.mark.skipif("requeue_on_restart" not in TaskSubmission.FIELDS, reason="the submission schema has no requeue_on_restart field yet")
def test_requeue_on_restart_per_task_after_a_crash(tmp_path):
    """A SIGKILLed server: at the next start only the task that opted in runs again."""
    runs = str(tmp_path / "runs.txt")
    config = {"max_concurrent_tasks": 2, "kernel_pool_size": 0}
    server = JupyterServer(tmp_path, taskrun=config).start()
    try:
        flagged = submit(server, code=COUNTED_RUN.format(path=runs, finish_at=2), requeue_on_restart=True)
        plain = submit(server, code="import time\nprint('plain', flush=True)\ntime.sleep(600)")
        wait_logs(server, flagged["id"], b"run 1\n")
        wait_logs(server, plain["id"], b"plain")
    finally:
        os.kill(server.proc.pid, signal.SIGKILL)
        server.proc.wait(10)
        server.proc = None
        server._log.close()
    with JupyterServer(tmp_path, taskrun=config) as second:
        task = get(second, flagged["id"], wait=90)
        assert task["status"] == "completed" and task["attempt"] == 2, task
        other = get(second, plain["id"])
        assert other["status"] == "failed" and other["attempt"] == 1
        assert other["error"]["reason"] == "interrupted: server stopped while the task was running"
        status, logs = second.request("GET", f"taskrun/api/tasks/{flagged['id']}/logs")
        assert logs == b"run 1\nrun 2\n"  # both runs' output, in order
    assert "re-queued after the server stopped (attempt 2)" in second.log_path.read_text()


# ---------------------------------------------------------------------------
# 3. an ordinary 404 after a delete: one log line, no traceback
# ---------------------------------------------------------------------------


async def test_404s_after_delete_log_one_line_each_without_traceback(tmp_path):
    server = JupyterServer(tmp_path, taskrun={"kernel_pool_size": 0, "max_concurrent_tasks": 1}).start()
    try:
        blocker = submit(server, code="import time\nprint('busy', flush=True)\ntime.sleep(600)")
        wait_logs(server, blocker["id"], b"busy")
        tid = submit(server, code="print(1)")["id"]  # queued behind the blocker
        client = AsyncHTTPClient()
        auth = {"Authorization": f"token {server.token}"}
        url = f"{server.url}taskrun/api/tasks/{tid}"
        # a follower and a long poll of the task while it is cancelled and deleted, two deletes racing
        follower = await RawSSE(f"{url}/events", auth).connect()
        long_poll = client.fetch(HTTPRequest(f"{url}?wait=60", headers=auth, request_timeout=90), raise_error=False)
        await asyncio.sleep(0.2)
        cancel = await client.fetch(HTTPRequest(f"{url}/cancel", method="POST", body=b"", headers=auth), raise_error=False)
        assert cancel.code == 202
        deletes = [client.fetch(HTTPRequest(url, method="DELETE", headers=auth), raise_error=False) for _ in range(2)]
        codes = sorted([(await d).code for d in deletes])
        assert codes == [204, 404]
        assert (await long_poll).code in (200, 404)
        while (frame := await follower.next_frame(30)) is not None and frame["event"] != "end":
            pass
        assert frame is not None and frame["data"]["task_id"] == tid, frame
        await follower.close()
        refused = [
            ("GET", ""), ("GET", "/logs"), ("GET", "/events"), ("GET", "/outputs"), ("GET", "/notebook"),
            ("GET", "/metrics"), ("POST", "/cancel"), ("POST", "/rerun"), ("DELETE", ""),
        ]  # fmt: skip
        for method, sub in refused:
            status, body = server.request(method, f"taskrun/api/tasks/{tid}{sub}", b"" if method == "POST" else None)
            assert status == 404 and json.loads(body)["reason"] == "not-found", (method, sub, status, body)
        ws = f"{server.url.replace('http', 'ws')}taskrun/api/tasks/{tid}/ws"
        with pytest.raises(HTTPClientError) as refused_ws:
            await websocket_connect(HTTPRequest(ws, headers=auth))
        assert refused_ws.value.code == 404
        await wait_for(lambda: "/ws" in server.log_path.read_text(), 10, what="the ws request in the log")
        server.request("POST", f"taskrun/api/tasks/{blocker['id']}/cancel", b"")
    finally:
        server.stop()
    log = server.log_path.read_text()
    assert "Traceback" not in log and "Uncaught exception" not in log, log[-3000:]
    for method, sub in refused:
        lines = [line for line in log.splitlines() if f" {method} /taskrun/api/tasks/{tid}{sub} " in line]
        assert len(lines) == (2 if (method, sub) == ("DELETE", "") else 1), (method, sub, lines)  # the raced delete too


def test_a_store_without_the_attempt_column_gets_it(tmp_path):
    """``_ADDED_COLUMNS``: a store made before ``attempt`` existed opens with every task at attempt 1."""
    from jupyter_taskrun.models import Task, TaskStatus
    from jupyter_taskrun.server.store import TaskStore

    path = str(tmp_path / "old.sqlite3")
    store = TaskStore(path)
    store.insert_tasks([Task(id="a" * 32, status=TaskStatus.COMPLETED, submission={"code": "1"}, source_kind="code", name="old")])
    store.close()
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE tasks DROP COLUMN attempt")
    db.commit()
    db.close()
    store = TaskStore(path)
    try:
        assert getattr(store.get_task("a" * 32), "attempt", None) == 1
    finally:
        store.close()


async def test_clear_finished_accepts_jupyterlabs_cache_buster(api, taskrun):
    """JupyterLab's ServerConnection appends a blank ``&<milliseconds>`` to requests: not a filter."""
    ids = await cancelled_tasks(api, taskrun, "alice", 2, "gone")
    code, data = await call(api, "DELETE", "tasks", "alice", params={"status": "cancelled", "1796189058071": ""})
    assert code == 200 and sorted(data["ids"]) == sorted(ids), data
    # a digit key WITH a value is still an unknown parameter
    code, data = await call(api, "DELETE", "tasks", "alice", params={"status": "cancelled", "123": "x"})
    assert code == 400, data
