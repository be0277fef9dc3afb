"""Core engine (issue 2): real kernels, a real SQLite file, through a real Jupyter server."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time

import nbformat
import psutil
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from jupyter_taskrun.models import TaskStatus
from jupyter_taskrun.server.store import TaskStore

from .forking import kernel_start  # noqa: F401  (autouse: every test runs with spawned and forked kernels)
from .helpers import kernel_processes


async def process_gone(pid: int, within: float) -> bool:
    """True once ``pid`` has exited (gone or a zombie awaiting its reaper)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        await asyncio.sleep(0.02)
    return False


async def test_code_task_events_in_order(api):
    task = await api.run(code="import sys\nprint('hello')\nprint('oops', file=sys.stderr)\n6 * 7", name="answer")
    assert task["status"] == "completed", task
    assert task["name"] == "answer"
    assert task["result"]["data"]["text/plain"] == "42"
    events = await api.events(task["id"])
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(events) + 1)), "per-task sequence numbers are contiguous"
    types = [e["type"] for e in events]
    assert types[0] == "status" and events[0]["data"]["status"] == "running"
    assert types[-1] == "status" and events[-1]["data"]["status"] == "completed"
    # cell start < logs < execute_result < cell end
    start = types.index("cell")
    end = len(types) - 1 - types[::-1].index("cell")
    logs = [e for e in events if e["type"] == "log"]
    assert "".join(e["data"]["text"] for e in logs if e["data"]["stream"] == "stdout") == "hello\n"
    assert "".join(e["data"]["text"] for e in logs if e["data"]["stream"] == "stderr") == "oops\n"
    out = [i for i, e in enumerate(events) if e["type"] == "output"]
    assert out and start < out[0] < end
    assert events[out[0]]["data"]["output"]["output_type"] == "execute_result"
    m = task["metrics"]
    for key in ("queue_wait", "wall", "kernel_start", "cpu_user", "cpu_system", "peak_rss", "output_bytes", "cell_durations"):
        assert key in m, key
    assert m["peak_rss"] > 10 * 1024 * 1024  # a real kernel process was measured
    assert m["cell_durations"][0]["duration"] > 0
    assert task["started_at"] and task["finished_at"] and task["created_at"] <= task["started_at"] <= task["finished_at"]


async def test_rich_outputs_and_images_are_events(api):
    code = (
        "from IPython.display import display, HTML, Image\n"
        "import base64\n"
        "png = base64.b64decode('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==')\n"
        "display(HTML('<b>bold</b>'))\n"
        "display(Image(data=png, format='png'))\n"
    )
    task = await api.run(code=code)
    assert task["status"] == "completed", task
    code_, outputs, _ = await api.call("GET", f"tasks/{task['id']}/outputs")
    kinds = [next(iter(o["data"])) if "text/html" not in o["data"] else "text/html" for o in outputs["outputs"]]
    assert "text/html" in kinds
    assert any("image/png" in o["data"] for o in outputs["outputs"])


async def test_cells_run_in_order_in_one_kernel(api):
    task = await api.run(cells=["x = 1", "x += 41", "print(x)"])
    assert task["status"] == "completed", task
    code, logs, _ = await api.call("GET", f"tasks/{task['id']}/logs")
    assert logs == "42\n"
    assert [c["cell_index"] for c in task["metrics"]["cell_durations"]] == [0, 1, 2]


async def test_py_script_gets_file_argv_and_cwd(api, jp_root_dir):
    folder = jp_root_dir / "jobs"
    folder.mkdir()
    (folder / "data.txt").write_text("payload")
    (folder / "job.py").write_text(
        "import os, sys\nprint(__file__)\nprint(sys.argv[0])\nprint(os.getcwd())\nprint(open('data.txt').read())\n"
    )
    task = await api.run(path="jobs/job.py")
    assert task["status"] == "completed", task
    assert task["source_kind"] == "path" and task["name"] == "job.py"
    _, logs, _ = await api.call("GET", f"tasks/{task['id']}/logs")
    real = os.path.realpath(folder)
    assert logs.splitlines() == [os.path.join(real, "job.py"), os.path.join(real, "job.py"), real, "payload"]


