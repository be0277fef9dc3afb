"""Workflows (issue 17) on a real server with real kernels and SQLite: dependencies, values
passed downstream, refusals that store nothing, retries with back-off, cascading cancel."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from papermill.translators import PythonTranslator

from .helpers import TERMINAL, assert_json_error, db_count, wait_for
from .test_chores_server import call, jp_server_config  # noqa: F401  (multi-user server: X-Test-User)


def ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


async def batch(api, user: str, tasks: list[dict[str, Any]]) -> tuple[int, Any]:
    return await call(api, "POST", "tasks/batch", user, {"tasks": tasks})


async def finished(api, task_id: str, user: str = "alice") -> dict[str, Any]:
    code, task = await call(api, "GET", f"tasks/{task_id}", user, params={"wait": 50})
    assert code == 200 and task["status"] in TERMINAL, task
    return task


async def last_try(api, task_id: str, user: str = "alice") -> dict[str, Any]:
    """Wait for the task's chain of tries to end; the last try."""

    async def check():
        code, data = await call(api, "GET", f"tasks/{task_id}/attempts", user)
        assert code == 200, data
        last = data["attempts"][-1]
        return last if last["status"] in TERMINAL and last["retried_as"] is None else None

    return await wait_for(check, 120, 0.1, "the last try")


async def logs_of(api, task_id: str, user: str = "alice") -> str:
    code, text = await call(api, "GET", f"tasks/{task_id}/logs", user)
    assert code == 200, text
    return text


