"""Restart recovery with real server processes on one SQLite file (issues 2 and 8)."""

from __future__ import annotations

import json
import os
import signal
import time

import psutil

from ._server import JupyterServer


def submit(server: JupyterServer, **body) -> dict:
    status, data = server.request("POST", "taskrun/api/tasks", json.dumps(body).encode())
    assert status == 201, data
    return json.loads(data)


def get(server: JupyterServer, task_id: str, wait: float = 0) -> dict:
    path = f"taskrun/api/tasks/{task_id}" + (f"?wait={wait}" if wait else "")
    status, data = server.request("GET", path, timeout=wait + 10)
    assert status == 200, data
    return json.loads(data)


def wait_running_with_output(server: JupyterServer, task_id: str, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = server.request("GET", f"taskrun/api/tasks/{task_id}/logs")
        if status == 200 and body.strip():
            return int(body.split()[0])
        time.sleep(0.05)
    raise AssertionError("task never printed its pid")


def kernels_with_marker_prefix(prefix: str) -> list[int]:
    pids = []
    for p in psutil.process_iter(["pid"]):
        try:
            if p.environ().get("JUPYTER_TASKRUN_KERNEL", "").startswith(prefix):
                if p.status() != psutil.STATUS_ZOMBIE:
                    pids.append(p.pid)
        except (psutil.Error, OSError):
            continue
    return pids


def test_restart_after_clean_stop_requeues_queued_and_fails_running(tmp_path):
    args = ("--TaskRun.max_concurrent_tasks=1", "--TaskRun.kernel_pool_size=0")
    with JupyterServer(tmp_path, extra_args=args) as first:
        running = submit(first, code="import os, time\nprint(os.getpid(), flush=True)\ntime.sleep(120)", name="long")
        queued = [submit(first, code=f"print({i})", name=f"q{i}", priority=i % 2) for i in range(3)]
        wait_running_with_output(first, running["id"])
    # a real second server start on the same database
    with JupyterServer(tmp_path, extra_args=args) as second:
        long = get(second, running["id"])
        assert long["status"] == "failed"
        assert "interrupted" in long["error"]["reason"]
        done = [get(second, q["id"], wait=60) for q in queued]
        assert [d["status"] for d in done] == ["completed"] * 3
        order = [d["name"] for d in sorted(done, key=lambda d: d["started_at"])]
        assert order == ["q1", "q0", "q2"]  # priority, then FIFO, as before the restart
        status, logs = second.request("GET", f"taskrun/api/tasks/{queued[0]['id']}/logs")
        assert logs == b"0\n"


def test_server_sigkill_leaves_no_orphans_and_loses_nothing(tmp_path):
    args = ("--TaskRun.max_concurrent_tasks=1", "--TaskRun.kernel_pool_size=1")
    server = JupyterServer(tmp_path, extra_args=args).start()
    try:
        running = submit(server, code="import os, time\nprint(os.getpid(), flush=True)\ntime.sleep(120)")
        queued = submit(server, code="print('after restart')")
        kernel_pid = wait_running_with_output(server, running["id"])
    finally:
        os.kill(server.proc.pid, signal.SIGKILL)
        server.proc.wait(10)
        server.proc = None
        server._log.close()
    assert psutil.pid_exists(kernel_pid), "the kernel outlives a SIGKILLed server: an orphan"
    with JupyterServer(tmp_path, extra_args=args) as second:
        deadline = time.monotonic() + 10
        while psutil.pid_exists(kernel_pid) and psutil.Process(kernel_pid).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, "orphan kernel not killed by the restarted server"
            time.sleep(0.05)
        t = get(second, running["id"])
        assert t["status"] == "failed" and "interrupted" in t["error"]["reason"]
        q = get(second, queued["id"], wait=60)
        assert q["status"] == "completed"
        status, logs = second.request("GET", f"taskrun/api/tasks/{running['id']}/logs")
        assert logs.strip() == str(kernel_pid).encode()
    # the second server stopped cleanly: none of its kernels (pool included) remain
    import hashlib

    marker = hashlib.sha1(os.path.realpath(tmp_path / "db.sqlite3").encode()).hexdigest()[:12]
    deadline = time.monotonic() + 10
    while kernels_with_marker_prefix(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert kernels_with_marker_prefix(marker) == []


def test_clean_stop_marks_running_tasks_interrupted_at_once(tmp_path):
    """A server stopping normally records its running task as interrupted itself (not only the next start)."""
    import sqlite3

    with JupyterServer(tmp_path, extra_args=("--TaskRun.kernel_pool_size=0",)) as server:
        task = submit(server, code="import os, time\nprint(os.getpid(), flush=True)\ntime.sleep(120)")
        wait_running_with_output(server, task["id"])
    db = sqlite3.connect(tmp_path / "db.sqlite3")
    status, error = db.execute("SELECT status, error FROM tasks WHERE id=?", (task["id"],)).fetchone()
    assert status == "failed" and "interrupted" in json.loads(error)["reason"]