async def test_ipynb_path_with_papermill_parameters(api, jp_root_dir):
    nb = new_notebook(
        cells=[
            new_markdown_cell("# report"),
            new_code_cell("alpha = 1\nname = 'default'", metadata={"tags": ["parameters"]}),
            new_code_cell("print(alpha * 2, name, flag)"),
        ]
    )
    nb.cells.insert(1, new_code_cell("flag = None"))
    nbformat.write(nb, jp_root_dir / "report.ipynb")
    task = await api.run(path="report.ipynb", parameters={"alpha": 21, "name": "x'y", "flag": [1, {"a": True}]})
    assert task["status"] == "completed", task
    _, logs, _ = await api.call("GET", f"tasks/{task['id']}/logs")
    assert logs == "42 x'y [1, {'a': True}]\n"
    code, executed, _ = await api.call("GET", f"tasks/{task['id']}/notebook")
    assert code == 200
    tags = [c["metadata"].get("tags", []) for c in executed["cells"]]
    # injected right after the cell tagged 'parameters'
    assert tags.index(["injected-parameters"]) == tags.index(["parameters"]) + 1
    last = executed["cells"][-1]
    assert last["outputs"][0]["text"] == "42 x'y [1, {'a': True}]\n"
    assert "execution" in last["metadata"] and last["metadata"]["taskrun"]["duration"] > 0


async def test_parameters_without_parameters_cell_go_first(api):
    nb = new_notebook(cells=[new_code_cell("print(n + 1)")])
    task = await api.run(notebook=json.loads(nbformat.writes(nb)), parameters={"n": 41})
    assert task["status"] == "completed", task
    _, logs, _ = await api.call("GET", f"tasks/{task['id']}/logs")
    assert logs == "42\n"
    _, executed, _ = await api.call("GET", f"tasks/{task['id']}/notebook")
    assert executed["cells"][0]["metadata"]["tags"] == ["injected-parameters"]


async def test_two_tasks_never_share_a_kernel_or_state(api):
    first = await api.run(code="import os, sys\nos.environ['LEAK'] = '1'\nsys.leak = 1\nsecret = 42\nprint(os.getpid())")
    second = await api.run(
        code="import os, sys\nprint(os.getpid())\nprint('secret' in dir(), os.environ.get('LEAK'), hasattr(sys, 'leak'))"
    )
    _, log1, _ = await api.call("GET", f"tasks/{first['id']}/logs")
    _, log2, _ = await api.call("GET", f"tasks/{second['id']}/logs")
    pid1 = int(log1.split()[0])
    pid2, state = log2.splitlines()
    assert pid1 != int(pid2)
    assert state == "False None False"
    assert await process_gone(pid1, within=2)


async def test_env_and_cwd_options(api, jp_root_dir):
    (jp_root_dir / "work").mkdir()
    task = await api.run(code="import os\nprint(os.environ['GREETING'], os.path.basename(os.getcwd()))", env={"GREETING": "hi"}, cwd="work")
    _, logs, _ = await api.call("GET", f"tasks/{task['id']}/logs")
    assert logs == "hi work\n"


async def test_concurrency_cap_and_priority_fifo(api, taskrun):
    # 6 tasks, each records its wall window; never more than 2 kernels run tasks at once
    code = "import time, os\nt0 = time.time()\ntime.sleep(0.6)\nprint(t0, time.time(), os.getpid())"
    ids = [(await api.submit(code=code, name=f"c{i}"))["id"] for i in range(6)]
    peak = 0
    while True:
        # one snapshot per poll (a per-task poll would mix moments)
        _, running, _ = await api.call("GET", "tasks", params={"status": "running"})
        now = (len(running["tasks"]), len(taskrun.executor_impl._kernels), len(kernel_processes()))
        if max(now) > 2:
            print("OVER", now, [(p.pid, p.status(), p.cmdline()[-3:]) for p in kernel_processes()])
        peak = max(peak, *now)
        _, done, _ = await api.call("GET", "tasks", params={"status": "completed"})
        if len(done["tasks"]) == len(ids):
            break
        await asyncio.sleep(0.02)
    assert peak <= 2
    windows = []
    for i in ids:
        _, logs, _ = await api.call("GET", f"tasks/{i}/logs")
        a, b, _pid = logs.split()
        windows.append((float(a), float(b)))
    for a, _ in windows:
        overlapping = sum(1 for s, e in windows if s <= a < e)
        assert overlapping <= 2


