"""Workflows with the rest of the server (issue 17), real server, kernels and SQLite: a schedule's
task template carrying retries, deletion of tasks in a workflow (``cleanup.py``, the one deletion
path, also deletes their workflow rows), batch ids, and what a cascading cancel would cancel."""

from __future__ import annotations

import sqlite3

from .helpers import TERMINAL, wait_for
from .test_chores_server import call, jp_server_config  # noqa: F401  (multi-user server: X-Test-User)
from .test_workflows import batch, finished, last_try, logs_of

FAILS_ONCE = """\
import pathlib
p = pathlib.Path('sched_counter.txt')
n = int(p.read_text()) if p.exists() else 0
p.write_text(str(n + 1))
print('scheduled try', n + 1)
if n < 1:
    raise RuntimeError('first scheduled try fails')
print('scheduled success')
"""


def rows(db_path: str, sql: str, *args: object) -> list[tuple]:
    db = sqlite3.connect(db_path, timeout=30)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


async def test_schedule_template_retries(api, jp_root_dir):
    (jp_root_dir / "sched").mkdir()
    template = {"name": "flaky-nightly", "code": FAILS_ONCE, "cwd": "sched", "retries": 1}
    code, schedule = await call(api, "POST", "schedules", "alice", {"task": template, "cron": "0 3 * * *", "timezone": "UTC"})
    assert code == 201, schedule
    code, first = await call(api, "POST", f"schedules/{schedule['id']}/run", "alice")
    assert code == 201, first
    assert first["schedule_id"] == schedule["id"] and first["retry"] == 0
    last = await last_try(api, first["id"])
    assert last["status"] == "completed" and last["retry"] == 1 and last["retry_of"] == first["id"]
    assert last["schedule_id"] == schedule["id"]  # the retry is still the schedule's run
    code, data = await call(api, "GET", f"tasks/{first['id']}/attempts", "alice")
    tries = data["attempts"]
    assert [t["status"] for t in tries] == ["failed", "completed"], tries
    assert "scheduled try 1" in await logs_of(api, tries[0]["id"]) and "scheduled success" in await logs_of(api, tries[1]["id"])
    assert (jp_root_dir / "sched" / "sched_counter.txt").read_text() == "2"
    # the schedule's history (its tasks, latest tries) shows the completed try only
    code, page = await call(api, "GET", "tasks", "alice", params={"schedule_id": schedule["id"]})
    assert code == 200 and [t["id"] for t in page["tasks"]] == [tries[1]["id"]], page


async def test_deleting_a_task_deletes_its_workflow_rows(api, db_path):
    code, data = await batch(
        api,
        "alice",
        [
            {"key": "x", "name": "X", "code": "from jupyter_taskrun import record\nrecord('v', 7)"},
            {"key": "a", "name": "A", "depends_on": ["x"], "parameters": {"v": {"$value": "x.v"}}, "code": "print('A got', v)"},
            {"key": "slow", "name": "slow", "code": "import time\ntime.sleep(6)"},
            {"key": "b", "name": "B", "depends_on": ["a", "slow"], "code": "print('never')"},
        ],
    )
    assert code == 201, data
    x, a, slow, b = data["tasks"]
    assert len({t["batch_id"] for t in data["tasks"]}) == 1 and x["batch_id"]
    done_a = await finished(api, a["id"])
    assert done_a["status"] == "completed" and done_a["parameters"] == {"v": 7}
    # A has rows of its own: its edge to X, its resolved parameters, its batch
    assert rows(db_path, "SELECT dep_id FROM task_deps WHERE task_id=?", a["id"]) == [(x["id"],)]
    assert len(rows(db_path, "SELECT * FROM task_retries WHERE task_id=?", a["id"])) == 1
    assert rows(db_path, "SELECT batch_id FROM task_batches WHERE task_id=?", a["id"]) == [(x["batch_id"],)]
    code, waiting = await call(api, "GET", f"tasks/{b['id']}", "alice")
    assert waiting["status"] == "waiting" and waiting["waiting_for"] == [slow["id"]], waiting

    code, _ = await call(api, "DELETE", f"tasks/{a['id']}", "alice")
    assert code == 204
    for table in ("task_deps", "task_retries", "task_batches"):
        assert rows(db_path, f"SELECT * FROM {table} WHERE task_id=?", a["id"]) == [], table
    # the edge *to* A stays until B is deleted in turn: B learns A is gone when it is next decided
    assert rows(db_path, "SELECT task_id FROM task_deps WHERE dep_id=?", a["id"]) == [(b["id"],)]
    done_b = await finished(api, b["id"])
    assert done_b["status"] == "cancelled" and done_b["error"]["reason"] == f"dependency {a['id']} was deleted", done_b
    assert (await finished(api, slow["id"]))["status"] == "completed"

    # a filtered batch deletion takes the same path
    code, cleared = await call(api, "DELETE", "tasks", "alice", params={"status": "cancelled,completed"})
    assert code == 200 and b["id"] in cleared["ids"], cleared
    for task in (x, slow, b):
        for table in ("task_deps", "task_retries", "task_batches"):
            assert rows(db_path, f"SELECT * FROM {table} WHERE task_id=?", task["id"]) == [], (table, task["name"])


