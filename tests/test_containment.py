"""Nothing a task starts outlives it (issue 19): not even a daemon that keeps forking, calling
setsid and exiting (PID hopping), on completion, without the sandbox. (A cancel variant failed
on a heavily loaded machine in the last session, cause not yet found: see the closing note.)"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid

import psutil
import pytest

from .forking import kernel_start  # noqa: F401  (autouse: every test runs with spawned and forked kernels)

HOPPER = """
import os, sys, time
def hop():
    while True:
        if os.fork():
            os._exit(0)      # the parent exits: the child is an orphan
        os.setsid()          # ... in a new session
        time.sleep(0.05)
hop()
"""


def spawn_hopper(token: str) -> str:
    return (
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', {HOPPER!r}, {token!r}], start_new_session=True)\n"
        "time.sleep(0.5)\n"
        "print('hopping')\n"
    )


def hoppers(token: str) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline", "status"]):
        try:
            if token in (p.info["cmdline"] or []) and p.info["status"] != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.Error:
            continue
    return out


async def gone(token: str, within: float = 5.0) -> bool:
    """No hopper in 5 scans in a row (one scan can miss a process caught mid-hop)."""
    absent = 0
    for _ in range(int(within / 0.05)):
        absent = absent + 1 if not hoppers(token) else 0
        if absent >= 5:
            return True
        await asyncio.sleep(0.05)
    for p in hoppers(token):  # clean up what escaped, then fail
        p.kill()
    return False


@pytest.mark.parametrize("repeat", range(5))
async def test_pid_hopping_daemon_dies_with_its_completed_task(api, repeat):
    token = f"taskrun-hop-{uuid.uuid4().hex}"
    task = await api.run(code=spawn_hopper(token))
    assert task["status"] == "completed", task
    assert await gone(token), "a PID-hopping daemon outlived its task"


def test_hopper_escapes_without_containment():
    """The threat is real: the same hopper, started by a plain process that then dies, survives it."""
    import subprocess

    token = f"taskrun-hop-{uuid.uuid4().hex}"
    parent = subprocess.Popen([sys.executable, "-c", spawn_hopper(token)])
    parent.wait(timeout=30)
    try:
        # one scan of /proc can miss a process that hops while it is read: look a few times, 1 s later too
        time.sleep(1)
        seen = sum(bool(hoppers(token)) for _ in range(10) if time.sleep(0.05) is None)
        assert seen >= 5, f"without a subreaper the hopper lives on (seen in {seen}/10 scans)"
    finally:
        for _ in range(50):
            for p in hoppers(token):
                try:
                    p.kill()
                except psutil.Error:
                    pass
            if not hoppers(token):
                break
