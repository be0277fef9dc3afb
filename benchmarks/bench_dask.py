"""Dask executor benchmark: per-task overhead against the local executor, and event latency.

Run (needs the dask extra)::

    python benchmarks/bench_dask.py            # 20 tasks per series, 200 latency samples
    python benchmarks/bench_dask.py --quick    # 8 tasks, 100 samples

Everything runs in one go on this machine, side by side:

- a real ``dask scheduler`` and two ``dask worker --nthreads 1 --no-nanny`` subprocesses;
- three real ``jupyter server`` subprocesses: ``executor=dask``, ``executor=local`` with
  ``kernel_pool_size=0`` (a fresh kernel per task, like the Dask path) and ``executor=local``
  with the default warm pool (``kernel_pool_size=1``).

1. Per-task overhead: ``pass`` tasks one after another (one untimed warm-up each), timed from
   ``POST /taskrun/api/tasks`` to the response of ``GET /taskrun/api/tasks/{id}?wait=``.
   The Dask figure minus the cold local figure is what the Dask path adds per task.
2. Event latency worker → SSE client: a task prints ``time.time()`` every 20 ms; an SSE client
   on ``/taskrun/api/tasks/{id}/events`` subtracts that stamp from the arrival time of the log
   event (same machine, same clock). The path covers kernel → worker (iopub) → ``log_event`` →
   scheduler → server client → store (persist) → SSE. Target p50 <= 25 ms.
3. Transport choice (``--transports``, on by default): the raw latency of Dask's own
   mechanisms worker → client, without jupyter_taskrun: ``Worker.log_event`` +
   ``Client.subscribe_topic`` (what the executor uses) against ``distributed.Queue`` (``Pub``/``Sub``
   are gone from recent distributed releases, and were lossy by design).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests._server import JupyterServer  # noqa: E402


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = (len(s) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def ms(x: float) -> str:
    return f"{x * 1000:8.1f} ms"


# ----------------------------------------------------------------------------- processes


class Cluster:
    def __init__(self, base: Path, workers: int = 2):
        self.base = base
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen] = []
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        self.env = env
        self._spawn(
            [
                sys.executable,
                "-m",
                "distributed.cli.dask_scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--no-dashboard",
                "--preload",
                "jupyter_taskrun.dask_executor",
            ],
            "scheduler",
        )
        for i in range(workers):
            self._spawn(
                [
                    sys.executable,
                    "-m",
                    "distributed.cli.dask_worker",
                    self.address,
                    "--name",
                    f"w{i}",
                    "--nthreads",
                    "1",
                    "--no-nanny",
                    "--host",
                    "127.0.0.1",
                    "--no-dashboard",
                    "--memory-limit",
                    "0",
                    "--preload",
                    "jupyter_taskrun.dask_executor",
                ],
                f"w{i}",
            )
        self.n_workers = workers

    def _spawn(self, cmd: list[str], name: str) -> None:
        with open(self.base / f"{name}.log", "ab") as out:
            self.procs.append(subprocess.Popen(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True))

    def close(self) -> None:
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
        for p in self.procs:
            p.wait(10)


class Server(JupyterServer):
    def __init__(self, base: Path, *args: str):
        super().__init__(base, extra_args=args, start_timeout=120)

    def call(self, method: str, path: str, body: Any = None, timeout: float = 600) -> Any:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            data = json.dumps(body).encode() if body is not None else None
            conn.request(
                method,
                "/taskrun/api/" + path,
                body=data,
                headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
            )
            resp = conn.getresponse()
            payload = resp.read()
            if resp.status >= 400:
                raise RuntimeError(f"{method} {path} -> {resp.status} {payload[:300]!r}")
            return json.loads(payload) if payload else None
        finally:
            conn.close()

    def run(self, code: str) -> tuple[dict[str, Any], float]:
        t0 = time.perf_counter()
        task = self.call("POST", "tasks", {"code": code})
        task = self.call("GET", f"tasks/{task['id']}?wait=600")
        return task, time.perf_counter() - t0

    def wait_executor(self, workers: int | None = None, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            ex = self.call("GET", "status")["executor"]
            if ex.get("kind") != "dask" or (ex.get("connected") and (workers is None or ex.get("workers") == workers)):
                return ex
            if time.monotonic() > deadline:
                raise RuntimeError(f"executor not ready: {ex}")
            time.sleep(0.2)


# ----------------------------------------------------------------------------- measurements


def overhead(srv: Server, n: int) -> tuple[list[float], list[float]]:
    """(submit -> completed seconds, the same minus the kernel's start time) per task."""
    out, rest = [], []
    for i in range(n + 1):
        task, dt = srv.run("pass")
        if task["status"] != "completed":
            raise RuntimeError(f"task ended {task['status']}: {task.get('error')}")
        if i:
            out.append(dt)
            rest.append(dt - float(task["metrics"].get("kernel_start") or 0.0))
        time.sleep(0.3)  # let the previous kernel be reaped (and a pool refill) before the next sample
    return out, rest


LATENCY_CODE = """
import time
time.sleep(0.3)
for i in range({n}):
    print(f"@{{time.time():.6f}}", flush=True)
    time.sleep(0.02)
"""


def event_latency(srv: Server, n: int) -> list[float]:
    """Submit the printing task, follow its SSE stream, return arrival - printed stamp per line."""
    task = srv.call("POST", "tasks", {"code": LATENCY_CODE.format(n=n)})
    samples: list[float] = []
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=120)
    conn.request(
        "GET",
        f"/taskrun/api/tasks/{task['id']}/events",
        headers={"Authorization": f"token {srv.token}", "Accept": "text/event-stream"},
    )
    resp = conn.getresponse()
    event = None
    while True:
        line = resp.readline()
        if not line:
            break
        now = time.time()
        text = line.decode().rstrip("\n")
        if text.startswith("event: "):
            event = text[7:]
        elif text.startswith("data: ") and event == "log":
            data = json.loads(text[6:])
            for chunk in data["data"]["text"].splitlines():
                if chunk.startswith("@"):
                    samples.append(now - float(chunk[1:]))
        elif text.startswith("data: ") and event == "end":
            break
    conn.close()
    done = srv.call("GET", f"tasks/{task['id']}?wait=60")
    if done["status"] != "completed":
        raise RuntimeError(f"latency task ended {done['status']}: {done.get('error')}")
    return samples


