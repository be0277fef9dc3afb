"""JupyterHub awareness (``server/activity.py``): work in flight moves the server's last activity.

A real ``jupyter server`` subprocess runs a real task kernel; the test then reads only
``/api/status`` (what JupyterHub's culler gets, via the single-user server), which itself counts
as no activity, and watches ``last_activity``: it moves while the task runs, stops once it
has ended, and never moves with ``c.TaskRun.report_activity = False``. The task says when it
starts and ends through files, so no task API call (which would count as activity) is needed.
The paused-queue rule is checked on the in-process server's real ``TaskRun``.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime
from pathlib import Path

import pytest

from jupyter_taskrun.server.activity import ACTIVITY_KEY

from .helpers import wait_for

INTERVAL = 0.3  # seconds between reports in these tests (c.TaskRun.activity_interval)
RUN_FOR = 4.0  # seconds the task sleeps between its two marker files


@pytest.fixture
def taskrun_config() -> dict[str, float]:
    # the in-process server's own reporting loop stays out of the way of the paused-queue test
    return {"activity_interval": 3600.0}


def last_activity(server) -> datetime:
    status, body = server.request("GET", "api/status")
    assert status == 200, body
    return datetime.fromisoformat(json.loads(body)["last_activity"].replace("Z", "+00:00"))


def wait_file(path: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.05)


def submit_marked_task(server) -> tuple[Path, Path]:
    """A task that writes ``started``, sleeps ``RUN_FOR`` s, writes ``ending`` and ends."""
    started, ending = server.root / "started", server.root / "ending"
    code = (
        f"import pathlib, time\npathlib.Path({str(started)!r}).write_text('1')\n"
        f"time.sleep({RUN_FOR})\npathlib.Path({str(ending)!r}).write_text('1')\n"
    )
    status, body = server.request("POST", "taskrun/api/tasks", json.dumps({"code": code, "name": "long"}).encode())
    assert status == 201, body
    return started, ending


def samples_until(server, path: Path, timeout: float = 60) -> list[datetime]:
    """``last_activity`` every ``INTERVAL / 2`` s until ``path`` exists."""
    seen = [last_activity(server)]
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(INTERVAL / 2)
        seen.append(last_activity(server))
    return seen


def test_last_activity_moves_while_a_task_runs_and_stops_after(server_factory):
    server = server_factory(taskrun={"activity_interval": INTERVAL, "kernel_pool_size": 0})
    # the premise: reading /api/status is no activity, and an idle server reports none
    first = last_activity(server)
    time.sleep(INTERVAL * 5)
    assert [last_activity(server) for _ in range(5)] == [first] * 5

    started, ending = submit_marked_task(server)
    wait_file(started)
    during = samples_until(server, ending)
    # reported every INTERVAL while the task sleeps RUN_FOR s (generous: a loaded machine lags)
    assert (during[-1] - during[0]).total_seconds() >= RUN_FOR / 2, during
    assert len(set(during)) >= 3, during  # it moved step by step, not once

    # the task ends: after one last report the time stops moving
    deadline = time.monotonic() + 60
    stable_since, value = time.monotonic(), last_activity(server)
    while time.monotonic() - stable_since < INTERVAL * 8:
        assert time.monotonic() < deadline, "last_activity kept moving after the task ended"
        time.sleep(INTERVAL / 2)
        now = last_activity(server)
        if now != value:
            stable_since, value = time.monotonic(), now
    assert value >= during[-1]
    status, body = server.request("GET", "taskrun/api/tasks?name=long")
    assert status == 200 and json.loads(body)["tasks"][0]["status"] == "completed", body


def test_no_activity_is_reported_when_report_activity_is_off(server_factory):
    server = server_factory(taskrun={"report_activity": False, "activity_interval": INTERVAL, "kernel_pool_size": 0})
    started, ending = submit_marked_task(server)  # the POST itself is activity (jupyter_server's own)
    wait_file(started)
    during = samples_until(server, ending)
    time.sleep(INTERVAL * 3)
    during.append(last_activity(server))
    assert set(during) == {during[0]}, during


async def test_a_paused_queue_is_no_activity_until_it_runs(jp_serverapp, taskrun, api):
    """Queued behind a paused dispatcher: waiting for a person, not work in flight."""
    reporter = jp_serverapp.extension_manager.extension_points["jupyter_taskrun"].app.activity
    times = jp_serverapp.web_app.settings["last_activity_times"]
    times.pop(ACTIVITY_KEY, None)
    taskrun.pause()
    task = await api.submit(code="import time; time.sleep(1.5)")
    assert task["status"] == "queued" and not reporter.busy()
    assert not reporter.report() and ACTIVITY_KEY not in times
    taskrun.resume()
    await wait_for(reporter.busy, timeout=60, what="the task to start")
    assert reporter.report()
    reported = times[ACTIVITY_KEY]
    assert jp_serverapp.web_app.last_activity() >= reported
    done = await api.wait(task["id"])
    assert done["status"] == "completed"
    assert reporter.report()  # the end is marked once...
    assert times[ACTIVITY_KEY] >= reported
    await asyncio.sleep(0)
    assert not reporter.report()  # ...then nothing more
