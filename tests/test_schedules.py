"""Schedules through a real server: the routes, bad input, ownership, firing on the minute with
each overlap policy and pause, catch-up after a real second server start on the same database,
and no double firing across restarts. Real kernels, real SQLite."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import urllib.request
from datetime import datetime
from typing import Any

import pytest
from traitlets.config import Config

from ._server import JupyterServer
from .helpers import assert_json_error, db_count, wait_for
from .test_webhooks import receiver  # noqa: F401  (the local webhook receiver fixture)

TICK = {"code": "print('tick')"}


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


async def until_next_minute(margin: float) -> float:
    """Wait, if needed, so at least ``margin`` s remain before the next minute; return that minute."""
    left = 60 - time.time() % 60
    if left < margin:
        await asyncio.sleep(left + 0.5)
    return (time.time() // 60 + 1) * 60


# ---------------------------------------------------------------------------- the routes


async def test_create_read_pause_resume_delete(api, db_path):
    code, s, headers = await api.call(
        "POST", "schedules", {"name": "nightly", "task": TICK, "cron": "0 3 * * *", "timezone": "Europe/Berlin"}
    )
    assert code == 201, s
    assert headers["Location"].endswith(f"/taskrun/api/schedules/{s['id']}")
    assert s["description"] == "every day at 03:00 (Europe/Berlin)"
    assert len(s["next_runs"]) == 5 and all(t.endswith(("T03:00:00+01:00", "T03:00:00+02:00")) for t in s["next_runs"])
    assert s["enabled"] is True and s["overlap"] == "skip" and s["catch_up"] == "skip"
    assert s["last_run"] is None and s["run_count"] == 0

    code, listed, _ = await api.call("GET", "schedules")
    assert code == 200 and [x["id"] for x in listed["schedules"]] == [s["id"]]

    code, paused, _ = await api.call("PATCH", f"schedules/{s['id']}", {"enabled": False})
    assert code == 200 and paused["enabled"] is False and paused["next_runs"] == []
    code, resumed, _ = await api.call("PATCH", f"schedules/{s['id']}", {"enabled": True, "cron": "@hourly"})
    assert code == 200 and resumed["enabled"] and resumed["description"] == "every hour (Europe/Berlin)"
    assert epoch(resumed["next_runs"][1]) - epoch(resumed["next_runs"][0]) == 3600

    code, _, _ = await api.call("DELETE", f"schedules/{s['id']}")
    assert code == 204
    code, data, _ = await api.call("GET", f"schedules/{s['id']}")
    assert_json_error(code, data, 404, "not-found")
    assert db_count(db_path, "schedules") == 0


async def test_preview_as_you_type(api):
    code, p, _ = await api.call("GET", "schedules/preview", params={"cron": "*/15 * * * *", "timezone": "Asia/Tokyo"})
    assert code == 200 and p["description"] == "every 15 minutes (Asia/Tokyo)"
    assert [epoch(b) - epoch(a) for a, b in zip(p["next_runs"], p["next_runs"][1:])] == [900.0] * 4
    assert all(t.endswith("+09:00") for t in p["next_runs"])
    code, err, _ = await api.call("GET", "schedules/preview", params={"cron": "* * *"})
    assert_json_error(code, err, 400, "invalid")
    assert "'cron'" in err["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"task": TICK, "cron": "61 * * * *"}, "cron"),
        ({"task": TICK, "cron": "* * * * *", "timezone": "Moon/Tranquility"}, "timezone"),
        ({"task": {"code": "1", "kernel_name": "no-such-kernel"}, "cron": "* * * * *"}, "task"),
        ({"task": {"path": "missing.ipynb"}, "cron": "* * * * *"}, "task"),
        ({"task": {"code": "1", "priority": "high"}, "cron": "* * * * *"}, "task"),
        ({"task": TICK, "cron": "* * * * *", "overlap": "maybe"}, "overlap"),
        ({"task": TICK, "cron": "* * * * *", "repeat": True}, "repeat"),
        ({"cron": "* * * * *"}, "task"),
    ],
)
async def test_bad_input_is_400_naming_the_field_and_stores_nothing(api, db_path, body, field):
    code, err, _ = await api.call("POST", "schedules", body)
    assert_json_error(code, err, 400)
    assert field in err["message"], err
    code, listed, _ = await api.call("GET", "schedules")
    assert listed["schedules"] == []
    assert db_count(db_path, "schedules") == 0


async def test_bad_patch_changes_nothing(api):
    _, s, _ = await api.call("POST", "schedules", {"task": TICK, "cron": "0 3 * * *", "timezone": "UTC"})
    for body in ({"cron": "nope"}, {"task": {"path": "../outside.py"}}, {"enabled": 1}, {"timezone": "X/Y"}):
        code, err, _ = await api.call("PATCH", f"schedules/{s['id']}", body)
        assert_json_error(code, err, 400)
    _, after, _ = await api.call("GET", f"schedules/{s['id']}")
    assert {k: after[k] for k in ("cron", "task", "enabled", "timezone")} == {
        "cron": "0 3 * * *",
        "task": TICK,
        "enabled": True,
        "timezone": "UTC",
    }


async def test_run_now_and_history(api):
    _, s, _ = await api.call("POST", "schedules", {"name": "report", "task": {"code": "x = 6 * 7\nx"}, "cron": "0 3 * * *"})
    code, task, headers = await api.call("POST", f"schedules/{s['id']}/run")
    assert code == 201 and task["schedule_id"] == s["id"] and task["scheduled_for"] is None
    assert headers["Location"].endswith(f"/taskrun/api/tasks/{task['id']}")
    done = await api.wait(task["id"])
    assert done["status"] == "completed" and done["name"] == "report"
    _, history, _ = await api.call("GET", "tasks", params={"schedule": s["id"]})
    assert [t["id"] for t in history["tasks"]] == [task["id"]]
    await api.submit(code="1")  # an unscheduled task is not in the history
    _, history, _ = await api.call("GET", "tasks", params={"schedule": s["id"]})
    assert len(history["tasks"]) == 1
    _, s, _ = await api.call("GET", f"schedules/{s['id']}")
    assert s["last_run"]["task_id"] == task["id"] and s["last_run"]["status"] == "completed"
    assert s["run_count"] == 1 and s["counts"] == {"completed": 1}
    # deleting the schedule keeps its tasks
    await api.call("DELETE", f"schedules/{s['id']}")
    assert (await api.get(task["id"]))["schedule_id"] == s["id"]


async def test_a_schedules_callback_url_reaches_each_run(api, receiver):  # noqa: F811
    url = receiver.url("/ok/schedule")
    code, s, _ = await api.call("POST", "schedules", {"name": "hooked", "task": TICK, "cron": "0 3 * * *", "callback_url": url})
    assert code == 201 and s["callback_url"] == url
    _, task, _ = await api.call("POST", f"schedules/{s['id']}/run")
    (hit,) = await receiver.wait("/ok/schedule", 1)
    payload = json.loads(hit["body"])
    assert payload["task"]["id"] == task["id"] and payload["task"]["schedule_id"] == s["id"]
    assert payload["task"]["status"] == "completed"
    # a host the server does not allow is refused for a schedule as for a task
    code, err, _ = await api.call("PATCH", f"schedules/{s['id']}", {"callback_url": "http://user:pw@example.org/x"})
    assert_json_error(code, err, 400)
    assert "callback_url" in err["message"]


async def test_changes_go_on_the_global_feed(api):
    async def create_then_pause():
        await asyncio.sleep(0.3)
        _, s, _ = await api.call("POST", "schedules", {"task": TICK, "cron": "0 3 * * *"})
        await api.call("PATCH", f"schedules/{s['id']}", {"enabled": False})
        await api.call("DELETE", f"schedules/{s['id']}")

    writer = asyncio.ensure_future(create_then_pause())
    frames = await api.sse("events", stop=lambda fs: sum(f["event"] == "schedule" for f in fs) >= 3, timeout=30)
    await writer
    entries = [f["data"] for f in frames if f["event"] == "schedule"]
    assert [e["data"]["action"] for e in entries] == ["created", "updated", "deleted"]
    assert entries[1]["data"]["schedule"]["enabled"] is False


@pytest.fixture
def jp_server_config(taskrun_config, db_path):
    # room for the minute test's five runs at once
    settings = {"db_path": db_path, "kernel_pool_size": 0, "max_concurrent_tasks": 5, **taskrun_config}
    return Config({"ServerApp": {"jpserver_extensions": {"jupyter_taskrun": True}}, "TaskRun": settings})


# -------------------------------------------------------------------- on the minute


def release(root: Any, name: str) -> str:
    """Task code that blocks until the test creates ``name`` in the server root (the tasks' cwd)."""
    return f"import os, time\nwhile not os.path.exists({str(root / name)!r}):\n    time.sleep(0.05)\nprint('released')"


async def test_firing_on_the_minute_with_overlap_policies_and_pause(api, jp_root_dir):
    minute = await until_next_minute(margin=25)
    make = {}
    for key, body in {
        "plain": {"task": TICK, "cron": "* * * * *"},
        "paused": {"task": TICK, "cron": "* * * * *", "enabled": False},
        "skip": {"task": {"code": release(jp_root_dir, "go-skip")}, "cron": "* * * * *", "overlap": "skip"},
        "queue": {"task": {"code": release(jp_root_dir, "go-queue")}, "cron": "* * * * *", "overlap": "queue"},
        "cancel": {"task": {"code": release(jp_root_dir, "go-cancel")}, "cron": "* * * * *", "overlap": "cancel_previous"},
    }.items():
        code, make[key], _ = await api.call("POST", "schedules", {"name": key, **body})
        assert code == 201, make[key]
    # a previous run still going, for each overlap policy
    previous = {}
    for key in ("skip", "queue", "cancel"):
        _, previous[key], _ = await api.call("POST", f"schedules/{make[key]['id']}/run")
        await api.wait_status(previous[key]["id"], "running", timeout=40)
    assert time.time() < minute, "the set-up took too long for this minute"

    async def history(key: str) -> list[dict[str, Any]]:
        _, data, _ = await api.call("GET", "tasks", params={"schedule": make[key]["id"]})
        return data["tasks"]

    await wait_for(lambda: time.time() > minute + 3, timeout=90, what="the minute")
    plain = await history("plain")
    assert len(plain) == 1 and epoch(plain[0]["scheduled_for"]) == minute
    assert epoch(plain[0]["created_at"]) - minute < 1.0, "fired more than 1 s late"
    assert (await api.wait(plain[0]["id"]))["status"] == "completed"
    assert await history("paused") == []
    # skip: no new task while the previous one runs
    assert [t["id"] for t in await history("skip")] == [previous["skip"]["id"]]
    _, s, _ = await api.call("GET", f"schedules/{make['skip']['id']}")
    assert s["skipped"] == 1
    # cancel_previous: the previous run cancelled, the new one fired for the minute
    cancel = await history("cancel")
    assert len(cancel) == 2 and epoch(cancel[0]["scheduled_for"]) == minute
    assert (await api.wait(previous["cancel"]["id"]))["status"] == "cancelled"
    # queue: held until the previous run ends, then fired for the minute
    assert len(await history("queue")) == 1
    _, q, _ = await api.call("GET", f"schedules/{make['queue']['id']}")
    assert q["pending_for"] is not None and epoch(q["pending_for"]) == minute
    (jp_root_dir / "go-queue").write_text("")
    assert (await api.wait(previous["queue"]["id"]))["status"] == "completed"

    async def queued_fired():
        return len(await history("queue")) == 2

    await wait_for(queued_fired, timeout=30, what="the held firing")
    held = (await history("queue"))[0]
    assert epoch(held["scheduled_for"]) == minute
    assert (await api.wait(held["id"]))["status"] == "completed"
    for name in ("go-skip", "go-cancel"):
        (jp_root_dir / name).write_text("")
    for t in [previous["skip"], cancel[0]]:
        assert (await api.wait(t["id"]))["status"] == "completed"
    # pause stops firings; resume restarts them from now
    _, paused, _ = await api.call("PATCH", f"schedules/{make['plain']['id']}", {"enabled": False})
    assert paused["next_runs"] == []
    _, resumed, _ = await api.call("PATCH", f"schedules/{make['plain']['id']}", {"enabled": True})
    assert epoch(resumed["next_runs"][0]) > time.time()


# ----------------------------------------------------------- restarts, one database


def rest(server: JupyterServer, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else (b"" if method in ("POST", "PATCH") else None)
    req = urllib.request.Request(
        server.url + "taskrun/api/" + path, data=data, method=method, headers={"Authorization": f"token {server.token}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def scheduled_tasks(db_path: Any) -> list[tuple[str, float | None, float]]:
    with sqlite3.connect(db_path) as db:
        return db.execute("SELECT schedule_id, scheduled_for, created_at FROM tasks WHERE schedule_id IS NOT NULL ORDER BY n").fetchall()


def test_missed_firings_follow_catch_up_and_nothing_fires_twice(tmp_path, server_factory):
    config = {"kernel_pool_size": 0, "schedule_misfire_grace": 1.0}
    first = server_factory(taskrun=config)
    left = 60 - time.time() % 60
    if left < 8:
        time.sleep(left + 0.5)
    minute = (time.time() // 60 + 1) * 60
    ids = {}
    for policy in ("run_once", "skip"):
        code, s = rest(first, "POST", "schedules", {"name": policy, "task": TICK, "cron": "* * * * *", "catch_up": policy})
        assert code == 201, s
        ids[policy] = s["id"]
    first.stop()  # down across the minute
    time.sleep(max(0.0, minute + 2.5 - time.time()))

    second = server_factory(taskrun=config)
    wait_for_sync(lambda: len(scheduled_tasks(first.db_path)) >= 1, timeout=20)
    time.sleep(1.5)  # nothing more comes for that minute
    fired = scheduled_tasks(first.db_path)
    assert [(sid, when) for sid, when, _ in fired] == [(ids["run_once"], minute)], fired
    code, skip = rest(second, "GET", f"schedules/{ids['skip']}")
    assert skip["skipped"] == 1 and skip["last_run"] is None
    assert epoch(skip["next_runs"][0]) > minute
    code, once = rest(second, "GET", f"schedules/{ids['run_once']}")
    assert once["last_run"]["status"] in ("queued", "running", "completed")

    # a restart right after a firing does not fire it again
    second.stop()
    third = server_factory(taskrun=config)
    time.sleep(2.0)
    assert [(sid, when) for sid, when, _ in scheduled_tasks(third.db_path) if when == minute] == [(ids["run_once"], minute)]
    assert db_count(str(third.db_path), "schedules") == 2
    third.stop()


def wait_for_sync(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.1)