# ----------------------------------------------------------------------------- transports


async def _transports(address: str, n: int) -> dict[str, list[float]]:
    from distributed import Client, Queue

    results: dict[str, list[float]] = {}
    async with Client(address, asynchronous=True) as client:
        # log_event -> subscribe_topic (the executor's choice)
        got: list[float] = []
        done = asyncio.Event()

        def handler(ev: Any) -> None:
            got.append(time.time() - ev[1]["t"])
            if len(got) >= n:
                done.set()

        client.subscribe_topic("bench-log-event", handler)
        await asyncio.sleep(0.2)
        fut = client.submit(_emit_log_events, n, pure=False)
        await fut
        await asyncio.wait_for(done.wait(), 60)
        results["Worker.log_event -> Client.subscribe_topic"] = got

        # distributed.Queue (worker put, client get)
        q = await Queue("bench-queue", client=client)
        fut = client.submit(_emit_queue, n, pure=False)
        got = []
        for _ in range(n):
            t = await q.get(timeout=60)
            got.append(time.time() - t)
        await fut
        results["distributed.Queue put -> get"] = got

    return results


async def _emit_log_events(n: int) -> None:
    from distributed import get_worker

    w = get_worker()
    for _ in range(n):
        w.log_event("bench-log-event", {"t": time.time()})
        await asyncio.sleep(0.02)


def _emit_queue(n: int) -> None:
    from distributed import Queue

    q = Queue("bench-queue")
    for _ in range(n):
        q.put(time.time())
        time.sleep(0.02)


