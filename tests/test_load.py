"""Load (issue 8): a burst of N submissions (``TASKRUN_LOAD_N``, default 200; the issue's figure is
``TASKRUN_LOAD_N=500``) against a real
``jupyter server`` with ``max_concurrent_tasks=2`` and no kernel pool.

Asserted: every task completes, none is lost or duplicated, priority-then-FIFO order holds,
never more than 2 kernels are alive (sampled every 20 ms), and GET requests answer with
p99 < 100 ms while the burst is processed (or 4x the p99 of the same probe against the idle
server, measured first in the same run, where a loaded machine is slower than that even idle).
Figures are printed (run with ``-s``). On a 2-core machine N=500 takes 1.5-4 minutes.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest

from ._server import JupyterServer, dump_stacks

N = int(os.environ.get("TASKRUN_LOAD_N", "200"))
GET_P99_LIMIT = float(os.environ.get("TASKRUN_LOAD_P99_MS", "100")) / 1000


class Client:
    """One keep-alive HTTP connection (a browser tab or a script polling the API)."""

    def __init__(self, server: JupyterServer):
        self.server = server
        self.conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        self.headers = {"Authorization": f"token {server.token}", "Content-Type": "application/json"}

    def call(self, method: str, path: str, body=None) -> tuple[int, object]:
        data = json.dumps(body).encode() if body is not None else None
        for attempt in (1, 2):
            try:
                self.conn.request(method, "/taskrun/api/" + path, body=data, headers=self.headers)
                resp = self.conn.getresponse()
                raw = resp.read()
                return resp.status, (json.loads(raw) if raw else None)
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=60)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


def kernel_snapshot(server_pid: int) -> list[tuple[int, int, str, float]]:
    """(pid, ppid, status, started) of every live kernel process of the server.

    Kernels are the server's direct children; a kernel's own short-lived subprocesses (caught
    between fork and exec they still show the kernel's command line) are not kernels.
    """
    out = []
    try:
        children = psutil.Process(server_pid).children(recursive=False)
    except psutil.Error:
        return out
    for p in children:
        try:
            status = p.status()
            if status != psutil.STATUS_ZOMBIE and any("ipykernel" in a for a in p.cmdline()):
                out.append((p.pid, p.ppid(), status, p.create_time()))
        except psutil.Error:
            continue
    return out


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))]


@pytest.mark.slow
@pytest.mark.timeout(max(300, N * 3))
def test_burst_of_submissions(tmp_path):
    rnd = random.Random(500)
    args = (
        "--TaskRun.max_concurrent_tasks=2",
        "--TaskRun.kernel_pool_size=0",
        f"--TaskRun.max_queued_tasks={N + 10}",
        "--TaskRun.metrics_interval=1",
    )
    with JupyterServer(tmp_path, extra_args=args) as server:
        pid = server.proc.pid
        rss0 = psutil.Process(pid).memory_info().rss
        stop = threading.Event()
        peak = {"kernels": 0, "running": 0, "rss": rss0, "over": []}
        latencies: list[float] = []

        def sample_kernels() -> None:
            while not stop.is_set():
                snap = kernel_snapshot(pid)
                peak["kernels"] = max(peak["kernels"], len(snap))
                if len(snap) > 2 and len(peak["over"]) < 5:
                    peak["over"].append(snap)
                try:
                    peak["rss"] = max(peak["rss"], psutil.Process(pid).memory_info().rss)
                except psutil.Error:
                    pass
                time.sleep(0.02)

        probe_ids: list[str] = []

        def probe() -> None:
            c = Client(server)
            i = 0
            while not stop.is_set():
                i += 1
                path = ["status", "tasks?limit=50", f"tasks/{probe_ids[-1]}" if probe_ids else "status", "tasks?status=queued&limit=20"][
                    i % 4
                ]
                t0 = time.perf_counter()
                code, body = c.call("GET", path)
                latencies.append(time.perf_counter() - t0)
                assert code == 200, (path, code, body)
                if path == "status":  # the server's own count of running tasks
                    peak["running"] = max(peak["running"], body["running"])
                time.sleep(0.02)

        # baseline: the same probe against the idle server, in this run
        prober = threading.Thread(target=probe, daemon=True)
        prober.start()
        time.sleep(2)
        stop.set()
        prober.join()
        idle_p99 = percentile(latencies, 99)
        latencies.clear()
        stop.clear()

        sampler = threading.Thread(target=sample_kernels, daemon=True)
        prober = threading.Thread(target=probe, daemon=True)
        sampler.start()
        prober.start()

        # the burst: 60% in batches of 50, 40% as single POSTs from 8 concurrent clients
        specs = [{"code": f"print({i})", "name": f"load-{i:04d}", "priority": rnd.choice([0, 0, 1, 5])} for i in range(N)]
        n_batch = (N * 6 // 10) // 50 * 50
        t_start = time.monotonic()
        submitted: dict[str, dict] = {}
        lock = threading.Lock()

        def post_batch(chunk: list[dict]) -> None:
            code, body = Client(server).call("POST", "tasks/batch", {"tasks": chunk})
            assert code == 201, body
            with lock:
                for t in body["tasks"]:
                    submitted[t["id"]] = t
                probe_ids.append(body["tasks"][-1]["id"])

        def post_single(spec: dict, client_cache: dict = {}) -> None:  # noqa: B006 - one client per thread
            tid = threading.get_ident()
            c = client_cache.setdefault(tid, Client(server))
            code, body = c.call("POST", "tasks", spec)
            assert code == 201, body
            with lock:
                submitted[body["id"]] = body

        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(post_batch, specs[i : i + 50]) for i in range(0, n_batch, 50)]
            futures += [pool.submit(post_single, s) for s in specs[n_batch:]]
            for f in futures:
                f.result()
        t_burst = time.monotonic() - t_start
        burst_end_wall = time.time()
        assert len(submitted) == N

        c = Client(server)
        deadline = time.monotonic() + max(600, N * 2.0)
        while True:
            try:
                _code, status = c.call("GET", "status")
            except TimeoutError:  # the server stopped answering: say where it is stuck
                raise AssertionError(f"the server did not answer GET /status in 60 s; its stacks:\n{dump_stacks(server)}") from None
            if status["queued"] == 0 and status["running"] == 0:
                break
            assert time.monotonic() < deadline, f"burst not done in time: {status}"
            time.sleep(0.25)
        t_total = time.monotonic() - t_start
        stop.set()
        sampler.join()
        prober.join()

        # every task, read back through paging
        tasks, cursor = [], None
        while True:
            _code, page = c.call("GET", "tasks?limit=500" + (f"&cursor={cursor}" if cursor else ""))
            tasks += page["tasks"]
            cursor = page["next_cursor"]
            if not cursor:
                break
        rss_end = psutil.Process(pid).memory_info().rss

    by_id = {t["id"]: t for t in tasks}
    assert len(tasks) == len(by_id) == N, "a task was lost or duplicated"
    assert set(by_id) == set(submitted)
    assert sorted(t["name"] for t in tasks) == sorted(s["name"] for s in specs)
    not_done = [t for t in tasks if t["status"] != "completed"]
    assert not not_done, not_done[:3]
    assert peak["kernels"] <= 2, f"{peak['kernels']} kernels alive at once: {peak['over']}"
    assert peak["running"] <= 2

    # order: tasks that started after the burst were all queued together, so they must start
    # by priority, then submission order (insertion order = list order, newest first, reversed)
    def ts(s: str) -> float:
        from datetime import datetime

        return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()

    insertion = {t["id"]: i for i, t in enumerate(reversed(tasks))}
    late = [t for t in tasks if ts(t["started_at"]) > burst_end_wall + 0.5]
    actual = [t["id"] for t in sorted(late, key=lambda t: ts(t["started_at"]))]
    expected = [t["id"] for t in sorted(late, key=lambda t: (-t["priority"], insertion[t["id"]]))]
    # two slots: two tasks dispatched back to back may record their start in either order
    displaced = [tid for i, tid in enumerate(actual) if abs(expected.index(tid) - i) > 1]
    assert len(late) > N // 2
    assert not displaced, f"{len(displaced)} tasks out of priority/FIFO order"

    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    waits = [t["metrics"]["queue_wait"] for t in tasks]
    print(
        f"\nload: N={N} burst submitted in {t_burst:.1f}s, all completed in {t_total:.1f}s "
        f"({N / t_total * 60:.0f} tasks/min); GET p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
        f"max {max(latencies) * 1000:.1f} ms over {len(latencies)} requests (idle p99 {idle_p99 * 1000:.1f} ms); peak kernels {peak['kernels']}; "
        f"server RSS {rss0 / 2**20:.0f} -> peak {peak['rss'] / 2**20:.0f} -> end {rss_end / 2**20:.0f} MiB; "
        f"queue wait median {statistics.median(waits):.1f}s"
    )
    limit = max(GET_P99_LIMIT, 4 * idle_p99)
    assert p99 < limit, f"GET p99 {p99 * 1000:.0f} ms during the burst (limit {limit * 1000:.0f} ms, idle p99 {idle_p99 * 1000:.1f} ms)"
