"""Forked task kernels (``execution/forkserver.py``): what a forked kernel is, compared with a
spawned one started in the same test, and what happens around it (cancel, fork server death,
kernels it cannot fork). The task-level guarantees (process trees, death, durable output,
limits, containment) run in both modes in their own files (``tests/forking.py``)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time

import psutil
import pytest
from jupyter_client.kernelspec import KernelSpecManager

from jupyter_taskrun.execution.kernels import (
    KERNEL_MARKER_ENV,
    KernelLauncher,
    KernelPool,
    describe_exit,
    execute_silently,
    reap,
)

from .helpers import gone, wait_for

PROBE = """
import json, os, sys, threading
open({path!r}, 'w').write(json.dumps({{
    'cwd': os.getcwd(), 'argv': sys.argv, 'path': sys.path, 'env': dict(os.environ),
    'threads': sorted(t.name for t in threading.enumerate()), 'modules': sorted(sys.modules),
    'pid': os.getpid(), 'ppid': os.getppid(), 'sid': os.getsid(0), 'pgid': os.getpgid(0),
}}))
"""


def launcher(mode: str, **kw) -> KernelLauncher:
    return KernelLauncher(KernelSpecManager(), kernel_start=mode, server_marker="forktest", **kw)


async def probe(kernel, path) -> dict:
    reply = await execute_silently(kernel, PROBE.format(path=str(path)))
    assert reply["status"] == "ok", reply
    return json.loads(path.read_text())


def fds_of(pid: int) -> dict[int, str]:
    out = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out[int(fd)] = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            pass
    return out


async def test_a_forked_kernel_looks_like_a_spawned_one(tmp_path):
    spawner, forker = launcher("spawn"), launcher("fork")
    kernels = []
    try:
        spawned = await spawner.start("python3", cwd=str(tmp_path), env={"TASK_VAR": "1"})
        forked = await forker.start("python3", cwd=str(tmp_path), env={"TASK_VAR": "1"})
        other = await forker.start("python3", cwd=str(tmp_path))
        kernels = [spawned, forked, other]
        assert not spawned.forked and forked.forked and other.forked
        s, f = await probe(spawned, tmp_path / "s.json"), await probe(forked, tmp_path / "f.json")
        # same working folder, argv (ipykernel_launcher's path first), sys.path, threads and environment
        assert f["cwd"] == s["cwd"] == str(tmp_path)
        assert f["argv"][0] == s["argv"][0] and f["argv"][1] == s["argv"][1] == "-f"
        assert f["argv"][2] == forked.km.connection_file
        assert f["argv"][3:] == s["argv"][3:]
        assert f["path"] == s["path"]
        unnumbered = [t.rstrip("0123456789") for t in f["threads"]]  # "Thread-N": its counter differs
        assert unnumbered == [t.rstrip("0123456789") for t in s["threads"]]
        differ = {k for k in set(s["env"]) | set(f["env"]) if s["env"].get(k) != f["env"].get(k)}
        assert differ == {KERNEL_MARKER_ENV, "JPY_PARENT_PID"}, differ  # its own marker; its parent
        assert f["env"]["TASK_VAR"] == "1" and f["env"][KERNEL_MARKER_ENV] == forked.marker
        # a forked kernel imported nothing a spawned one does not (the fork server preloads only those)
        assert set(f["modules"]) - set(s["modules"]) <= {"psutil._psutil_posix"}, set(f["modules"]) - set(s["modules"])
        # its own process: the fork server's child, in its own session and process group
        server_pid = forker.forkservers.pids()[0]
        assert f["ppid"] == server_pid != os.getpid() and s["ppid"] == os.getpid()
        assert f["pid"] == f["sid"] == f["pgid"] == forked.pid
        assert int(f["env"]["JPY_PARENT_PID"]) == server_pid
        # found like a spawned kernel: its marker in /proc/<pid>/environ, "ipykernel" in its command line
        proc = psutil.Process(forked.pid)
        assert proc.environ()[KERNEL_MARKER_ENV] == forked.marker
        assert proc.cmdline()[1:3] == ["-m", "ipykernel_launcher"]
        # it holds its own durable pipes and no other kernel's, nor the fork server's socket
        pipes = {v for v in fds_of(forked.pid).values() if v.startswith("pipe:")}
        other_pipes = {v for v in fds_of(other.pid).values() if v.startswith("pipe:")}
        assert len(pipes) == 3 and not pipes & other_pipes, (pipes, other_pipes)
        server_sockets = {v for v in fds_of(server_pid).values() if v.startswith("socket:")}
        assert not server_sockets & set(fds_of(forked.pid).values())
        # the fork server: one thread, one socket (its control socket), no ZMQ context
        assert len(os.listdir(f"/proc/{server_pid}/task")) == 1
        assert len(server_sockets) == 1
        assert "ipykernel" not in " ".join(psutil.Process(server_pid).cmdline())
    finally:
        for k in kernels:
            await k.dispose()
        await forker.close()
    assert not forker.forkservers.pids()


@pytest.mark.parametrize("death", ["SIGKILL", "SIGSEGV", "exit 3"])
async def test_a_forked_kernels_exit_status_is_reported(death):
    forker = launcher("fork")
    try:
        kernel = await forker.start("python3")
        assert kernel.forked and kernel.is_alive()
        if death == "SIGKILL":
            os.kill(kernel.pid, signal.SIGKILL)
        else:
            kernel.kc.execute("import ctypes; ctypes.string_at(0)" if death == "SIGSEGV" else "import os; os._exit(3)")
        await reap(kernel.process, timeout=10)
        expected = {"SIGKILL": "killed by SIGKILL", "SIGSEGV": "killed by SIGSEGV", "exit 3": "exited with code 3"}[death]
        assert expected in describe_exit(kernel.returncode())
        # the same once the fork server has reaped it and /proc has nothing left
        await wait_for(lambda: not os.path.exists(f"/proc/{kernel.pid}"), 5, what="the fork server to reap the kernel")
        assert expected in describe_exit(kernel.process.poll())
        await kernel.dispose()
    finally:
        await forker.close()


async def test_a_cancelled_start_leaves_no_kernel(tmp_path):
    forker = launcher("fork")
    try:
        await (await forker.start("python3")).dispose()  # the fork server is up
        server_pid = forker.forkservers.pids()[0]
        for delay in (0.0, 0.001, 0.005, 0.02, 0.1):
            start = asyncio.ensure_future(forker.start("python3", cwd=str(tmp_path)))
            await asyncio.sleep(delay)
            start.cancel()
            (result,) = await asyncio.gather(start, return_exceptions=True)
            if not isinstance(result, BaseException):  # it was ready before the cancel
                await result.dispose()
            await wait_for(
                lambda: not [c for c in psutil.Process(server_pid).children() if c.status() != psutil.STATUS_ZOMBIE],
                10,
                what=f"the kernel of a start cancelled after {delay} s to be gone",
            )
    finally:
        await forker.close()


async def test_kernels_die_with_their_fork_server_and_it_is_replaced():
    forker = launcher("fork")
    try:
        kernel = await forker.start("python3")
        server_pid = forker.forkservers.pids()[0]
        os.kill(server_pid, signal.SIGKILL)
        await wait_for(lambda: gone(kernel.pid), 10, what="the kernel of a killed fork server to exit")
        await reap(kernel.process, timeout=10)
        assert kernel.returncode() is not None
        await kernel.dispose()
        again = await forker.start("python3")
        assert again.forked and forker.forkservers.pids() and forker.forkservers.pids()[0] != server_pid
        assert (await execute_silently(again, "x = 1"))["status"] == "ok"
        await again.dispose()
    finally:
        await forker.close()


async def test_closing_the_launcher_ends_the_fork_server_and_its_kernels():
    forker = launcher("fork")
    kernel = await forker.start("python3")
    server_pid = forker.forkservers.pids()[0]
    await forker.close()
    await wait_for(lambda: gone(server_pid) and gone(kernel.pid), 10, what="fork server and kernel to end")
    await kernel.dispose()


async def test_kernels_it_cannot_fork_are_spawned(tmp_path):
    """Another argv than ``-m ipykernel_launcher -f`` (here ``-m ipykernel``): spawned, and it works."""
    spec_dir = tmp_path / "kernels" / "custom"
    spec_dir.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel", "-f", "{connection_file}"]
    (spec_dir / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "custom", "language": "python"}))
    forker = KernelLauncher(KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")]), kernel_start="fork")
    try:
        kernel = await forker.start("custom")
        assert not kernel.forked and kernel.durable is not None
        assert (await execute_silently(kernel, "x = 1"))["status"] == "ok"
        await kernel.dispose()
        assert not forker.forkservers.pids()
    finally:
        await forker.close()


async def test_a_task_env_changing_python_start_gets_its_own_fork_server(tmp_path):
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "taskrun_probe_mod.py").write_text("VALUE = 42\n")
    forker = launcher("fork")
    try:
        plain = await forker.start("python3")
        custom = await forker.start("python3", env={"PYTHONPATH": str(extra)})
        assert plain.forked and custom.forked and len(forker.forkservers.pids()) == 2
        # the variable took effect at interpreter start, as it would in a spawned kernel
        reply = await execute_silently(custom, "import taskrun_probe_mod; assert taskrun_probe_mod.VALUE == 42")
        assert reply["status"] == "ok", reply
        for k in (plain, custom):
            await k.dispose()
    finally:
        await forker.close()


async def test_the_pool_refills_with_forked_kernels():
    forker = launcher("fork")
    pool = KernelPool(forker, {"python3": 1})
    try:
        pool.fill()
        await wait_for(lambda: pool.ready_count("python3") == 1, 60, what="a warm kernel")
        kernel = pool.take("python3")
        assert kernel is not None and kernel.forked
        await kernel.dispose()
        pool.fill()
        await wait_for(lambda: pool.ready_count("python3") == 1, 60, what="the refill")
        assert pool._ready["python3"][0].forked
    finally:
        await pool.close()
        await forker.close()


async def test_a_forked_start_is_faster_than_a_spawned_one():
    """Not a benchmark (the machine may be loaded): forked starts must merely not be slower."""
    spawner, forker = launcher("spawn"), launcher("fork")
    try:
        await (await forker.start("python3")).dispose()  # the fork server's own start is paid once
        times: dict[str, list[float]] = {"spawn": [], "fork": []}
        for _ in range(3):
            for name, lnch in (("spawn", spawner), ("fork", forker)):
                t0 = time.monotonic()
                kernel = await lnch.start("python3")
                times[name].append(time.monotonic() - t0)
                await kernel.dispose()
        assert min(times["fork"]) < min(times["spawn"]), times
    finally:
        await forker.close()


@pytest.mark.parametrize("taskrun_config", [{"kernel_start": "fork"}], indirect=True)
async def test_the_setting_forks_task_kernels(api, taskrun, monkeypatch):
    task = await api.run(code="import os; print(os.getppid())")
    assert task["status"] == "completed", task
    launcher_ = taskrun.executor_impl.launcher
    assert launcher_.kernel_start == "fork" and launcher_.forkservers.forks >= 1
