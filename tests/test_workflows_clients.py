"""Workflows across a server restart, from the CLI and from the Python clients (issue 17), with
real ``jupyter server`` processes on one SQLite file."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import datetime

from jupyter_taskrun.client import AsyncTaskRunClient, TaskRunClient

from ._server import JupyterServer
from .test_restart import get, wait_running_with_output


def ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def batch(server: JupyterServer, tasks: list[dict]) -> list[dict]:
    status, data = server.request("POST", "taskrun/api/tasks/batch", json.dumps({"tasks": tasks}).encode())
    assert status == 201, data
    return json.loads(data)["tasks"]


def test_a_restart_while_b_waits_still_runs_b_after_a(tmp_path):
    args = ("--TaskRun.kernel_pool_size=0",)
    slow_a = "import os, time\nprint(os.getpid(), flush=True)\ntime.sleep(2)\nfrom jupyter_taskrun import record\nrecord('n', 7)"
    with JupyterServer(tmp_path, extra_args=args) as first:
        a, b = batch(
            first,
            [
                {"key": "a", "code": slow_a, "requeue_on_restart": True},
                {"key": "b", "depends_on": ["a"], "parameters": {"n": {"$value": "a.n"}}, "code": "print('b got', n)"},
            ],
        )
        wait_running_with_output(first, a["id"])
        assert get(first, b["id"])["status"] == "waiting"
    with JupyterServer(tmp_path, extra_args=args) as second:
        waiting = get(second, b["id"])
        assert waiting["status"] == "waiting" and waiting["waiting_for"] == [a["id"]]
        done_b = get(second, b["id"], wait=60)
        done_a = get(second, a["id"])
        assert done_a["status"] == "completed" and done_a["attempt"] == 2  # re-dispatched once: not a retry
        assert done_a["retry"] == 0 and done_a["retried_as"] is None
        assert done_b["status"] == "completed" and done_b["parameters"] == {"n": 7}
        assert ts(done_b["started_at"]) >= ts(done_a["finished_at"])
        status, logs = second.request("GET", f"taskrun/api/tasks/{b['id']}/logs")
        assert logs == b"b got 7\n"


def test_a_retry_delay_survives_a_restart(tmp_path):
    args = ("--TaskRun.kernel_pool_size=0",)
    with JupyterServer(tmp_path, extra_args=args) as first:
        (task,) = batch(first, [{"code": "raise SystemExit(3)", "retries": 1, "retry_delay": 3}])
        failed = get(first, task["id"], wait=60)
        assert failed["status"] == "failed" and failed["retried_as"]
        retry = get(first, failed["retried_as"])
        assert retry["status"] == "waiting" and retry["not_before"]
    with JupyterServer(tmp_path, extra_args=args) as second:
        done = get(second, retry["id"], wait=60)
        assert done["status"] == "failed" and done["retry"] == 1 and done["retried_as"] is None
        assert ts(done["started_at"]) >= ts(retry["not_before"])


WORKFLOW = [
    {"key": "prep", "name": "prep", "code": "from jupyter_taskrun import record\nrecord('rows', 41)"},
    {"key": "train", "name": "train", "depends_on": ["prep"], "parameters": {"rows": {"$value": "prep.rows"}}, "code": "rows + 1"},
    {
        "key": "report",
        "name": "report",
        "depends_on": ["train"],
        "parameters": {"total": {"$result": "train"}},
        "code": "print('total', total)",
    },
]


def test_cli_submit_batch_follow_and_clients(tmp_path):
    with JupyterServer(tmp_path, extra_args=("--TaskRun.kernel_pool_size=0",)) as server:
        path = tmp_path / "workflow.json"
        path.write_text(json.dumps({"tasks": WORKFLOW}))
        cmd = [sys.executable, "-m", "jupyter_taskrun.cli", "--url", server.url, "--token", server.token]
        proc = subprocess.run([*cmd, "submit-batch", str(path), "--follow"], env=server.env, capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        lines = proc.stdout.splitlines()
        assert any(line.startswith("[report] ") and line.endswith(" waiting") for line in lines[:3]), lines
        for key in ("prep", "train", "report"):
            assert any(line.startswith(f"[{key}] ") and line.endswith(" completed") for line in lines), (key, lines)
        # completions come in dependency order
        order = [line.split("]")[0][1:] for line in lines if line.endswith(" completed")]
        assert order == ["prep", "train", "report"]
        assert proc.stderr.count("completed in") == 3
        # a failing workflow: exit 1, the dependent's line names the failed task
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps([{"key": "x", "code": "1/0"}, {"key": "y", "depends_on": ["x"], "code": "1"}]))
        proc = subprocess.run([*cmd, "submit-batch", str(bad), "-f"], env=server.env, capture_output=True, text=True, timeout=180)
        assert proc.returncode == 1 and any(
            line.startswith("[y]") and "cancelled: dependency '1/0'" in line for line in proc.stdout.splitlines()
        )

        client = TaskRunClient(server.url, server.token)
        created = client.submit_batch({entry["key"]: {k: v for k, v in entry.items() if k != "key"} for entry in WORKFLOW})
        assert list(created) == ["prep", "train", "report"] and created["train"]["status"] == "waiting"
        done = client.wait_all(created, timeout=120)
        assert {k: t["status"] for k, t in done.items()} == dict.fromkeys(created, "completed")
        assert done["report"]["parameters"] == {"total": 42}
        retried = client.submit_batch([{"code": "raise SystemExit(1)", "retries": 1}])
        (last,) = client.wait_all(retried, timeout=120)
        assert last["retry"] == 1 and last["retry_of"] == retried[0]["id"]
        assert [t["retry"] for t in client.attempts(retried[0]["id"])] == [0, 1]

        async def async_side():
            async with AsyncTaskRunClient(server.url, server.token) as aclient:
                tasks = await aclient.submit_batch(WORKFLOW)
                return await aclient.wait_all(tasks, timeout=120)

        finished = asyncio.run(async_side())
        assert [t["status"] for t in finished] == ["completed"] * 3 and finished[2]["parameters"] == {"total": 42}
