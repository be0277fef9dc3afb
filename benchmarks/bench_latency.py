"""1. Submit → completed latency of ``print(1)``, side by side with the peers, same run.

- taskrun, pool hit: ``POST /taskrun/api/tasks?wait`` with ``kernel_pool_size=1``; before each
  task we wait until the pool has refilled (``GET /taskrun/api/status`` → executor.pool.ready)
  and the previous kernel is gone, so every sample is a hit on a quiet machine;
- taskrun, cold: the same with ``kernel_pool_size=0`` (a fresh kernel per task), spawned and forked
  (``c.TaskRun.kernel_start = "fork"``: forked from a fork server that imported ipykernel once);
- stock nbclient in-process: ``NotebookClient(nb).execute()``, default settings, fresh kernel each;
- papermill in-process (``execute_notebook``) and the papermill CLI (``python -m papermill``, wall);
- a warm stock kernel's own round trip for ``print(1)`` (jupyter_client, no server; ``_peers.py
  warm-kernel``): the floor under any pool hit, so the table shows what the server adds to it;
- jupyter-scheduler's REST API (``POST /scheduler/jobs`` → polling ``GET`` until COMPLETED),
  when jupyter_scheduler is importable or installed in the peers dir (``run_all.py --install-peers``).

Per-run figures exclude import time; every strategy gets one untimed warm-up run except the
CLI (every run is a new process anyway) and jupyter-scheduler (every job is a new process).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from datetime import datetime

import psutil
from _common import (
    BenchServer,
    Context,
    Row,
    check_forked,
    emit_table,
    fmt_ms,
    fmt_ratio,
    fork_server,
    log,
    ratio,
    run_worker,
    standalone,
    stats,
    submit_wait,
    taskrun_args,
)

CODE = {"code": "print(1)"}


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def taskrun_series(srv: BenchServer, n: int, *, pool: int, parts: dict[str, list[float]]) -> tuple[list[float], int]:
    """n timed submissions (after one warm-up); returns (seconds, pool misses).

    ``parts`` gets the server-side breakdown of each sample (from the task's own timestamps):
    queued (created -> started: dispatch, notebook build), running (started -> finished: kernel
    start when cold, setup, the cell) and the rest (HTTP, auth, store writes, waking the waiter).
    """
    misses = 0
    times = []
    proc = psutil.Process(srv.pid)
    for i in range(n + 1):
        srv.wait_quiet(kernels=pool, pool=pool)
        cpu0 = sum(proc.cpu_times()[:2])
        task, dt = submit_wait(srv, CODE)
        cpu = sum(proc.cpu_times()[:2]) - cpu0
        if task["status"] != "completed":
            raise RuntimeError(f"print(1) task ended {task['status']}: {task.get('error')}")
        if pool and not task["metrics"].get("pooled_kernel"):
            misses += 1
            continue
        if i:  # the first is the warm-up
            times.append(dt)
            created, started, finished = (epoch(task[k]) for k in ("created_at", "started_at", "finished_at"))
            parts.setdefault("queued", []).append(started - created)
            parts.setdefault("running", []).append(finished - started)
            parts.setdefault("kernel start", []).append(task["metrics"].get("kernel_start") or 0.0)
            parts.setdefault("cell", []).append(sum(c["duration"] for c in task["metrics"].get("cell_durations", [])))
            parts.setdefault("http+rest", []).append(dt - (finished - created))
            parts.setdefault("server CPU", []).append(cpu)
    return times, misses


def scheduler_path(ctx: Context) -> list[str] | None:
    """[] if jupyter_scheduler is importable here, [peers dir] if installed there, None if absent."""
    if importlib.util.find_spec("jupyter_scheduler") is not None:
        return []
    if (ctx.peers_dir / "jupyter_scheduler" / "__init__.py").exists():
        return [str(ctx.peers_dir)]
    return None


def scheduler_series(ctx: Context, n: int, extra_path: list[str]) -> list[float]:
    import nbformat
    from _peers import notebook

    base = ctx.tmp / "scheduler"
    srv = BenchServer(
        base,
        extensions={"jupyter_scheduler": True, "jupyter_taskrun": False},
        extra_path=extra_path,
        extra_args=(
            f"--SchedulerApp.db_url=sqlite:///{base}/scheduler.sqlite",
            f"--Scheduler.staging_path={base}/staging",
        ),
    )
    nbformat.write(notebook("print(1)"), srv.root / "bench.ipynb")
    log("starting a jupyter server with jupyter_scheduler")
    srv.start()
    try:
        http = srv.http
        envs = http.json("GET", "scheduler/runtime_environments")
        env_name = envs[0]["name"]
        times = []
        for i in range(n):
            body = {"input_uri": "bench.ipynb", "runtime_environment_name": env_name, "name": f"bench{i}", "output_formats": ["ipynb"]}
            t0 = time.perf_counter()
            job_id = http.json("POST", "scheduler/jobs", body)["job_id"]
            while True:
                job = http.json("GET", f"scheduler/jobs/{job_id}")
                # a new job reads STOPPED until its process starts: only these two are final
                if job["status"] in ("COMPLETED", "FAILED"):
                    break
                if time.perf_counter() - t0 > 180:
                    raise RuntimeError(f"jupyter-scheduler job stuck in {job['status']}")
                time.sleep(0.01)
            dt = time.perf_counter() - t0
            if job["status"] != "COMPLETED":
                raise RuntimeError(f"jupyter-scheduler job ended {job['status']}: {job.get('status_message')}")
            times.append(dt)
        return times
    finally:
        srv.stop()


def papermill_cli_series(ctx: Context, n: int) -> list[float]:
    import nbformat
    from _peers import notebook

    d = ctx.tmp / "papermill-cli"
    d.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook("print(1)"), d / "in.ipynb")
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "papermill", str(d / "in.ipynb"), str(d / f"out{i}.ipynb")],
            check=True, capture_output=True, timeout=180,
        )  # fmt: skip
        times.append(time.perf_counter() - t0)
    return times


def run(ctx: Context) -> list[Row]:
    series: dict[str, list[float]] = {}
    notes: dict[str, str] = {}

    srv = ctx.server(*taskrun_args(pool=1))
    log("latency: taskrun pool hit")
    parts: dict[str, dict[str, list[float]]] = {"taskrun pool hit": {}, "taskrun cold (pool off)": {}, "taskrun cold, forked": {}}
    series["taskrun pool hit"], misses = taskrun_series(srv, ctx.n(8, 30), pool=1, parts=parts["taskrun pool hit"])
    notes["taskrun pool hit"] = f"{misses} pool miss(es) dropped" if misses else "every sample a pool hit"

    srv = ctx.server(*taskrun_args(pool=0))
    log("latency: taskrun cold")
    series["taskrun cold (pool off)"], _ = taskrun_series(srv, ctx.n(5, 15), pool=0, parts=parts["taskrun cold (pool off)"])

    srv = fork_server(ctx, pool=0)
    log("latency: taskrun cold, forked kernels (kernel_start=fork)")
    series["taskrun cold, forked"], _ = taskrun_series(srv, ctx.n(5, 15), pool=0, parts=parts["taskrun cold, forked"])
    check_forked(srv)
    notes["taskrun cold, forked"] = "pool off, c.TaskRun.kernel_start = 'fork'"

    log("latency: stock nbclient")
    n_nb = ctx.n(5, 15)
    r = run_worker(["nbclient-latency", "--n", str(n_nb)], timeout=120 + 20 * n_nb)
    series["stock nbclient (in-process)"] = r["times"]
    cpu_of = {"nbclient": r.get("cpu", [])}
    notes["stock nbclient (in-process)"] = f"nbclient {r['nbclient']}, import {r['import_s']:.1f}s not counted"

    log("latency: warm kernel round trip (the floor under a pool hit)")
    r = run_worker(["warm-kernel", "--n", str(ctx.n(10, 40)), "--warmup", "3"], timeout=180)
    series["warm kernel round trip"] = r["times"]
    notes["warm kernel round trip"] = "one started stock kernel, execute -> idle + reply, no server"

    log("latency: papermill")
    n_pm = ctx.n(3, 10)
    r = run_worker(["papermill-latency", "--n", str(n_pm)], timeout=120 + 20 * n_pm)
    series["papermill.execute_notebook"] = r["times"]
    cpu_of["papermill"] = r.get("cpu", [])
    notes["papermill.execute_notebook"] = f"papermill {r['papermill']}, import {r['import_s']:.1f}s not counted"
    series["papermill CLI (wall)"] = papermill_cli_series(ctx, ctx.n(2, 5))
    notes["papermill CLI (wall)"] = "includes interpreter start and imports"

    sched_path = scheduler_path(ctx)
    if sched_path is None:
        notes["jupyter-scheduler REST"] = "SKIPPED: jupyter_scheduler not installed (run_all.py --install-peers)"
        log("latency: jupyter-scheduler not installed: skipped")
    else:
        log("latency: jupyter-scheduler")
        try:
            series["jupyter-scheduler REST"] = scheduler_series(ctx, ctx.n(2, 5), sched_path)
            notes["jupyter-scheduler REST"] = "POST /scheduler/jobs -> GET until COMPLETED"
        except Exception as e:  # noqa: BLE001 - a broken peer must not sink the suite
            notes["jupyter-scheduler REST"] = f"FAILED: {e}"[:200]

    st = {k: stats(v) for k, v in series.items()}
    hit = st["taskrun pool hit"]
    cold = st["taskrun cold (pool off)"]
    nb = st["stock nbclient (in-process)"]
    rows = []
    for name in [
        "taskrun pool hit", "warm kernel round trip", "taskrun cold (pool off)", "taskrun cold, forked",
        "stock nbclient (in-process)", "papermill.execute_notebook", "papermill CLI (wall)", "jupyter-scheduler REST",
    ]:  # fmt: skip
        s = st.get(name)
        if s is None:
            rows.append([name, 0, "-", "-", "-", "-", "-", notes.get(name, "")])
            continue
        rows.append([
            name, s["n"], fmt_ms(s["p50"]), fmt_ms(s["p95"]), fmt_ms(s["max"]),
            fmt_ratio(ratio(s["p50"], hit["p50"])), fmt_ratio(ratio(s["p50"], nb["p50"])), notes.get(name, ""),
        ])  # fmt: skip
    emit_table(
        ["strategy (print(1), submit -> completed)", "n", "p50", "p95", "max", "p50 / pool hit", "p50 / nbclient", "note"],
        rows,
        "1. LATENCY",
    )

    cpu_rows = [
        [name]
        + [fmt_ms(stats(p[k])["p50"]) for k in ("queued", "kernel start", "running", "cell", "http+rest")]
        + [fmt_ms(sum(p["server CPU"]) / len(p["server CPU"]))]
        for name, p in parts.items()
        if p
    ]
    for name, key in (("stock nbclient (in-process)", "nbclient"), ("papermill.execute_notebook", "papermill")):
        if cpu_of.get(key):
            cpu_rows.append([name + " (client process CPU)", "", "", "", "", "", fmt_ms(sum(cpu_of[key]) / len(cpu_of[key]))])
    emit_table(
        ["where the time goes (p50 of each part)", "queued", "  kernel start", "running", "  cell", "http+rest",
         "CPU/task (avg)"],
        cpu_rows,
        "   queued = created->started (dispatch, notebook build); running = started->finished (kernel start "
        "when cold, setup, the cell, collecting the result); http+rest = client round trip minus created->finished;\n"
        "   CPU/task = the server process's user+system CPU during the request (psutil, 10 ms ticks, averaged), "
        "kernels not included - load-independent, unlike the times",
    )  # fmt: skip

    speedup_nb = ratio(nb["p50"], hit["p50"])
    out = [
        Row("latency", "pool hit p50", fmt_ms(hit["p50"]), "<= 10 ms", hit["p50"] <= 0.010,
            f"p95 {fmt_ms(hit['p95'])}", raw=hit),
        Row("latency", "pool hit vs stock nbclient (p50)", f"{fmt_ratio(speedup_nb)} faster", ">= 80x",
            speedup_nb is not None and speedup_nb >= 80, f"nbclient p50 {fmt_ms(nb['p50'])}"),
    ]  # fmt: skip
    floor = st["warm kernel round trip"]
    out.append(Row("latency", "pool hit minus the kernel's own round trip (info)", fmt_ms(hit["p50"] - floor["p50"]), "", None,
                   f"warm kernel p50 {fmt_ms(floor['p50'])}: {fmt_ratio(ratio(nb['p50'], floor['p50']))} under nbclient at best"))  # fmt: skip
    sch = st.get("jupyter-scheduler REST")
    if sch is not None:
        sp = ratio(sch["p50"], hit["p50"])
        out.append(Row("latency", "pool hit vs jupyter-scheduler (p50)", f"{fmt_ratio(sp)} faster", ">= 150x",
                       sp is not None and sp >= 150, f"scheduler p50 {fmt_ms(sch['p50'])}"))  # fmt: skip
    else:
        note = notes.get("jupyter-scheduler REST", "")
        out.append(Row("latency", "pool hit vs jupyter-scheduler (p50)", "failed" if note.startswith("FAILED") else "skipped",
                       ">= 150x", None, note))  # fmt: skip
    cold_ratio = ratio(cold["p50"], nb["p50"])
    forked = st["taskrun cold, forked"]
    fork_ratio = ratio(forked["p50"], nb["p50"])
    out += [
        Row("latency", "cold p50 / stock nbclient p50", fmt_ratio(cold_ratio), "<= 0.6x",
            cold_ratio is not None and cold_ratio <= 0.6, f"cold {fmt_ms(cold['p50'])} vs {fmt_ms(nb['p50'])}", raw=cold),
        Row("latency", "cold p95", fmt_ms(cold["p95"]), "<= 1.0 s", cold["p95"] <= 1.0,
            f"nbclient p95 {fmt_ms(nb['p95'])} ({fmt_ratio(ratio(cold['p95'], nb['p95']))})"),
        Row("latency", "cold p50, forked / stock nbclient p50", fmt_ratio(fork_ratio), "<= 0.25x",
            fork_ratio is not None and fork_ratio <= 0.25,
            f"forked {fmt_ms(forked['p50'])} vs {fmt_ms(nb['p50'])}; spawned {fmt_ms(cold['p50'])} "
            f"({fmt_ratio(ratio(forked['p50'], cold['p50']))} of it)", raw=forked),
    ]  # fmt: skip
    for name in ("papermill.execute_notebook", "papermill CLI (wall)"):
        s = st[name]
        out.append(Row("latency", f"{name} p50 (info)", fmt_ms(s["p50"]), "", None,
                       f"{fmt_ratio(ratio(s['p50'], hit['p50']))} pool hit"))  # fmt: skip
    return out


if __name__ == "__main__":
    standalone(run, __doc__.splitlines()[0])