async def test_batch_id_is_shared_and_kept_by_retries(api):
    code, alone = await call(api, "POST", "tasks", "alice", {"code": "1"})
    assert code == 201 and alone["batch_id"] is None
    code, data = await batch(
        api,
        "alice",
        [
            {"key": "f", "name": "flaky", "code": "raise RuntimeError('always')", "retries": 1},
            {"key": "g", "name": "after", "depends_on": ["f"], "on_dependency_failure": "run", "code": "print('g')"},
        ],
    )
    assert code == 201, data
    f, g = data["tasks"]
    assert f["batch_id"] and f["batch_id"] == g["batch_id"] and f["batch_id"] != alone["batch_id"]
    last = await last_try(api, f["id"])
    assert last["retry"] == 1 and last["status"] == "failed" and last["batch_id"] == f["batch_id"]
    assert (await finished(api, g["id"]))["status"] == "completed"
    code, page = await call(api, "GET", "tasks", "alice")
    listed = [t for t in page["tasks"] if t["batch_id"] == f["batch_id"]]
    assert sorted(t["id"] for t in listed) == sorted([last["id"], g["id"]])  # the latest try only
    # another batch of one entry is no group
    code, data = await batch(api, "alice", [{"code": "2"}])
    assert data["tasks"][0]["batch_id"] is None


async def test_dependencies_name_what_a_cascade_cancels(api):
    code, data = await batch(
        api,
        "alice",
        [
            {"key": "a", "name": "A", "code": "import time\ntime.sleep(60)"},
            {"key": "b", "name": "B", "depends_on": ["a"], "code": "print('b')"},
            {"key": "c", "name": "C", "depends_on": ["b"], "code": "print('c')"},
        ],
    )
    a, b, c = data["tasks"]
    code, graph = await call(api, "GET", f"tasks/{a['id']}/dependencies", "alice")
    assert code == 200 and sorted(graph["cascade"]) == sorted([b["id"], c["id"]]), graph
    code, graph = await call(api, "GET", f"tasks/{c['id']}/dependencies", "alice")
    assert graph["cascade"] == []
    # another user cannot see alice's task, nor its graph
    code, _ = await call(api, "GET", f"tasks/{a['id']}/dependencies", "bob")
    assert code == 404
    code, _ = await call(api, "POST", f"tasks/{a['id']}/cancel", "alice", params={"cascade": "1"})
    assert code in (200, 202)  # 202: A is running, its stop is under way
    ended = [await finished(api, t["id"]) for t in (a, b, c)]
    assert [t["status"] for t in ended] == ["cancelled"] * 3 and all(t["status"] in TERMINAL for t in ended)
    # each dependent names the cascade, none ends as the dependent of one cancelled just before
    assert [t["error"]["reason"] for t in ended[1:]] == [f"cancelled with its dependency {a['id']}"] * 2, ended
    code, graph = await call(api, "GET", f"tasks/{a['id']}/dependencies", "alice")
    assert graph["cascade"] == []

    async def none_active():
        code, page = await call(api, "GET", "tasks", "alice", params={"status": "waiting"})
        return not page["tasks"]

    await wait_for(none_active, 10, 0.1, "no waiting task")
