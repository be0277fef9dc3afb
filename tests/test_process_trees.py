"""Process trees (issue 8): whatever a task starts goes when the task ends.

Children, grandchildren, a double-forked ``setsid`` daemon and a daemon that scrubbed its
environment are all killed on cancel and on timeout; a server stopping while a kernel is
still starting leaves no kernel behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from typing import Any

import psutil
import pytest

from .forking import kernel_start  # noqa: F401  (autouse: every test runs with spawned and forked kernels)
from .helpers import gone, kernel_processes, wait_for, wait_log

TREE = r"""
import os, subprocess, sys, time
kids = [subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']) for _ in range(2)]
shell = subprocess.Popen(['sh', '-c', 'sleep 600 & sleep 600 & wait'])
r, w = os.pipe()
if os.fork() == 0:              # classic daemon: double fork + setsid, parent exits
    os.setsid()
    if os.fork() == 0:
        os.write(w, str(os.getpid()).encode())
        while True:
            time.sleep(1)
    os._exit(0)
os.wait()
daemon = int(os.read(r, 32))
time.sleep(0.3)                 # let the shell start its sleeps
print('TREE', os.getpid(), daemon, flush=True)
time.sleep(600)
"""


def tree_pids(kernel_pid: int, extra: list[int]) -> set[int]:
    pids = {kernel_pid, *extra}
    with contextlib.suppress(psutil.Error):
        pids |= {c.pid for c in psutil.Process(kernel_pid).children(recursive=True)}
    return pids


@pytest.mark.parametrize("how", ["cancel", "timeout"])
async def test_cancel_and_timeout_kill_the_whole_process_tree(api, how):
    body: dict[str, Any] = {"code": TREE}
    if how == "timeout":
        body["timeout"] = 6
    task = await api.submit(**body)
    logs = await wait_log(api, task["id"], "TREE", 60)
    kernel_pid, daemon = map(int, logs.split("TREE")[1].split()[:2])
    pids = tree_pids(kernel_pid, [daemon])
    assert len(pids) >= 7, pids  # kernel, 2 pythons, sh + 2 sleeps, the daemon
    # really detached: its own session, and its parent (the intermediate fork) has exited
    assert not gone(daemon) and os.getsid(daemon) != os.getsid(kernel_pid)
    if how == "cancel":
        code, _, _ = await api.call("POST", f"tasks/{task['id']}/cancel")
        assert code == 202
    t0 = time.monotonic()
    done = await api.wait(task["id"], 30)
    assert done["status"] == ("cancelled" if how == "cancel" else "timed_out"), done
    await wait_for(lambda: all(gone(p) for p in pids), 5, what="every process of the task's tree to be gone")
    assert time.monotonic() - t0 < 10


ESCAPE = r"""
import os, subprocess, time
# a daemon that drops the whole environment (like `env -i`) and leaves the session
out = subprocess.run(['sh', '-c', 'sleep 600 >/dev/null 2>&1 & echo $!'], env={}, start_new_session=True,
                     capture_output=True, text=True).stdout
print('ESCAPED', int(out), flush=True)
time.sleep(600)
"""


async def test_cancel_kills_a_daemon_that_scrubbed_its_environment(api):
    task = await api.submit(code=ESCAPE)
    logs = await wait_log(api, task["id"], "ESCAPED", 60)
    pid = int(logs.split("ESCAPED")[1].split()[0])
    try:
        assert not gone(pid)
        code, _, _ = await api.call("POST", f"tasks/{task['id']}/cancel")
        assert code == 202
        assert (await api.wait(task["id"], 30))["status"] == "cancelled"
        await wait_for(lambda: gone(pid), 5, what="the escaped daemon to be killed")
    finally:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("delay", [0.0, 0.02, 0.05, 0.1, 0.2, 0.4])
async def test_server_stop_while_a_kernel_is_starting_leaves_no_kernel(api, taskrun, delay):
    await api.submit(code="import time\ntime.sleep(60)")
    await asyncio.sleep(delay)  # the task is being dispatched / its kernel started
    await taskrun.stop()
    await asyncio.sleep(3)
    leaked = kernel_processes()
    for p in leaked:
        p.kill()
    assert not leaked, f"kernel(s) left running after stop: {[p.pid for p in leaked]}"