@pytest.mark.parametrize("taskrun_config", [{"max_concurrent_tasks": 1}])
async def test_priority_then_fifo(api, taskrun):
    taskrun.pause()  # hold dispatch until everything is queued
    order = [("p0-a", 0), ("p5-a", 5), ("p0-b", 0), ("p5-b", 5), ("p1", 1)]
    ids = {}
    for name, prio in order:
        ids[name] = (await api.submit(code=f"print({name!r})", name=name, priority=prio))["id"]
    queued = await api.get(ids["p0-b"])
    assert queued["status"] == "queued" and queued["queue_position"] == 5
    taskrun.resume()
    done = [await api.wait(ids[name]) for name, _ in order]
    started = sorted(done, key=lambda t: t["started_at"])
    assert [t["name"] for t in started] == ["p5-a", "p5-b", "p1", "p0-a", "p0-b"]


async def test_cancel_queued_and_running(api, taskrun):
    taskrun.pause()
    queued = await api.submit(code="print('never')")
    code, data, _ = await api.call("POST", f"tasks/{queued['id']}/cancel")
    assert code == 202
    task = await api.get(queued["id"])
    assert task["status"] == "cancelled"
    assert "queued" in task["error"]["reason"]
    taskrun.resume()

    running = await api.submit(code="import os, time\nprint(os.getpid(), flush=True)\ntime.sleep(60)")
    await api.wait_status(running["id"], "running")
    # wait until the pid is printed
    for _ in range(200):
        _, logs, _ = await api.call("GET", f"tasks/{running['id']}/logs")
        if logs.strip():
            break
        await asyncio.sleep(0.05)
    pid = int(logs.split()[0])
    code, _, _ = await api.call("POST", f"tasks/{running['id']}/cancel")
    assert code == 202
    code2, _, _ = await api.call("POST", f"tasks/{running['id']}/cancel")
    assert code2 in (202, 409)  # idempotent while cancelling; 409 once it has ended
    task = await api.wait(running["id"], 10)
    assert task["status"] == "cancelled"
    assert task["error"]["reason"] == "cancelled by user"
    assert await process_gone(pid, within=2)
    _, logs, _ = await api.call("GET", f"tasks/{running['id']}/logs")
    assert logs.startswith(str(pid))  # output before the cancel is kept
    code, data, _ = await api.call("POST", f"tasks/{running['id']}/cancel")
    assert code == 409 and data["reason"] == "conflict"


async def test_task_timeout_and_cell_timeout(api):
    task = await api.run(code="import time\nprint('start', flush=True)\ntime.sleep(60)", timeout=1.5)
    assert task["status"] == "timed_out"
    assert "timeout" in task["error"]["reason"]
    assert task["metrics"]["wall"] < 10
    task = await api.run(cells=["print('fast')", "import time\ntime.sleep(60)", "print('never')"], cell_timeout=1)
    assert task["status"] == "timed_out"
    assert task["error"]["cell_index"] == 1
    assert "cell 1" in task["error"]["reason"]


