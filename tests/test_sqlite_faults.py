"""Store faults (issue 8): SQLite locked by another connection, and a disk that fills up.

A lock shorter than the busy timeout only delays a submission; a longer one is a ``503``
that changes nothing, and the running task's events are stored without a gap once it is
released; the server keeps answering meanwhile. With the database on a full tmpfs,
submissions are refused with ``503`` leaving no partial record, reads keep working, and
everything held back is written once space is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from .helpers import TICKER, assert_json_error, db_count, logs_of, task_count, wait_log


def hold_lock(db_path: str, seconds: float | None, mode: str = "IMMEDIATE"):
    """Another connection takes the write lock now; released after ``seconds`` (or by calling ``release``)."""
    locker = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    locker.execute(f"BEGIN {mode}")
    released = threading.Event()

    def release() -> None:
        if not released.is_set():
            locker.execute("COMMIT")
            locker.close()
            released.set()

    if seconds is not None:
        threading.Timer(seconds, release).start()
    released.release = release  # type: ignore[attr-defined]
    return released


async def test_sqlite_lock_shorter_than_busy_timeout_only_delays(api, db_path):
    await api.run(code="1")  # the store exists and is warm
    before = db_count(db_path)
    hold_lock(db_path, 1.5)
    t0 = time.monotonic()
    task = await api.submit(code="print('after the lock')")
    assert time.monotonic() - t0 >= 1.0
    assert (await api.wait(task["id"]))["status"] == "completed"
    assert db_count(db_path) == before + 1


async def test_sqlite_locked_longer_reports_503_changes_nothing_and_recovers(api, db_path):
    ticker = await api.submit(code=TICKER.format(n=120, dt=0.1))
    await wait_log(api, ticker["id"], "tick 5")
    before = db_count(db_path)
    lock = hold_lock(db_path, None, "EXCLUSIVE")
    try:
        code, data, _headers = await api.call("POST", "tasks", {"code": "print(1)"})
        assert_json_error(code, data, 503, "store-unavailable")
        code, data, _ = await api.call("POST", "tasks/batch", {"tasks": [{"code": "1"}, {"code": "2"}]})
        assert_json_error(code, data, 503, "store-unavailable")
        # reads keep working while the writer is locked out (WAL)
        code, data, _ = await api.call("GET", f"tasks/{ticker['id']}")
        assert code == 200
    finally:
        lock.release()
    assert db_count(db_path) == before, "a refused submission left a record"
    assert await task_count(api) == before
    # the running task's events, held back during the lock, are all stored without a gap
    done = await api.wait(ticker["id"])
    assert done["status"] == "completed"
    assert await logs_of(api, ticker["id"]) == "".join(f"tick {i}\n" for i in range(120))
    events = await api.events(ticker["id"])
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert (await api.run(code="print('ok')"))["status"] == "completed"


def probe_latencies(url: str, token: str, stop: threading.Event, out: list[float]) -> threading.Thread:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def run() -> None:
        while not stop.is_set():
            t0 = time.monotonic()
            with contextlib.suppress(Exception):
                opener.open(urllib.request.Request(url, headers={"Authorization": f"token {token}"}), timeout=30).read()
            out.append(time.monotonic() - t0)
            time.sleep(0.05)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


async def test_sqlite_lock_does_not_freeze_the_server(api, db_path, jp_serverapp):
    ticker = await api.submit(code=TICKER.format(n=100, dt=0.05))
    await wait_log(api, ticker["id"], "tick 2")
    stop, lat = threading.Event(), []
    # a core Jupyter endpoint that never touches the task store
    probe = probe_latencies(f"http://127.0.0.1:{api.port}{api.base_url}api/status", jp_serverapp.identity_provider.token, stop, lat)
    await asyncio.sleep(0.5)
    released = hold_lock(db_path, 6)
    await asyncio.to_thread(released.wait, 30)
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.to_thread(probe.join, 40)
    await api.wait(ticker["id"])
    assert max(lat) < 1.0, f"server unresponsive for {max(lat):.1f} s while the database was locked"


# ---------------------------------------------------------------------------
# disk write errors: the database on a tiny tmpfs that fills up / turns read-only
# ---------------------------------------------------------------------------


@pytest.fixture
def taskrun_config(request):
    # tests that need the database on the small filesystem ask for it by name
    if "small_fs" in request.fixturenames:
        mnt = request.getfixturevalue("small_fs")
        return {"db_path": str(mnt / "tasks.sqlite3")}
    return getattr(request, "param", {})


def fill(mnt: Path) -> Path:
    filler = mnt / "filler"
    with open(filler, "wb") as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 65536)
            f.flush()
    return filler


def orphans(db: str) -> int:
    con = sqlite3.connect(db, timeout=30)
    try:
        q = "SELECT COUNT(*) FROM {t} WHERE task_id NOT IN (SELECT id FROM tasks)"
        return sum(con.execute(q.format(t=t)).fetchone()[0] for t in ("events", "artifacts", "task_tags"))
    finally:
        con.close()


async def test_disk_full_reports_503_keeps_serving_no_partial_records(api, small_fs, taskrun):
    db = taskrun.db_path
    assert db.startswith(str(small_fs))
    assert (await api.run(code="print('before')"))["status"] == "completed"
    ticker = await api.submit(code=TICKER.format(n=60, dt=0.1))
    await wait_log(api, ticker["id"], "tick 3")
    filler = fill(small_fs)
    big = "#" + "x" * 200_000
    refused = None
    for _ in range(60):
        before = db_count(db)
        code, data, _ = await api.call("POST", "tasks/batch", {"tasks": [{"code": big, "tags": ["t"]} for _ in range(3)]})
        if code == 503:
            refused = data
            assert db_count(db) == before, "a refused batch left records"
            break
        assert code == 201, data
        assert db_count(db) == before + 3
    assert refused is not None, "the disk never filled up"
    assert_json_error(503, refused, 503, "store-unavailable")
    code, data, _ = await api.call("POST", "tasks", {"code": big})
    assert_json_error(code, data, 503, "store-unavailable")
    # still serving reads
    for path in ("status", f"tasks/{ticker['id']}", "tasks"):
        code, _, _ = await api.call("GET", path)
        assert code == 200, path
    assert orphans(db) == 0
    filler.unlink()
    # space is back: held-back events are written, nothing lost, new work accepted
    done = await api.wait(ticker["id"], 120)
    assert done["status"] == "completed"
    assert await logs_of(api, ticker["id"]) == "".join(f"tick {i}\n" for i in range(60))
    events = await api.events(ticker["id"])
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert (await api.run(code="print('after')"))["status"] == "completed"
    assert orphans(db) == 0
