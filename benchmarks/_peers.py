"""Peer baselines, each run in its own process so their imports and kernels stay out of the
driver. Usage: ``python benchmarks/_peers.py KIND [options]``; the last stdout line is JSON.

Every peer is used the way its documentation shows, with default settings:
- ``nbclient-latency``: ``nbclient.NotebookClient(nb).execute()`` on a 1-cell notebook, fresh kernel each;
- ``papermill-latency``: ``papermill.execute_notebook(in, out)`` on the same notebook;
- ``nbclient-throughput``: ``NotebookClient(nb).async_execute()`` under an asyncio semaphore;
- ``direct-stream``: a stock kernel (jupyter_client.KernelManager defaults, so ipykernel's own
  output batching) read directly over ZMQ in this process — no server hop at all;
- ``warm-kernel``: ``print(1)`` executed again and again in one started stock kernel (jupyter_client
  ``KernelClient.execute``, until its idle status and its reply): the kernel's own round trip, which
  no pool hit can beat (a pool hit is this plus the server's work);
- ``nbclient-bigoutput``: nbclient executing a cell that prints N MB (process RSS growth, time).
Import time is measured apart and not counted in per-run figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

T_IMPORT0 = time.perf_counter()


def notebook(source: str):
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(cells=[new_code_cell(source)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nbformat.from_dict(nb)


def nbclient_latency(a) -> dict:
    import copy

    import nbclient

    imp = time.perf_counter() - T_IMPORT0
    nb = notebook("print(1)")
    times, cpu = [], []
    for i in range(a.warmup + a.n):
        t0, c0 = time.perf_counter(), time.process_time()
        out = nbclient.NotebookClient(copy.deepcopy(nb)).execute()
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        assert out.cells[0].outputs[0]["text"] == "1\n", out.cells[0].outputs
        if i >= a.warmup:
            times.append(dt)
            cpu.append(dc)
    return {"times": times, "cpu": cpu, "import_s": imp, "nbclient": nbclient.__version__}


def papermill_latency(a) -> dict:
    import nbformat
    import papermill

    imp = time.perf_counter() - T_IMPORT0
    d = Path(tempfile.mkdtemp(prefix="pm-"))
    src = d / "in.ipynb"
    nbformat.write(notebook("print(1)"), src)
    times, cpu = [], []
    for i in range(a.warmup + a.n):
        t0, c0 = time.perf_counter(), time.process_time()
        papermill.execute_notebook(str(src), str(d / f"out{i}.ipynb"))
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        if i >= a.warmup:
            times.append(dt)
            cpu.append(dc)
    return {"times": times, "cpu": cpu, "import_s": imp, "papermill": papermill.__version__}


def warm_kernel(a) -> dict:
    import asyncio

    from jupyter_client.manager import AsyncKernelManager

    async def main() -> list[float]:
        km = AsyncKernelManager(kernel_name="python3")
        await km.start_kernel()
        kc = km.client()
        kc.start_channels()
        try:
            await kc.wait_for_ready(timeout=60)
            times = []
            for i in range(a.warmup + a.n):
                t0 = time.perf_counter()
                msg_id = kc.execute("print(1)")
                text = ""
                while True:
                    msg = await kc.get_iopub_msg(timeout=30)
                    if msg["parent_header"].get("msg_id") != msg_id:
                        continue
                    if msg["msg_type"] == "stream":
                        text += msg["content"]["text"]
                    if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                        break
                reply = await kc.get_shell_msg(timeout=30)
                dt = time.perf_counter() - t0
                assert text == "1\n" and reply["content"]["status"] == "ok", (text, reply["content"])
                if i >= a.warmup:
                    times.append(dt)
                await asyncio.sleep(0.05)  # as between two benchmark submissions: a quiet kernel
            return times
        finally:
            kc.stop_channels()
            await km.shutdown_kernel(now=True)

    return {"times": asyncio.run(main())}


def nbclient_throughput(a) -> dict:
    import asyncio
    import copy

    import nbclient

    nb = notebook("print(1)")

    errors: list[str] = []

    async def main() -> float:
        sem = asyncio.Semaphore(a.c)

        async def one() -> None:
            async with sem:
                try:
                    out = await nbclient.NotebookClient(copy.deepcopy(nb)).async_execute()
                    assert out.cells[0].outputs[0]["text"] == "1\n"
                except Exception as e:  # noqa: BLE001 - a failed task counts as not done, the run goes on
                    errors.append(f"{type(e).__name__}: {e}"[:200])

        # warm-up (disk caches), not counted
        await one()
        errors.clear()
        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(a.m)))
        return time.perf_counter() - t0

    total = asyncio.run(main())
    done = a.m - len(errors)
    return {"total_s": total, "tasks": a.m, "failed": len(errors), "errors": errors[:3], "concurrency": a.c,
            "per_min": done / total * 60}  # fmt: skip


def direct_stream(a) -> dict:
    from queue import Empty

    from jupyter_client.manager import KernelManager

    code = f"import time\nfor i in range({a.lines}):\n    print(f'TS {{i}} {{time.time():.6f}}')\n    time.sleep({a.interval!r})\n"
    km = KernelManager(kernel_name="python3")
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        msg_id = kc.execute(code)
        buf = ""
        lat = []
        while True:
            try:
                msg = kc.get_iopub_msg(timeout=60)
            except Empty:
                break
            t = time.time()
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "stream":
                buf += msg["content"]["text"]
                *complete, buf = buf.split("\n")
                for line in complete:
                    p = line.split()
                    if len(p) == 3 and p[0] == "TS":
                        lat.append(t - float(p[2]))
            elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    return {"latencies": lat}


def nbclient_bigoutput(a) -> dict:
    import nbclient
    import psutil

    proc = psutil.Process()
    code = f"import sys\nchunk = ('x' * 1023 + '\\n') * 1024\nfor _ in range({a.mb}):\n    sys.stdout.write(chunk)\n"
    nb = notebook(code)
    peak = [proc.memory_info().rss]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak.append(proc.memory_info().rss)
            stop.wait(0.05)

    base = proc.memory_info().rss
    th = threading.Thread(target=sample, daemon=True)
    th.start()
    t0 = time.perf_counter()
    out = nbclient.NotebookClient(nb, shutdown_kernel="immediate").execute()
    total = time.perf_counter() - t0
    stop.set()
    th.join()
    n = sum(len(o.get("text", "")) for o in out.cells[0].outputs)
    return {"total_s": total, "rss_base": base, "rss_peak": max(peak), "chars": n}


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="kind", required=True)
    for name in ("nbclient-latency", "papermill-latency", "warm-kernel"):
        p = sub.add_parser(name)
        p.add_argument("--n", type=int, default=10)
        p.add_argument("--warmup", type=int, default=1)
    p = sub.add_parser("nbclient-throughput")
    p.add_argument("--m", type=int, default=20)
    p.add_argument("--c", type=int, default=2)
    p = sub.add_parser("direct-stream")
    p.add_argument("--lines", type=int, default=300)
    p.add_argument("--interval", type=float, default=0.01)
    p = sub.add_parser("nbclient-bigoutput")
    p.add_argument("--mb", type=int, default=200)
    a = ap.parse_args()
    fn = {
        "nbclient-latency": nbclient_latency,
        "papermill-latency": papermill_latency,
        "nbclient-throughput": nbclient_throughput,
        "warm-kernel": warm_kernel,
        "direct-stream": direct_stream,
        "nbclient-bigoutput": nbclient_bigoutput,
    }[a.kind]
    result = fn(a)
    sys.stdout.flush()
    print(json.dumps(result), flush=True)
    os._exit(0)  # don't wait on lingering non-daemon threads of the kernel clients


if __name__ == "__main__":
    main()