@pytest.mark.parametrize(
    "code, words",
    [
        ("import os\nprint('before', flush=True)\nimport time; time.sleep(0.1)\nos._exit(3)", ["exited with code 3"]),
        ("import os, signal\nprint('before', flush=True)\nimport time; time.sleep(0.1)\nos.kill(os.getpid(), signal.SIGKILL)", ["SIGKILL"]),
    ],
)
async def test_kernel_death_fails_the_task_and_not_the_next(api, code, words):
    task = await api.run(code=code, timeout=30)
    assert task["status"] == "failed", task
    for w in words:
        assert w in task["error"]["reason"]
    assert "kernel died" in task["error"]["reason"]
    _, logs, _ = await api.call("GET", f"tasks/{task['id']}/logs")
    assert logs == "before\n"
    # death is noticed at once (pidfd), not after a poll or a timeout: from the last output
    # (then a 0.1 s sleep and the death) to the failed status is well under 2 s
    from datetime import datetime

    events = await api.events(task["id"])
    last_log = max(datetime.fromisoformat(e["time"].rstrip("Z")) for e in events if e["type"] == "log")
    failed = datetime.fromisoformat(events[-1]["time"].rstrip("Z"))
    assert (failed - last_log).total_seconds() < 2
    after = await api.run(code="print('fine')")
    assert after["status"] == "completed"


async def test_exception_records_error_with_cell(api):
    task = await api.run(cells=["x = 1", "raise ValueError('bad value')", "print('never')"])
    assert task["status"] == "failed"
    err = task["error"]
    assert err["ename"] == "ValueError" and err["evalue"] == "bad value" and err["cell_index"] == 1
    assert any("ValueError" in line for line in err["traceback"])
    _, logs, _ = await api.call("GET", f"tasks/{task['id']}/logs")
    assert "never" not in logs


async def test_status_transitions_are_validated(taskrun):
    from jupyter_taskrun.errors import InvalidTransition
    from jupyter_taskrun.models import check_transition

    check_transition(TaskStatus.QUEUED, TaskStatus.RUNNING)
    for terminal in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.TIMED_OUT):
        with pytest.raises(InvalidTransition):
            check_transition(terminal, TaskStatus.RUNNING)
    with pytest.raises(InvalidTransition):
        check_transition(TaskStatus.QUEUED, TaskStatus.COMPLETED)


async def test_events_persist_in_sqlite_file(api, db_path):
    task = await api.run(code="print('stored')")
    db = sqlite3.connect(db_path)
    rows = db.execute("SELECT seq, type FROM events WHERE task_id=? ORDER BY seq", (task["id"],)).fetchall()
    assert rows[0] == (1, "status") and rows[-1][1] == "status"
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    (status,) = db.execute("SELECT status FROM tasks WHERE id=?", (task["id"],)).fetchone()
    assert status == "completed"
    assert db.execute("SELECT COUNT(*) FROM artifacts WHERE task_id=? AND name='notebook'", (task["id"],)).fetchone()[0] == 1


async def test_pruning_removes_old_finished_tasks(api, taskrun, db_path):
    old = await api.run(code="1")
    new = await api.run(code="2")
    db = sqlite3.connect(db_path)
    db.execute("UPDATE tasks SET finished_at = finished_at - 40 * 86400 WHERE id=?", (old["id"],))
    db.commit()
    taskrun.retain_days = 30
    assert taskrun.prune() == 1
    code, _, _ = await api.call("GET", f"tasks/{old['id']}")
    assert code == 404
    assert (await api.get(new["id"]))["status"] == "completed"
    assert db.execute("SELECT COUNT(*) FROM events WHERE task_id=?", (old["id"],)).fetchone()[0] == 0


def test_store_list_is_indexed_and_paged(tmp_path):
    from jupyter_taskrun.models import Task

    store = TaskStore(str(tmp_path / "s.sqlite3"))
    tasks = [
        Task(id=f"{i:032x}", status=TaskStatus.COMPLETED if i % 2 else TaskStatus.FAILED, submission={"code": "1"},
             source_kind="code", name=f"job-{i:03d}", owner="ann" if i % 3 else "bob", tags=["even"] if i % 2 == 0 else [])
        for i in range(120)
    ]  # fmt: skip
    store.insert_tasks(tasks)
    page, cursor = store.list_tasks(limit=50)
    assert [t.name for t in page[:2]] == ["job-119", "job-118"] and cursor
    seen = [t.id for t in page]
    while cursor:
        page, cursor = store.list_tasks(limit=50, cursor=cursor)
        seen += [t.id for t in page]
    assert len(seen) == len(set(seen)) == 120
    failed, _ = store.list_tasks(status=["failed"], limit=500)
    assert len(failed) == 60 and all(t.status == TaskStatus.FAILED for t in failed)
    tagged, c = store.list_tasks(tag="even", limit=10)
    assert len(tagged) == 10 and all("even" in t.tags for t in tagged)
    tagged2, _ = store.list_tasks(tag="even", limit=10, cursor=c)
    assert not {t.id for t in tagged} & {t.id for t in tagged2}
    named, _ = store.list_tasks(name="job-00", limit=100)
    assert sorted(t.name for t in named) == [f"job-00{i}" for i in range(10)]
    bobs, _ = store.list_tasks(owner="bob", limit=500)
    assert len(bobs) == 40
    plan = store._db.execute("EXPLAIN QUERY PLAN SELECT * FROM tasks WHERE status='failed' ORDER BY n DESC LIMIT 5").fetchall()
    assert any("tasks_status_n" in str(row) for row in plan)


