"""Results of a Dask task (issue 15): ``record()`` values, ``inputs`` staged on the worker and
``outputs`` brought back from it, byte-identical.

A real scheduler and a real worker on 127.0.0.1 (``tests/test_dask.py``'s ``DaskProcesses``);
the worker runs with a temp folder of its own (``TMPDIR``), so the task's working folder there
is not the server's, and the only way a file gets in or out is the staging under test.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from tornado.httpclient import AsyncHTTPClient

from .helpers import wait_for
from .test_dask import (  # noqa: F401  (fixtures: the server's Dask configuration)
    PIDS,
    DaskProcesses,
    dask_executor_config,
    jp_server_config,
    pid_line,
    wait_connected,
)

pytest.importorskip("distributed")

pytestmark = pytest.mark.dask

BLOB = bytes(range(256)) * 3 + b"\x00\xff\r\n"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A scheduler and one worker whose temp folder (so the task's folder there) is its own."""
    procs = DaskProcesses(tmp_path_factory.mktemp("dask-results"))
    worker_tmp = tmp_path_factory.mktemp("worker-tmp")
    try:
        procs.start_scheduler()
        procs.env["TMPDIR"] = str(worker_tmp)
        procs.start_worker("files-w1")
        procs.wait_workers(["files-w1"])
        procs.worker_tmp = str(worker_tmp)  # type: ignore[attr-defined]
        yield procs
    finally:
        procs.close()


@pytest.fixture
def taskrun_config(request) -> dict:
    """``c.TaskRun``: the Dask executor, plus an (indirect) parametrize's settings."""
    return {"executor": "dask", **getattr(request, "param", {})}


CODE = (
    PIDS
    + """
import os, shutil
from jupyter_taskrun import record
print('cwd', os.getcwd(), flush=True)
record("inputs_seen", sorted(os.path.relpath(os.path.join(d, n)) for d, _, ns in os.walk('data') for n in ns))
for step in range(3):
    record("loss", 1.0 / (step + 1), step=step)
record("accuracy", 0.875)
os.makedirs('results/deep', exist_ok=True)
shutil.copy('data/in.bin', 'results/deep/copy.bin')
open('results/report.csv', 'w').write(open('data/sub/x.csv').read().upper())
"""
)


def write_inputs(root: str) -> dict[str, bytes]:
    files = {"job/data/in.bin": BLOB, "job/data/sub/x.csv": b"a,b\n1,2\n"}
    for rel, data in files.items():
        path = Path(root, rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


async def test_a_dask_task_records_values_reads_inputs_and_returns_outputs(api, cluster, taskrun):
    await wait_connected(api, workers=1)
    write_inputs(taskrun.root_dir)
    task = await api.run(code=CODE, cwd="job", inputs=["job/data"], outputs=["results/**", "absent.txt"], wait_s=120)
    assert task["status"] == "completed", task["error"]
    assert task["executor"] == "dask" and task["worker"] == cluster.addresses["files-w1"]

    # it ran on the worker, in a folder of the worker's own, not the server's
    _, logs, _ = await api.call("GET", f"tasks/{task['id']}/logs")
    _, ppid = pid_line(logs)
    assert ppid == cluster.workers["files-w1"].pid
    cwd = next(line.split(" ", 1)[1] for line in logs.splitlines() if line.startswith("cwd "))
    assert os.path.realpath(cwd).startswith(os.path.realpath(cluster.worker_tmp) + os.sep), cwd
    assert not os.path.realpath(cwd).startswith(os.path.realpath(taskrun.root_dir))
    assert task["metrics"]["worker_cwd"] == cwd
    # the worker removes its folder once the kernel is reaped, after the result went back
    await wait_for(lambda: not os.path.exists(cwd), timeout=30, what="the worker's task folder removed")

    # values came back through the worker's events
    assert task["values"] == {"inputs_seen": ["data/in.bin", "data/sub/x.csv"], "loss": pytest.approx(1 / 3), "accuracy": 0.875}
    code, values, _ = await api.call("GET", f"tasks/{task['id']}/values")
    assert code == 200
    assert [p["step"] for p in values["series"]["loss"]] == [0, 1, 2]

    # outputs came back byte-identical
    code, listing, _ = await api.call("GET", f"tasks/{task['id']}/files")
    assert code == 200, listing
    expected = {"results/deep/copy.bin": BLOB, "results/report.csv": b"A,B\n1,2\n"}
    assert {f["path"]: (f["size"], f["sha256"]) for f in listing["files"]} == {
        p: (len(d), hashlib.sha256(d).hexdigest()) for p, d in expected.items()
    }
    assert listing["missing"] == ["absent.txt"] and listing["refused"] == []
    for path, data in expected.items():
        resp = await AsyncHTTPClient().fetch(api.url(f"tasks/{task['id']}/files/{path}"), headers=api.headers)
        assert resp.body == data
    # the worker's copies are not the server's: nothing was written under the server's job folder
    assert not Path(taskrun.root_dir, "job", "results").exists()


async def test_a_failed_dask_task_still_returns_its_outputs(api, cluster):
    await wait_connected(api, workers=1)
    code = "open('partial.bin', 'wb').write(bytes(range(256)))\nraise ValueError('late failure')"
    task = await api.run(code=code, outputs=["partial.bin"], wait_s=120)
    assert task["status"] == "failed" and task["error"]["ename"] == "ValueError"
    _, listing, _ = await api.call("GET", f"tasks/{task['id']}/files")
    assert [(f["path"], f["size"]) for f in listing["files"]] == [("partial.bin", 256)]


@pytest.mark.parametrize("taskrun_config", [{"max_staged_input_bytes": 1000}], indirect=True)
async def test_inputs_over_the_staging_cap_fail_the_task_naming_it(api, cluster, taskrun):
    await wait_connected(api, workers=1)
    write_inputs(taskrun.root_dir)  # 772 + 8 bytes: under the cap alone
    Path(taskrun.root_dir, "job", "data", "more.bin").write_bytes(b"m" * 500)
    task = await api.run(code="print('never')", cwd="job", inputs=["job/data"], wait_s=120)
    assert task["status"] == "failed"
    assert "max_staged_input_bytes" in task["error"]["reason"], task["error"]


async def test_inputs_through_symlinked_folders_and_refused_special_files(api, cluster, taskrun):
    await wait_connected(api, workers=1)
    write_inputs(taskrun.root_dir)
    job = Path(taskrun.root_dir, "job")
    os.symlink("sub", job / "data" / "alias")  # a folder linked inside the cwd: staged as a local task sees it
    os.symlink("..", job / "data" / "up")  # a link back up: not a loop
    code = "import os\nprint(sorted(os.listdir('data/alias')), open('data/alias/x.csv').read() == open('data/sub/x.csv').read())"
    task = await api.run(code=code, cwd="job", inputs=["job/data"], wait_s=120)
    assert task["status"] == "completed", task["error"]
    _, logs, _ = await api.call("GET", f"tasks/{task['id']}/logs")
    assert "['x.csv'] True" in logs
    os.mkfifo(job / "data" / "pipe")
    task = await api.run(code="print('never')", cwd="job", inputs=["job/data"], wait_s=120)
    assert task["status"] == "failed"
    assert "not a regular file" in task["error"]["reason"] and "pipe" in task["error"]["reason"], task["error"]
