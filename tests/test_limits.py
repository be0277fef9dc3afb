"""Limits really hit (issue 8): memory_limit, max_output_bytes, max_queued_tasks,
max_request_bytes, max_streams_per_user, and task / cell timeouts.

Each limit ends or refuses exactly what exceeds it, with a clear reason, and changes nothing else.
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse

import pytest

from .forking import kernel_start  # noqa: F401  (autouse: every test runs with spawned and forked kernels)
from .helpers import assert_json_error, gone, kernel_processes, logs_of, sse_connect, task_count, wait_for, wait_log, ws_connect

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