async def pool_ready(pool, within: float = 60.0) -> None:
    """Wait for a pooled kernel: a start takes seconds on a loaded 2-core machine."""
    deadline = time.monotonic() + within
    while not pool.ready_count("python3"):
        assert time.monotonic() < deadline, f"no pooled kernel ready within {within:g} s"
        await asyncio.sleep(0.05)


async def test_warm_pool_kernel_is_used_once(jp_serverapp, api, taskrun):
    """With a pool, tasks still never share a kernel (each pooled kernel is used once)."""
    from jupyter_taskrun.execution.kernels import KernelPool

    executor = taskrun.executor_impl
    executor.pool = KernelPool(executor.launcher, {"python3": 1})
    executor.pool.fill()
    await pool_ready(executor.pool)
    a = await api.run(code="import os\nsecret = 1\nprint(os.getpid())")
    assert a["metrics"]["pooled_kernel"] is True and a["metrics"]["kernel_start"] == 0
    await pool_ready(executor.pool)
    b = await api.run(code="import os\nprint(os.getpid(), 'secret' in dir())")
    assert b["metrics"]["pooled_kernel"] is True
    _, la, _ = await api.call("GET", f"tasks/{a['id']}/logs")
    _, lb, _ = await api.call("GET", f"tasks/{b['id']}/logs")
    assert la.split()[0] != lb.split()[0] and lb.split()[1] == "False"
    # a task with its own env never gets a pooled kernel (its env would not apply)
    c = await api.run(code="import os\nprint(os.environ['X'])", env={"X": "1"})
    assert c["metrics"]["pooled_kernel"] is False


async def test_a_kernel_that_loses_the_port_race_is_started_again(api, tmp_path):
    """jupyter_client picks a kernel's ports before the kernel binds them; when another process takes
    one in between, the kernel exits with "Address already in use" (seen in CI under load). That start
    is retried with new ports instead of failing the task. The kernel here is a real ipykernel whose
    first start fails exactly that way."""
    import json
    import sys

    from jupyter_client.kernelspec import KernelSpecManager

    from jupyter_taskrun.execution.kernels import KernelLauncher

    first = tmp_path / "first-start-happened"
    script = tmp_path / "racy_ipykernel.py"  # "ipykernel" in its argv: launched as an ipykernel
    script.write_text(
        "import os, sys\n"
        f"if not os.path.exists({str(first)!r}):\n"
        f"    open({str(first)!r}, 'w').close()\n"
        "    sys.stderr.write(\"zmq.error.ZMQError: Address already in use (addr='tcp://127.0.0.1:9')\\n\")\n"
        "    sys.exit(1)\n"
        "from ipykernel import kernelapp\n"
        "kernelapp.launch_new_instance()\n"
    )
    spec_dir = tmp_path / "kernels" / "racy"
    spec_dir.mkdir(parents=True)
    argv = [sys.executable, str(script), "-f", "{connection_file}"]
    (spec_dir / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "racy", "language": "python"}))
    launcher = KernelLauncher(KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")]))
    kernel = await launcher.start("racy")
    try:
        assert first.exists()  # the first start really failed
        assert kernel.km.has_kernel and await kernel.km.is_alive()
    finally:
        await kernel.dispose()
