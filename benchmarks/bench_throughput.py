"""3. Fresh-kernel throughput (tasks/min) at concurrency 1/2/4, pool off and on.

For each configuration a server runs with ``max_concurrent_tasks=c`` (and
``kernel_pool_size`` 0 or 1); after one untimed warm-up task and a quiet machine, M
``print(1)`` tasks are submitted in one ``POST /taskrun/api/tasks/batch``. Throughput =
M / (last ``finished_at`` − submit time) × 60; every task gets its own fresh kernel.
Stock nbclient tasks that fail (e.g. a kernel that dies at start: concurrent starts in one
process can race for ports) count as not done and are reported.

Baseline, same run: stock nbclient in one process, ``NotebookClient(nb).async_execute()``
for M notebooks under an asyncio semaphore of 2 (plus 1 and 4 in the full run).
Forked kernels (``c.TaskRun.kernel_start = "fork"``) are measured at concurrency 2, pool off and on.
``--quick`` runs pool on at concurrency 2 only.
"""

from __future__ import annotations

import time
from datetime import datetime

from _common import (
    Context,
    Row,
    check_forked,
    emit_table,
    fmt_ratio,
    fork_server,
    log,
    ratio,
    run_worker,
    standalone,
    submit_wait,
    taskrun_args,
    wait_task,
)

SHARED = {(0, 2), (1, 2)}  # flavours other benchmarks use too: keep those servers


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def taskrun_rate(ctx: Context, pool: int, c: int, m: int, *, fork: bool = False) -> dict:
    srv = fork_server(ctx, pool, c) if fork else ctx.server(*taskrun_args(pool=pool, concurrency=c))
    try:
        srv.wait_quiet(kernels=pool, pool=pool)
        submit_wait(srv, {"code": "print(1)"})  # warm-up
        srv.wait_quiet(kernels=pool, pool=pool)
        t0 = time.time()
        tasks = srv.http.json("POST", "taskrun/api/tasks/batch", {"tasks": [{"code": "print(1)"} for _ in range(m)]})["tasks"]
        done = [wait_task(srv, t["id"]) for t in tasks]
        bad = [t["status"] for t in done if t["status"] != "completed"]
        if bad:
            raise RuntimeError(f"throughput tasks did not all complete: {bad}")
        total = max(epoch(t["finished_at"]) for t in done) - t0
        pooled = sum(1 for t in done if t["metrics"].get("pooled_kernel"))
        if fork:
            check_forked(srv)
        return {"per_min": m / total * 60, "total_s": total, "pooled": pooled}
    finally:
        if fork or (pool, c) not in SHARED:
            ctx.stop_server(srv)


def run(ctx: Context) -> list[Row]:
    m = ctx.n(6, 24)
    conc = (1, 2, 4)
    res: dict[tuple[str, int], dict] = {}
    for pool in (0, 1):
        for c in conc:
            if ctx.quick and pool and c != 2:
                continue  # quick: pool on only where its server is shared (saves two server starts)
            log(f"throughput: taskrun pool={pool} concurrency={c}, {m} tasks")
            res[(f"taskrun, pool {'on (size 1)' if pool else 'off'}", c)] = taskrun_rate(ctx, pool, c, m)
    for pool in (0, 1):  # forked kernels (c.TaskRun.kernel_start = "fork"), at concurrency 2
        log(f"throughput: taskrun forked kernels, pool={pool} concurrency=2, {m} tasks")
        res[(f"taskrun forked, pool {'on (size 1)' if pool else 'off'}", 2)] = taskrun_rate(ctx, pool, 2, m, fork=True)
    notes = []
    for c in (2,) if ctx.quick else conc:
        log(f"throughput: stock nbclient asyncio concurrency={c}, {m} tasks")
        r = run_worker(["nbclient-throughput", "--m", str(m), "--c", str(c)], timeout=120 + 30 * m)
        res[("stock nbclient (asyncio, in-process)", c)] = r
        if r["failed"]:
            notes.append(f"stock nbclient c={c}: {r['failed']}/{m} tasks failed, e.g. {r['errors'][0]}")
    base = res[("stock nbclient (asyncio, in-process)", 2)]["per_min"]
    names = list(dict.fromkeys(k[0] for k in res))
    rows = []
    for name in names:
        cells = [name]
        for c in conc:
            r = res.get((name, c))
            failed = f", {r['failed']} failed" if r and r.get("failed") else ""
            cells.append("-" if r is None else f"{r['per_min']:.0f}/min ({fmt_ratio(r['per_min'] / base)}{failed})")
        rows.append(cells)
    emit_table(
        [f"fresh-kernel print(1) tasks, M={m} (ratio vs stock nbclient at c=2)"] + [f"c={c}" for c in conc],
        rows,
        "3. THROUGHPUT" + "".join(f"\n   note: {n}" for n in notes),
    )
    off2 = res[("taskrun, pool off", 2)]["per_min"]
    on2 = res[("taskrun, pool on (size 1)", 2)]["per_min"]
    r_off, r_on = ratio(off2, base), ratio(on2, base)
    fork2 = res[("taskrun forked, pool off", 2)]["per_min"]
    fork_on2 = res[("taskrun forked, pool on (size 1)", 2)]["per_min"]
    r_fork, r_fork_on = ratio(fork2, base), ratio(fork_on2, base)
    return [
        Row("throughput", "c=2, pool off: tasks/min", f"{off2:.0f}/min", ">= 1.3x stock nbclient c=2",
            r_off is not None and r_off >= 1.3, f"{fmt_ratio(r_off)} of nbclient {base:.0f}/min"),
        Row("throughput", "c=2, pool on: tasks/min", f"{on2:.0f}/min", ">= 1.3x stock nbclient c=2",
            r_on is not None and r_on >= 1.3, f"{fmt_ratio(r_on)} of nbclient {base:.0f}/min"),
        Row("throughput", "c=2, forked, pool off: tasks/min", f"{fork2:.0f}/min", ">= 3x stock nbclient c=2",
            r_fork is not None and r_fork >= 3, f"{fmt_ratio(r_fork)} of nbclient {base:.0f}/min; "
            f"{fmt_ratio(ratio(fork2, off2))} of spawned"),
        Row("throughput", "c=2, forked, pool on: tasks/min", f"{fork_on2:.0f}/min", ">= 3x stock nbclient c=2",
            r_fork_on is not None and r_fork_on >= 3, f"{fmt_ratio(r_fork_on)} of nbclient {base:.0f}/min"),
        Row("throughput", "c=4, pool off: tasks/min (info)", f"{res[('taskrun, pool off', 4)]['per_min']:.0f}/min", "", None,
            f"c=1: {res[('taskrun, pool off', 1)]['per_min']:.0f}/min"),
    ]  # fmt: skip


if __name__ == "__main__":
    standalone(run, __doc__.splitlines()[0])