# ----------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--tasks", type=int, default=None, help="tasks per overhead series")
    ap.add_argument("--events", type=int, default=None, help="latency samples per executor")
    ap.add_argument("--no-transports", dest="transports", action="store_false")
    args = ap.parse_args()
    n_tasks = args.tasks or (8 if args.quick else 20)
    n_events = args.events or (100 if args.quick else 200)

    tmp = Path(tempfile.mkdtemp(prefix="bench-dask-"))
    cluster = Cluster(tmp, workers=2)
    servers: dict[str, Server] = {}
    try:
        log(f"dask scheduler {cluster.address}, 2 workers; starting 3 jupyter servers")
        specs = {
            "dask": ("--TaskRun.executor=dask", f"--DaskExecutor.scheduler_address={cluster.address}"),
            "local (cold, pool 0)": ("--TaskRun.executor=local", "--TaskRun.kernel_pool_size=0"),
            "local (warm pool 1)": ("--TaskRun.executor=local", "--TaskRun.kernel_pool_size=1"),
        }
        for i, (name, extra) in enumerate(specs.items()):
            base = tmp / f"srv{i}"
            base.mkdir()
            servers[name] = Server(base, *extra).start()
        servers["dask"].wait_executor(workers=2)

        rows = {}
        for name, srv in servers.items():
            log(f"overhead: {n_tasks} tasks on {name}")
            rows[name] = overhead(srv, n_tasks)
        lat = {}
        for name in ("dask", "local (cold, pool 0)"):
            log(f"event latency: {n_events} samples on {name}")
            lat[name] = event_latency(servers[name], n_events)
        transports = {}
        if args.transports:
            log(f"transports: {n_events} messages each")
            try:
                transports = asyncio.run(_transports(cluster.address, n_events))
            except Exception as e:  # a side measurement: never lose the main figures to it
                log(f"transport comparison failed: {type(e).__name__}: {e}")
    finally:
        for srv in servers.values():
            srv.stop()
        cluster.close()

    load = os.getloadavg()
    print()
    print(f"machine: {os.cpu_count()} cores, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    print(f"\n1. Per-task time, submit -> completed, 'pass' task, {n_tasks} sequential tasks each")
    print("   ('w/o kernel start': the same minus the task's metrics.kernel_start, i.e. everything but")
    print("    the kernel's own start-up, which dominates on a loaded machine and is the same code on both)")
    print(f"   {'executor':<24}{'mean':>11}{'p50':>11}{'p95':>11}   {'w/o kernel start: mean':>22}{'p50':>11}")
    for name, (vals, rest) in rows.items():
        print(
            f"   {name:<24}{ms(statistics.mean(vals))}{ms(pct(vals, 50))}{ms(pct(vals, 95))}"
            f"   {ms(statistics.mean(rest)):>22}{ms(pct(rest, 50))}"
        )
    (d, dr), (c, cr), (w, _) = (
        (statistics.mean(rows[k][0]), statistics.mean(rows[k][1])) for k in ("dask", "local (cold, pool 0)", "local (warm pool 1)")
    )
    print(f"   whole task: dask / local cold = {d / c:.2f}x (dask adds {(d - c) * 1000:.1f} ms); dask / local warm pool = {d / w:.2f}x")
    print(f"   without kernel start: dask / local cold = {dr / cr:.2f}x (dask adds {(dr - cr) * 1000:.1f} ms per task)")
    print(f"\n2. Event latency, kernel print -> SSE client, {n_events} samples (target p50 <= 25 ms)")
    print(f"   {'executor':<24}{'p50':>11}{'p95':>11}{'max':>11}")
    for name, vals in lat.items():
        print(f"   {name:<24}{ms(pct(vals, 50))}{ms(pct(vals, 95))}{ms(max(vals))}")
    p50 = pct(lat["dask"], 50)
    print(f"   dask p50 {p50 * 1000:.1f} ms: {'meets' if p50 <= 0.025 else 'MISSES'} the 25 ms target")
    if transports:
        print(f"\n3. Dask transports alone, worker -> client, {n_events} messages 20 ms apart")
        print(f"   {'mechanism':<48}{'p50':>11}{'p95':>11}")
        for name, vals in transports.items():
            if vals:
                print(f"   {name:<48}{ms(pct(vals, 50))}{ms(pct(vals, 95))}")
            else:
                print(f"   {name:<48}   (nothing delivered)")


if __name__ == "__main__":
    main()
