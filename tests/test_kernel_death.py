"""Kernel death (issue 8): a task kernel SIGKILLed from outside, segfaulting or calling ``os._exit``.

The task fails within 2 s of the death with a reason naming the signal or exit code, all the
output printed before the death is kept in order, and the next task runs normally.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from .forking import kernel_start  # noqa: F401  (autouse: every test runs with spawned and forked kernels)
from .helpers import TERMINAL, logs_of, sse_connect

LINES = "for i in range(200):\n    print('line', i)\nsys.stdout.flush()\n"
DEATHS = {
    "sigkill-from-outside": (
        "import os, sys, time\n" + LINES + "print('READY', os.getpid(), flush=True)\ntime.sleep(120)\n",
        ["kernel died", "SIGKILL"],
    ),
    "segfault": (
        "import ctypes, os, sys, time\n" + LINES + "print('READY', os.getpid(), flush=True)\ntime.sleep(0.3)\nctypes.string_at(0)\n",
        ["kernel died", "SIGSEGV"],
    ),
    "os._exit(3)": (
        "import os, sys, time\n" + LINES + "print('READY', os.getpid(), flush=True)\ntime.sleep(0.3)\nos._exit(3)\n",
        ["kernel died", "exited with code 3"],
    ),
}


@pytest.mark.parametrize("kind", list(DEATHS))
async def test_kernel_death_fails_task_within_2s_keeps_output_next_task_runs(api, kind):
    code, words = DEATHS[kind]
    task = await api.submit(code=code, name=kind, timeout=60)
    sse = await sse_connect(api, f"tasks/{task['id']}/events")
    log_text, t_ready, final = "", None, None
    while True:
        frame = await sse.next_frame(60)
        assert frame is not None, "stream ended without a final status"
        if frame["event"] == "log":
            log_text += frame["data"]["data"]["text"]
            if t_ready is None and "READY" in log_text and "\n" in log_text.split("READY")[1]:
                t_ready = frame["t"]
                if kind == "sigkill-from-outside":
                    pid = int(log_text.split("READY")[1].split()[0])
                    os.kill(pid, signal.SIGKILL)
                    t_death = time.monotonic()
                else:
                    t_death = t_ready + 0.3  # the task dies 0.3 s after printing READY
        if frame["event"] == "status" and frame["data"]["data"]["status"] in TERMINAL:
            final = frame
            break
    await sse.close()
    assert t_ready is not None
    noticed = final["t"] - t_death
    assert noticed < 2.0, f"death noticed after {noticed:.2f} s"
    task = await api.get(task["id"])
    assert task["status"] == "failed", task
    for w in words:
        assert w in task["error"]["reason"], task["error"]
    # all output produced before the death is kept, in order
    logs = await logs_of(api, task["id"])
    assert logs.startswith("".join(f"line {i}\n" for i in range(200)) + "READY"), logs[:200]
    after = await api.run(code="print('fine')")
    assert after["status"] == "completed"
    assert await logs_of(api, after["id"]) == "fine\n"
