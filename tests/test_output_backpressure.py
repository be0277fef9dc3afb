"""No output lost under pressure (issue 8): a server loop that stalls while a task prints fast,
and 100 MiB printed as fast as Python can (bounded IOPub messages, bounded server memory).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time

import psutil

from .helpers import logs_of, wait_log


async def test_no_output_lost_while_the_server_loop_is_busy(api):
    """The server stalls (GC, a slow request, a locked database...) while a task prints fast."""
    code = "for i in range(20000):\n    print(i, flush=True)\nprint('END', flush=True)"
    task = await api.submit(code=code)
    await wait_log(api, task["id"], "0")
    time.sleep(5)  # noqa: ASYNC251 - block the event loop the server runs on, on purpose
    done = await api.wait(task["id"])
    assert done["status"] == "completed"
    logs = await logs_of(api, task["id"])
    assert logs == "".join(f"{i}\n" for i in range(20000)) + "END\n", f"{len(logs.splitlines())} of 20001 lines kept"


def test_fast_big_output_arrives_whole_in_bounded_messages(server_factory):
    """100 MiB written as fast as Python can: nothing lost, no giant IOPub message, bounded server memory.

    Without back-pressure ipykernel sends everything buffered between two flushes as one
    message (tens of MiB, parsed and HMAC-checked in one go) and the server holds it several
    times over. A real server process, so that its RSS is the server's alone (in-process,
    pytest's log capture keeps jupyter_client's debug dump of every message).
    """
    mib = 100
    code = f"import sys\nchunk = ('x' * 1023 + '\\n') * 1024\nfor _ in range({mib}):\n    sys.stdout.write(chunk)\nprint('END')"
    srv = server_factory(taskrun={"kernel_pool_size": 0, "max_output_bytes": 256 * 2**20})
    server = psutil.Process(srv.proc.pid)
    rss0, peak, stop = server.memory_info().rss, [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            with contextlib.suppress(psutil.Error):
                peak[0] = max(peak[0], server.memory_info().rss)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        status, body = srv.request("POST", "taskrun/api/tasks?wait=120", json.dumps({"code": code}).encode(), timeout=150)
    finally:
        stop.set()
        sampler.join()
    task = json.loads(body)
    assert status == 200 and task["status"] == "completed", task
    from jupyter_taskrun.server.store import TaskStore  # large events are stored zlib-compressed

    store = TaskStore(str(srv.db_path))
    try:
        sizes = [len(ev.data["text"]) for ev in store.iter_events(task["id"], ("log",))]
        total, biggest = sum(sizes), max(sizes)
    finally:
        store.close()
    assert total == mib * 2**20 + len("END\n")
    assert biggest <= 2**20, f"a single log message of {biggest} characters"  # max(64 Ki, buffer / 256)
    assert peak[0] - rss0 < 96 * 2**20, f"server RSS grew {(peak[0] - rss0) / 2**20:.0f} MiB"  # measured: ~41 MiB
