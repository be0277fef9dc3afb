"""Soak run (issue 8): thousands of tasks with random cancels, timeouts and crashes against a real
``jupyter server``; checks that nothing is lost, stuck or leaked.

    python benchmarks/soak.py                 # 2,000 tasks (about 15-20 minutes on 2 cores)
    python benchmarks/soak.py --tasks 200     # a quick version
    python benchmarks/soak.py --concurrency 4 --seed 7

At the end it asserts (exit code 1 otherwise):
  * every task is terminal, and each ended the way its kind says it must
    (ok -> completed, error -> failed, crash -> failed "kernel died", timeout -> timed_out,
    cancelled -> cancelled, memory -> failed "memory limit exceeded");
  * no task kernel (or process carrying the server's kernel marker) is left;
  * the server's RSS is back near where it started (after warm-up), within ``--rss-slack`` MiB.
Not run in CI (too long); test_load.py is the CI-sized version.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests._server import JupyterServer

KINDS = {
    # kind: (weight, code, submission extras, expected status, words in the reason)
    "ok": (40, "import random\nprint(sum(range(random.randint(1, 10**5))))", {}, "completed", ""),
    "output": (8, "for i in range(2000):\n    print('line', i)", {}, "completed", ""),
    "error": (10, "raise ValueError('soak')", {}, "failed", "ValueError"),
    "exit": (6, "import os\nprint('bye', flush=True)\nos._exit(3)", {}, "failed", "kernel died"),
    "sigkill": (5, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", {}, "failed", "kernel died"),
    "segfault": (4, "import ctypes\nctypes.string_at(0)", {}, "failed", "kernel died"),
    "timeout": (8, "import time\ntime.sleep(60)", {"timeout": 1.5}, "timed_out", "timeout"),
    "cell_timeout": (4, ["print(1)", "import time\ntime.sleep(60)"], {"cell_timeout": 1}, "timed_out", "cell"),
    "cancel": (10, "import time\nprint('waiting', flush=True)\ntime.sleep(60)", {}, "cancelled", "cancel"),
    "children": (3, "import subprocess, time\nsubprocess.Popen(['sleep', '120'])\ntime.sleep(60)", {"timeout": 2}, "timed_out", "timeout"),
    "memory": (2, "x = []\nwhile True:\n    x.append(b'x' * (32 << 20))", {"memory_limit": 300 * 2**20}, "failed", "memory limit exceeded"),
}


def request(server: JupyterServer, method: str, path: str, body=None, timeout: float = 60):
    status, data = server.request(method, "taskrun/api/" + path, json.dumps(body).encode() if body is not None else None, timeout=timeout)
    return status, (json.loads(data) if data and data[:1] in b"{[" else data)


def marked_processes(marker_prefix: str) -> list[int]:
    out = []
    for p in psutil.process_iter(["pid"]):
        try:
            if p.environ().get("JUPYTER_TASKRUN_KERNEL", "").startswith(marker_prefix) and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p.pid)
        except (psutil.Error, OSError):
            continue
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=2, help="c.TaskRun.max_concurrent_tasks")
    ap.add_argument("--pool", type=int, default=1, help="c.TaskRun.kernel_pool_size")
    ap.add_argument("--seed", type=int, default=2000)
    ap.add_argument("--rss-slack", type=float, default=64, help="allowed server RSS growth in MiB")
    ap.add_argument("--dir", default=None, help="working folder (default: a temporary one)")
    args = ap.parse_args()
    rnd = random.Random(args.seed)

    import hashlib
    import tempfile

    base = Path(args.dir or tempfile.mkdtemp(prefix="taskrun-soak-"))
    extra = (
        f"--TaskRun.max_concurrent_tasks={args.concurrency}",
        f"--TaskRun.kernel_pool_size={args.pool}",
        f"--TaskRun.max_queued_tasks={args.tasks + 100}",
        "--TaskRun.interrupt_grace=0.2",
    )
    server = JupyterServer(base, extra_args=extra).start()
    marker = hashlib.sha1(os.path.realpath(server.db_path).encode()).hexdigest()[:12]
    proc = psutil.Process(server.proc.pid)
    failures: list[str] = []
    t0 = time.monotonic()
    try:
        # warm-up so the RSS baseline includes imports, caches and the pool
        for _ in range(5):
            request(server, "POST", "tasks?wait=60", {"code": "print('warm')"}, timeout=70)
        rss_start = proc.memory_info().rss

        weights = [v[0] for v in KINDS.values()]
        plan = rnd.choices(list(KINDS), weights=weights, k=args.tasks)
        submitted: dict[str, str] = {}  # id -> kind
        cancels: list[tuple[float, str]] = []
        lock = threading.Lock()
        peak_rss = rss_start

        def canceller(stop: threading.Event) -> None:
            while not stop.is_set() or cancels:
                now = time.monotonic()
                with lock:
                    due = [c for c in cancels if c[0] <= now]
                    for c in due:
                        cancels.remove(c)
                for _, tid in due:
                    status, body = request(server, "POST", f"tasks/{tid}/cancel")
                    if status not in (202, 409):
                        failures.append(f"cancel {tid} -> {status} {body}")
                time.sleep(0.05)

        stop = threading.Event()
        ct = threading.Thread(target=canceller, args=(stop,), daemon=True)
        ct.start()
        i = 0
        while i < len(plan):
            # submit in waves of up to 50 (batch endpoint) while keeping the queue moderate
            status, st = request(server, "GET", "status")
            if st["queued"] > 100:
                time.sleep(0.5)
                peak_rss = max(peak_rss, proc.memory_info().rss)
                continue
            wave = plan[i : i + 50]
            bodies = []
            for kind in wave:
                _, code, extras, _, _ = KINDS[kind]
                body = {"cells" if isinstance(code, list) else "code": code, "name": f"soak-{kind}", "tags": ["soak", kind], **extras}
                body["priority"] = rnd.choice([0, 0, 0, 1])
                bodies.append(body)
            status, res = request(server, "POST", "tasks/batch", {"tasks": bodies})
            if status != 201:
                failures.append(f"batch -> {status} {res}")
                break
            with lock:
                for kind, task in zip(wave, res["tasks"]):
                    submitted[task["id"]] = kind
                    if kind == "cancel":
                        cancels.append((time.monotonic() + rnd.uniform(0.0, 8.0), task["id"]))
            # random cancels of tasks of other kinds, whatever their state (idempotent or 409)
            for task in rnd.sample(res["tasks"], k=min(2, len(res["tasks"]))):
                if submitted[task["id"]] in ("ok", "output") and rnd.random() < 0.3:
                    submitted[task["id"]] = "ok-or-cancelled"
                    with lock:
                        cancels.append((time.monotonic() + rnd.uniform(0.0, 5.0), task["id"]))
            i += len(wave)
            print(
                f"\rsubmitted {i}/{len(plan)}  queued {st['queued']}  running {st['running']}  "
                f"rss {proc.memory_info().rss / 2**20:.0f} MiB  {time.monotonic() - t0:.0f}s",
                end="",
                flush=True,
            )

        deadline = time.monotonic() + 4 * 3600
        while True:
            status, st = request(server, "GET", "status")
            peak_rss = max(peak_rss, proc.memory_info().rss)
            if st["queued"] == 0 and st["running"] == 0 and not cancels:
                break
            if time.monotonic() > deadline:
                failures.append(f"not finished: {st}")
                break
            print(f"\rdraining: queued {st['queued']} running {st['running']}  {time.monotonic() - t0:.0f}s    ", end="", flush=True)
            time.sleep(1)
        stop.set()
        ct.join(30)
        print()

        # every task terminal and ended as its kind says
        outcomes: Counter[str] = Counter()
        for tid, kind in submitted.items():
            status, task = request(server, "GET", f"tasks/{tid}")
            if status != 200:
                failures.append(f"{tid} ({kind}) -> {status}")
                continue
            outcomes[f"{kind}:{task['status']}"] += 1
            if kind == "ok-or-cancelled":
                if task["status"] not in ("completed", "cancelled"):
                    failures.append(f"{tid} ({kind}) ended {task['status']}: {task['error']}")
                continue
            want, words = KINDS[kind][3], KINDS[kind][4]
            reason = (task.get("error") or {}).get("reason") or ""
            # a cancel may land before the task starts, and a crash kind may hit its own timeout first
            if task["status"] != want or (words and words not in reason and not (kind == "cancel" and "cancel" in reason)):
                failures.append(f"{tid} ({kind}) ended {task['status']}: {reason!r}")
        status, _listing = request(server, "GET", "tasks?tag=soak&limit=500")
        if status != 200:
            failures.append(f"list -> {status}")

        # no kernels left behind, and memory back near the start
        time.sleep(2)
        code, st = request(server, "GET", "status")
        pool = st.get("executor", {}).get("pool", {}).get("ready", 0)
        left = marked_processes(marker + ":")
        kernels_alive = len(left) - pool
        rss_end = proc.memory_info().rss
        elapsed = time.monotonic() - t0
    finally:
        server.stop()
    leftover_after_stop = marked_processes(marker + ":")
    growth = (rss_end - rss_start) / 2**20
    print(f"tasks {len(submitted)} in {elapsed:.0f}s ({len(submitted) / elapsed * 60:.0f}/min)")
    print("outcomes:", dict(sorted(outcomes.items())))
    print(f"server RSS: start {rss_start / 2**20:.0f} MiB, peak {peak_rss / 2**20:.0f} MiB, end {rss_end / 2**20:.0f} MiB (+{growth:.0f})")
    print(f"task kernels alive at the end (besides {pool} pooled): {kernels_alive}; after server stop: {len(leftover_after_stop)}")
    if kernels_alive > 0:
        failures.append(f"{kernels_alive} task kernel(s) alive after every task ended")
    if leftover_after_stop:
        failures.append(f"processes left after the server stopped: {leftover_after_stop}")
        for pid in leftover_after_stop:
            try:
                os.kill(pid, 9)
            except OSError:
                pass
    if growth > args.rss_slack:
        failures.append(f"server RSS grew {growth:.0f} MiB (> {args.rss_slack:g})")
    if failures:
        print(f"SOAK FAILED ({len(failures)} problems):")
        for f in failures[:50]:
            print("  -", f)
        return 1
    print("SOAK OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