def injected_source(nb: dict[str, Any]) -> str:
    cells = [c for c in nb["cells"] if "injected-parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1
    source = cells[0]["source"]
    return "".join(source) if isinstance(source, list) else source


async def test_chain_runs_in_order_and_passes_values(api):
    code, data = await batch(
        api,
        "alice",
        [
            {"key": "a", "name": "A", "code": "import time\nfrom jupyter_taskrun import record\ntime.sleep(0.5)\nrecord('accuracy', 0.93)"},
            {
                "key": "b",
                "name": "B",
                "depends_on": ["a"],
                "parameters": {"acc": {"$value": "a.accuracy"}, "label": "x"},
                "code": "print('B got', acc)\n{'double': acc * 2, 'label': label}",
            },
            {
                "key": "c",
                "name": "C",
                "depends_on": ["b"],
                "parameters": {"res": {"$result": "b"}},
                "code": "print('C got', res['double'])",
            },
        ],
    )
    assert code == 201, data
    a, b, c = data["tasks"]
    assert a["status"] == "queued" and b["status"] == "waiting" and c["status"] == "waiting"
    assert b["depends_on"] == [a["id"]] and b["waiting_for"] == [a["id"]] and c["waiting_for"] == [b["id"]]
    assert b["parameter_refs"] == {"acc": {"$value": f"{a['id']}.accuracy"}}  # keys become ids
    done_c = await finished(api, c["id"])
    done_a, done_b = await finished(api, a["id"]), await finished(api, b["id"])
    assert [t["status"] for t in (done_a, done_b, done_c)] == ["completed"] * 3
    assert ts(done_b["started_at"]) >= ts(done_a["finished_at"]) and ts(done_c["started_at"]) >= ts(done_b["finished_at"])
    assert done_b["parameters"] == {"acc": 0.93, "label": "x"} and done_b["parameter_refs"]["acc"]["$value"].endswith(".accuracy")
    assert "B got 0.93" in await logs_of(api, b["id"]) and "C got 1.86" in await logs_of(api, c["id"])
    assert done_c["parameters"] == {"res": {"double": 1.86, "label": "x"}}
    # the executed notebook carries the value as papermill would have injected it
    code, nb = await call(api, "GET", f"tasks/{b['id']}/notebook", "alice")
    nb = json.loads(nb) if isinstance(nb, str) else nb
    assert injected_source(nb).strip().endswith(PythonTranslator.codify({"acc": 0.93, "label": "x"}).strip())
    code, graph = await call(api, "GET", f"tasks/{b['id']}/dependencies", "alice")
    assert [t["id"] for t in graph["depends_on"]] == [a["id"]] and [t["id"] for t in graph["dependents"]] == [c["id"]]


async def test_failed_dependency_cancels_or_runs_dependents(api):
    code, data = await batch(
        api,
        "alice",
        [
            {"key": "bad", "name": "bad", "code": "raise ValueError('nope')"},
            {"key": "d1", "depends_on": ["bad"], "code": "print('never')"},
            {"key": "d2", "depends_on": ["d1"], "code": "print('never either')"},
            {"key": "r", "depends_on": ["bad"], "on_dependency_failure": "run", "code": "print('ran anyway')"},
            {
                "key": "m",
                "depends_on": ["bad"],
                "on_dependency_failure": "run",
                "retries": 2,
                "parameters": {"v": {"$value": "bad.score"}},
                "code": "v",
            },
        ],
    )
    assert code == 201, data
    bad, d1, d2, r, m = data["tasks"]
    d1, d2, r, m = [await finished(api, t["id"]) for t in (d1, d2, r, m)]
    assert d1["status"] == "cancelled" and bad["id"] in d1["error"]["reason"] and "'bad'" in d1["error"]["reason"]
    assert "failed" in d1["error"]["reason"]
    assert d2["status"] == "cancelled" and d1["id"] in d2["error"]["reason"]  # cancelled in turn, naming d1
    assert r["status"] == "completed" and "ran anyway" in await logs_of(api, r["id"])
    # a missing value fails the dependent before it starts, naming the parameter and the value
    assert m["status"] == "failed" and "'v'" in m["error"]["reason"] and "'score'" in m["error"]["reason"]
    assert m["started_at"] is None and m["retried_as"] is None  # refused input: never retried
    # a new task depending on an already failed task is cancelled at once
    code, late = await call(api, "POST", "tasks", "alice", {"code": "1", "depends_on": [bad["id"]]})
    assert code == 201 and (await finished(api, late["id"]))["status"] == "cancelled"


async def test_bad_graphs_are_refused_with_nothing_stored(api, db_path, taskrun):
    code, mine = await call(api, "POST", "tasks", "alice", {"code": "1"})
    code, theirs = await call(api, "POST", "tasks", "bob", {"code": "2"})
    await finished(api, theirs["id"], "bob")
    before = db_count(db_path)
    edges = db_count(db_path, "task_deps")
    cases = [
        ([{"key": "a", "code": "1", "depends_on": ["b"]}, {"key": "b", "code": "1", "depends_on": ["a"]}], "cycle"),
        ([{"key": "a", "code": "1", "depends_on": ["a"]}], "itself"),
        ([{"key": "a", "code": "1"}, {"code": "1", "depends_on": ["0" * 32]}], "no task of yours"),
        ([{"key": "a", "code": "1"}, {"code": "1", "depends_on": [theirs["id"]]}], "no task of yours"),
        ([{"key": "a", "code": "1"}, {"code": "1", "depends_on": ["zz"]}], "no entry of this batch"),
        ([{"key": "a", "code": "1"}, {"key": "a", "code": "1"}], "already used"),
        ([{"key": "a", "code": "1"}, {"code": "1", "parameters": {"x": {"$value": "a.acc"}}}], "not in this task's depends_on"),
        ([{"key": "a", "code": "1"}, {"code": "1", "depends_on": ["a"], "on_dependency_failure": "maybe"}], "'cancel' or 'run'"),
    ]
    for tasks, words in cases:
        code, err = await batch(api, "alice", tasks)
        assert_json_error(code, err, 400, "invalid")
        assert words in err["message"], (words, err)
    assert "tasks[1].depends_on" in (await batch(api, "alice", cases[3][0]))[1]["message"]
    taskrun.max_workflow_tasks = 3
    code, err = await batch(api, "alice", [{"key": f"k{i}", "code": "1", "depends_on": [mine["id"]]} for i in range(3)])
    assert_json_error(code, err, 400, "invalid")
    assert "max_workflow_tasks" in err["message"]
    assert db_count(db_path) == before and db_count(db_path, "task_deps") == edges


COUNTER = """\
import pathlib
p = pathlib.Path('counter.txt')
n = int(p.read_text()) if p.exists() else 0
p.write_text(str(n + 1))
print('try', n + 1)
if n < 2:
    raise RuntimeError(f'failing try {n + 1}')
print('success')
"""


async def test_retries_with_delay_and_backoff_keep_each_try(api, tmp_path, jp_root_dir):
    work = jp_root_dir / "retry"
    work.mkdir()
    code, first = await call(
        api, "POST", "tasks", "alice", {"code": COUNTER, "cwd": "retry", "retries": 2, "retry_delay": 0.5, "retry_backoff": 3}
    )
    assert code == 201, first
    code, dependent = await call(api, "POST", "tasks", "alice", {"code": "print('after')", "depends_on": [first["id"]]})
    last = await last_try(api, first["id"])
    assert last["status"] == "completed" and last["retry"] == 2 and last["retry_of"] == first["id"]
    code, data = await call(api, "GET", f"tasks/{first['id']}/attempts", "alice")
    tries = data["attempts"]
    assert [t["status"] for t in tries] == ["failed", "failed", "completed"] and [t["retry"] for t in tries] == [0, 1, 2]
    assert tries[0]["retried_as"] == tries[1]["id"] and tries[1]["retried_as"] == tries[2]["id"]
    for i, t in enumerate(tries):
        assert f"try {i + 1}" in await logs_of(api, t["id"])  # each try has its own logs
        assert (await call(api, "GET", f"tasks/{t['id']}/notebook", "alice"))[0] == 200
    assert (work / "counter.txt").read_text() == "3"
    # the delays: 0.5 s, then 0.5 × 3 (lower bounds only)
    assert ts(tries[1]["started_at"]) - ts(tries[0]["finished_at"]) >= 0.5
    assert ts(tries[2]["started_at"]) - ts(tries[1]["finished_at"]) >= 1.5
    # the dependent waited for the last try
    after = await finished(api, dependent["id"])
    assert after["status"] == "completed" and ts(after["started_at"]) >= ts(tries[2]["finished_at"])
    # the list shows the last try only; ?attempts=all shows them all
    code, page = await call(api, "GET", "tasks", "alice")
    ids = {t["id"] for t in page["tasks"]}
    assert tries[2]["id"] in ids and tries[0]["id"] not in ids and tries[1]["id"] not in ids
    code, page = await call(api, "GET", "tasks", "alice", params={"attempts": "all"})
    assert {t["id"] for t in tries} <= {t["id"] for t in page["tasks"]}


async def test_no_retry_after_cancel_or_refused_input(api):
    code, slow = await call(api, "POST", "tasks", "alice", {"code": "import time; time.sleep(60)", "retries": 3})

    async def running():
        return (await call(api, "GET", f"tasks/{slow['id']}", "alice"))[1]["status"] == "running"

    await wait_for(running, 60, 0.05, "running")
    code, _ = await call(api, "POST", f"tasks/{slow['id']}/cancel", "alice")
    assert (await finished(api, slow["id"]))["status"] == "cancelled"
    code, data = await call(api, "GET", f"tasks/{slow['id']}/attempts", "alice")
    assert len(data["attempts"]) == 1 and data["attempts"][0]["retried_as"] is None
    # timed out: retried
    code, timed = await call(api, "POST", "tasks", "alice", {"code": "import time; time.sleep(30)", "timeout": 1, "retries": 1})
    last = await last_try(api, timed["id"])
    assert last["status"] == "timed_out" and last["retry"] == 1


async def test_cascade_cancel(api):
    code, data = await batch(
        api,
        "alice",
        [
            {"key": "a", "code": "import time; time.sleep(60)"},
            {"key": "b", "depends_on": ["a"], "on_dependency_failure": "run", "code": "print('b')"},
            {"key": "c", "depends_on": ["b"], "on_dependency_failure": "run", "code": "print('c')"},
            {"key": "other", "code": "print('other')"},
        ],
    )
    a, b, c, other = data["tasks"]
    code, bad = await call(api, "POST", f"tasks/{a['id']}/cancel", "alice", params={"cascade": "maybe"})
    assert code == 400
    code, _ = await call(api, "POST", f"tasks/{a['id']}/cancel", "alice", params={"cascade": "1"})
    assert code == 202
    for t in (a, b, c):
        assert (await finished(api, t["id"]))["status"] == "cancelled"
    assert a["id"] in (await finished(api, b["id"]))["error"]["reason"]
    assert (await finished(api, other["id"]))["status"] == "completed"
