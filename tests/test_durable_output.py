"""Nothing printed is lost when a kernel dies (issue 11): every kind of death, 50 times each.

Each task writes at the Python level without flushing (ipykernel buffers it for a few ms) and at
the C level (``os.write`` on fds 1 and 2), then dies at once. Stock ipykernel + nbclient keep
that line only sometimes; the durable channel (``jupyter_taskrun/durable.py``) must keep it
every time, exactly once, in the logs and in the executed notebook.
"""

from __future__ import annotations

import os

import pytest

from .forking import kernel_start  # noqa: F401  (autouse: every test runs with spawned and forked kernels)

REPEAT = int(os.environ.get("TASKRUN_DEATH_REPEAT", "50"))  # the bar; lower it only to iterate

WRITE = "import os, sys\nprint('py-out before', end='\\n')\nsys.stderr.write('py-err before\\n')\nos.write(1, b'c-out before\\n')\n"

DEATHS = {
    "sigkill": ("import signal\nos.kill(os.getpid(), signal.SIGKILL)", -9),
    # what the OOM killer does: SIGKILL from another process
    "external_sigkill": ("import subprocess, time\nsubprocess.Popen(['kill', '-9', str(os.getpid())])\ntime.sleep(30)", -9),
    "segfault": ("import ctypes\nctypes.string_at(0)", -11),
    "os_exit": ("os._exit(3)", 3),
    "memory_limit": ("hog = []\nwhile True:\n    hog.append(bytearray(16 * 2**20))", -9),
}


@pytest.fixture
def taskrun_config():
    return {"kernel_pool_size": 2, "max_concurrent_tasks": 2}


async def _check(api, task_id: str, kind: str, exit_code: int) -> None:
    task = await api.wait(task_id, 120)
    assert task["status"] == "failed", (kind, task)
    assert task["exit_code"] == exit_code, (kind, task["exit_code"], task["error"])
    _, logs, _ = await api.call("GET", f"tasks/{task_id}/logs")
    for line in ("py-out before\n", "py-err before\n", "c-out before\n"):
        assert logs.count(line) == 1, (kind, line, logs)
    _, nb, _ = await api.call("GET", f"tasks/{task_id}/notebook")
    text = "".join(o.get("text", "") for o in nb["cells"][0]["outputs"] if o["output_type"] == "stream")
    for line in ("py-out before\n", "py-err before\n", "c-out before\n"):
        assert text.count(line) == 1, (kind, line, text)
    if kind == "segfault":
        error = task["error"]
        assert any("Fatal Python error: Segmentation fault" in line for line in error["traceback"]), error
        assert 'File "' in error["reason"] and ", line " in error["reason"], error["reason"]
    if kind == "memory_limit":
        assert "memory limit exceeded" in task["error"]["reason"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(DEATHS))
async def test_last_output_survives_every_death(api, kind):
    death, exit_code = DEATHS[kind]
    body = {"code": WRITE + death}
    if kind == "memory_limit":
        body["memory_limit"] = 160 * 2**20
    code, batch, _ = await api.call("POST", "tasks/batch", {"tasks": [body] * REPEAT})
    assert code == 201, batch
    kept = 0
    for task in batch["tasks"]:
        await _check(api, task["id"], kind, exit_code)
        kept += 1
    assert kept == REPEAT


async def test_output_of_a_healthy_task_is_not_duplicated(api):
    """The reconciliation never doubles what IOPub already delivered (big and small writes)."""
    code = (
        "import os, sys\n"
        "for i in range(2000):\n"
        "    print(f'line {i}')\n"
        "sys.stdout.write('x' * 300000 + '\\n')\n"
        "os.write(2, b'c-level\\n')\n"
        "print('é ünïcode ✓')\n"
    )
    task = await api.run(code=code)
    assert task["status"] == "completed" and task["exit_code"] is None, task
    _, logs, _ = await api.call("GET", f"tasks/{task['id']}/logs", params={"stream": "stdout"})
    expected = "".join(f"line {i}\n" for i in range(2000)) + "x" * 300000 + "\n" + "é ünïcode ✓\n"
    assert logs == expected
    _, err, _ = await api.call("GET", f"tasks/{task['id']}/logs", params={"stream": "stderr"})
    assert err == "c-level\n"


async def test_c_level_output_goes_to_its_cell(api):
    """fd-level writes (C code, subprocesses) appear in the cell that wrote them, as with ipykernel."""
    task = await api.run(
        cells=["import os\nos.write(1, b'one\\n')", "import subprocess\nsubprocess.run(['echo', 'two'])", "print('three')"]
    )
    assert task["status"] == "completed", task
    _, nb, _ = await api.call("GET", f"tasks/{task['id']}/notebook")
    texts = ["".join(o.get("text", "") for o in c["outputs"] if o["output_type"] == "stream") for c in nb["cells"]]
    assert texts == ["one\n", "two\n", "three\n"]
