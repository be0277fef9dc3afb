"""Workflows on a real Dask scheduler and worker (issue 17): dependencies and references are
resolved on the server, so a chain runs in order with its values; a try whose kernel dies on the
worker is a failed try that ``retries`` covers."""

from __future__ import annotations

from datetime import datetime

import pytest

from .test_dask import (  # noqa: F401  (fixtures: the server's Dask configuration)
    DaskProcesses,
    dask_executor_config,
    jp_server_config,
    wait_connected,
)

pytest.importorskip("distributed")

pytestmark = pytest.mark.dask


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    procs = DaskProcesses(tmp_path_factory.mktemp("dask-workflows"))
    try:
        procs.start_scheduler()
        procs.start_worker("wf-w1")
        procs.wait_workers(["wf-w1"])
        yield procs
    finally:
        procs.close()


@pytest.fixture
def taskrun_config() -> dict:
    return {"executor": "dask"}


def ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


DIES_ONCE = """\
import os, pathlib, signal
p = pathlib.Path('dask-counter.txt')
n = int(p.read_text()) if p.exists() else 0
p.write_text(str(n + 1))
if n == 0:
    os.kill(os.getpid(), signal.SIGKILL)
from jupyter_taskrun import record
record('tries', n + 1)
"""


async def test_workflow_with_retry_on_dask(api, cluster, taskrun):
    await wait_connected(api, workers=1)
    code, data, _ = await api.call(
        "POST",
        "tasks/batch",
        {
            "tasks": [
                {"key": "a", "code": DIES_ONCE, "retries": 1},
                {
                    "key": "b",
                    "depends_on": ["a"],
                    "parameters": {"tries": {"$value": "a.tries"}},
                    "code": "print('b saw', tries)\ntries * 10",
                },
                {"key": "c", "depends_on": ["b"], "parameters": {"r": {"$result": "b"}}, "code": "print('c saw', r)"},
            ]
        },
    )
    assert code == 201, data
    a, b, c = data["tasks"]
    done_c = await api.wait(c["id"], 180)
    done_b = await api.get(b["id"])
    code, tries, _ = await api.call("GET", f"tasks/{a['id']}/attempts")
    first, second = tries["attempts"]
    assert first["status"] == "failed" and first["executor"] == "dask" and first["retried_as"] == second["id"]
    assert second["status"] == "completed" and second["worker"] == cluster.addresses["wf-w1"]
    assert done_b["status"] == "completed" and done_b["parameters"] == {"tries": 2}
    assert ts(done_b["started_at"]) >= ts(second["finished_at"])
    assert done_c["status"] == "completed" and done_c["parameters"] == {"r": 20}
    _, logs, _ = await api.call("GET", f"tasks/{c['id']}/logs")
    assert "c saw 20" in logs
