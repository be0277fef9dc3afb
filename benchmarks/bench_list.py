"""5. List endpoint latency with 100,000 tasks in the store.

The SQLite file is filled directly with ``jupyter_taskrun.server.store.TaskStore.insert_tasks`` (in
batches, one transaction each) before the server starts: finished tasks only (a queued task
would be re-queued and run at start), statuses 85% completed / 10% failed / 3% cancelled /
2% timed_out, tags ``bench`` (all) and ``t0``..``t99`` (1% each). Then ``GET
/taskrun/api/tasks`` is timed on a keep-alive connection: default, ``?status=``, ``?tag=``,
and pages reached by following ``next_cursor``.

Baseline, same run and connection: ``GET /taskrun/api/status`` (a request that does no work).

The filled file is cached (``~/.cache/jupyter_taskrun-bench``, keyed on the source of
``store.py`` and ``models.py``) because filling takes 20-80 s; ``--no-cache`` refills.
"""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path

from _common import (
    BenchServer,
    Context,
    Row,
    emit_table,
    fmt_ms,
    fmt_ratio,
    log,
    ratio,
    standalone,
    stats,
    taskrun_args,
)

N_TASKS = 100_000
BATCH = 5_000
FILL_VERSION = 1  # bump when fill() changes
STATUSES = ["completed"] * 85 + ["failed"] * 10 + ["cancelled"] * 3 + ["timed_out"] * 2


def fill(path: str, n: int) -> float:
    from jupyter_taskrun.models import Task, TaskStatus
    from jupyter_taskrun.server.store import TaskStore

    t0 = time.monotonic()
    store = TaskStore(path)
    now = time.time()
    try:
        for start in range(0, n, BATCH):
            batch = []
            for i in range(start, min(n, start + BATCH)):
                status = TaskStatus(STATUSES[i % 100])
                created = now - (n - i) * 0.5
                code = f"print({i})"
                batch.append(
                    Task(
                        id=uuid.uuid4().hex,
                        status=status,
                        submission={"code": code, "tags": ["bench", f"t{i % 100}"]},
                        source_kind="code",
                        name=code,
                        owner="bench",
                        kernel_name="python3",
                        tags=["bench", f"t{i % 100}"],
                        created_at=created,
                        started_at=created + 0.01,
                        finished_at=created + 0.02,
                        metrics={"queue_wait": 0.01, "wall": 0.01, "cpu_user": 0.0, "peak_rss": 50_000_000},
                        error=None if status == TaskStatus.COMPLETED else {"ename": status.value, "evalue": "x", "reason": "x"},
                        last_seq=6,
                    )
                )
            store.insert_tasks(batch)
    finally:
        store.close()
    return time.monotonic() - t0


def cache_key() -> str:
    """The filled file depends on the store's schema and the models: key the cache on their source."""
    import hashlib

    import jupyter_taskrun.models
    import jupyter_taskrun.server.store

    h = hashlib.sha1(f"{FILL_VERSION}:{N_TASKS}".encode())
    for mod in (jupyter_taskrun.server.store, jupyter_taskrun.models):
        h.update(Path(mod.__file__).read_bytes())
    return h.hexdigest()[:16]


def run(ctx: Context) -> list[Row]:
    fill_note = ""

    def prepare(srv: BenchServer) -> None:
        nonlocal fill_note
        cached = ctx.cache_dir / f"list-{cache_key()}.sqlite3" if ctx.cache else None
        if cached is not None and cached.exists():
            shutil.copyfile(cached, srv.db_path)
            fill_note = "store from cache"
            log(f"list: store with {N_TASKS:,} tasks copied from {cached}")
            return
        log(f"list: filling the store with {N_TASKS:,} tasks (TaskStore.insert_tasks, batches of {BATCH:,})")
        tmp = srv.base / "fill.sqlite3"
        fill_s = fill(str(tmp), N_TASKS)
        fill_note = f"filled in {fill_s:.0f}s"
        log(f"list: {fill_note}")
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(tmp, cached)
        tmp.replace(srv.db_path)

    # retain_days=0: a cached store's tasks may be older than the default 30-day retention
    srv = ctx.server(*taskrun_args(pool=0), "--TaskRun.retain_days=0", prepare=prepare)
    http = srv.http
    reps = ctx.n(20, 100)

    def timed(path: str) -> tuple[list[float], dict]:
        times = []
        body: dict = {}
        for _ in range(reps + 2):
            status, body, dt = http.request("GET", path)
            if status != 200:
                raise RuntimeError(f"GET {path} -> {status}: {body!r:.200}")
            times.append(dt)
        return times[2:], body  # the first two warm caches

    try:
        first = http.json("GET", "taskrun/api/tasks")
        assert len(first["tasks"]) == 50 and first["next_cursor"], "the store fill did not take"
        # follow the cursor for a few pages, then a deep page
        cursor = first["next_cursor"]
        for _ in range(3):
            cursor = http.json("GET", f"taskrun/api/tasks?cursor={cursor}")["next_cursor"]
        tag_page = http.json("GET", "taskrun/api/tasks?tag=t7")
        queries = {
            "default (newest 50)": "taskrun/api/tasks",
            "?status=failed": "taskrun/api/tasks?status=failed",
            "?status=completed,failed": "taskrun/api/tasks?status=completed,failed",
            "?tag=t7 (1% of tasks)": "taskrun/api/tasks?tag=t7",
            "?tag=bench (all tasks)": "taskrun/api/tasks?tag=bench",
            "?cursor= (page 5)": f"taskrun/api/tasks?cursor={cursor}",
            "?tag=t7&cursor= (page 2)": f"taskrun/api/tasks?tag=t7&cursor={tag_page['next_cursor']}",
            "?limit=500": "taskrun/api/tasks?limit=500",
        }
        res = {}
        for name, path in queries.items():
            times, body = timed(path)
            res[name] = (stats(times), len(body["tasks"]))
        base_times, _ = timed("taskrun/api/status")
        b = stats(base_times)
    finally:
        ctx.stop_server(srv)  # 100k tasks: nobody else wants this one
    rows = [[name, n, fmt_ms(s["p50"]), fmt_ms(s["p95"]), fmt_ratio(ratio(s["p50"], b["p50"]))] for name, (s, n) in res.items()]
    rows.append(["baseline: GET /taskrun/api/status", "-", fmt_ms(b["p50"]), fmt_ms(b["p95"]), "1.00x"])
    emit_table(
        [f"GET /taskrun/api/tasks, {N_TASKS:,} tasks stored ({fill_note})", "tasks", "p50", "p95", "p50 / baseline"],
        rows,
        "5. LIST",
    )
    out = []
    for name, (s, _) in res.items():
        if name == "?limit=500":
            out.append(Row("list", f"100k: {name} p50 (info)", fmt_ms(s["p50"]), "", None, f"p95 {fmt_ms(s['p95'])}"))
            continue
        out.append(Row("list", f"100k: {name} p50", fmt_ms(s["p50"]), "<= 20 ms", s["p50"] <= 0.020,
                       f"p95 {fmt_ms(s['p95'])}; {fmt_ratio(ratio(s['p50'], b['p50']))} of /status"))  # fmt: skip
    return out


if __name__ == "__main__":
    standalone(run, __doc__.splitlines()[0])
