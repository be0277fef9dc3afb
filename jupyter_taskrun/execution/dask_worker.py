"""The worker side of the Dask executor: what runs inside a Dask worker process.

Nothing here runs in the Jupyter server. The server submits ``worker_main`` (and asks
``worker_stop`` through ``Client.run``); Dask pickles those functions *by reference*, so
workers import this module by its path, ``jupyter_taskrun.execution.dask_worker``: keep
these names and this path stable, and keep the module free of server-side imports.

A run, in the worker's event loop: ``_WorkerRun.execute`` starts a fresh kernel on the
worker's machine, runs the job with the same ``run_job_in_kernel`` as the local executor,
and sends its events back over the worker's ``log_event`` stream (one message per loop
turn, numbered per run so the server can reorder and de-duplicate). The kernel runs in
its own session, so a tiny per-worker *reaper* process kills this worker's kernels
(found by their marker variable) if the worker itself dies (SIGKILL, OOM killer).

``dask_setup`` is the preload hook (``--preload jupyter_taskrun.dask_executor``, which
re-exports it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from typing import Any

from ..models import TaskStatus
from .artifacts import stage_inputs
from .executor import JobResult, TaskJob, run_job_in_kernel
from .kernels import KERNEL_MARKER_ENV, KernelLauncher, task_base_env
from .runner import RunOutcome

log = logging.getLogger(__name__)

#: runs alive in this worker process, by token (for worker_stop)
_ACTIVE: dict[str, _WorkerRun] = {}
_LAUNCHERS: dict[tuple[Any, ...], KernelLauncher] = {}
_DISPOSALS: set[asyncio.Future[Any]] = set()
_MARKER: tuple[int, str] | None = None
_REAPER: subprocess.Popen | None = None


def _worker_marker() -> str:
    """Marks every kernel this worker process starts ("<marker>:<uuid>", see KernelLauncher).

    Per process (a forked worker gets its own), so a reaper only ever kills its worker's kernels.
    """
    global _MARKER, _REAPER, _LAUNCHERS
    if _MARKER is None or _MARKER[0] != os.getpid():
        if _MARKER is not None:  # forked: the parent's reaper and launchers are not ours
            _REAPER, _LAUNCHERS = None, {}
        _MARKER = (os.getpid(), f"taskrun-dask-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    return _MARKER[1]


#: runs in its own session; when the worker process dies, kills every process carrying one
#: of this worker's kernel markers (kernels, and whatever they forked)
_REAPER_CODE = r"""
import os, select, sys, time
import psutil
pid, prefix, var = int(sys.argv[1]), sys.argv[2] + ":", sys.argv[3]
try:
    fd = os.pidfd_open(pid)
    select.select([fd], [], [])
except (AttributeError, OSError):
    while psutil.pid_exists(pid):
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.Error:
            break
        time.sleep(0.1)
me = os.getpid()
for _ in range(3):
    for p in psutil.process_iter(["pid"]):
        if p.pid == me:
            continue
        try:
            if p.environ().get(var, "").startswith(prefix):
                p.kill()
        except (psutil.Error, OSError):
            pass
    time.sleep(0.2)
"""


def _ensure_reaper() -> None:
    global _REAPER
    marker = _worker_marker()
    if _REAPER is not None and _REAPER.poll() is None:
        return
    _REAPER = subprocess.Popen(
        [sys.executable, "-c", _REAPER_CODE, str(os.getpid()), marker, KERNEL_MARKER_ENV],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )


def _launcher(settings: dict[str, Any]) -> KernelLauncher:
    marker = _worker_marker()
    key = (
        settings["flush_interval"],
        settings["start_timeout"],
        settings.get("kernel_start"),
        tuple(settings["secrets"]),
        settings["pass_credentials"],
    )
    launcher = _LAUNCHERS.get(key)
    if launcher is None:
        from jupyter_client.kernelspec import KernelSpecManager

        if settings["pass_credentials"]:
            base_env = dict(os.environ)
        else:
            base_env = task_base_env(tuple(settings["secrets"]))
        base_env.pop(KERNEL_MARKER_ENV, None)
        launcher = KernelLauncher(
            KernelSpecManager(),
            base_env=base_env,
            flush_interval=settings["flush_interval"],
            start_timeout=settings["start_timeout"],
            kernel_start=settings.get("kernel_start"),  # None (an older server): this worker's default
            server_marker=marker,
            log=log,
        )
        _LAUNCHERS[key] = launcher
    return launcher


class _WorkerRun:
    """One attempt of one task inside a worker process."""

    def __init__(self, worker: Any, job: TaskJob, token: str, key: str, settings: dict[str, Any]):
        self.worker = worker
        self.job = job
        self.token = token
        self.key = key
        self.settings = settings
        self.topic = settings["topic"]
        self.n = 0
        self.batch: list[list[Any]] = []
        self.flush_handle: asyncio.Handle | None = None
        self.kernel: Any = None
        self.stop_grace: float | None = None
        self.finished = asyncio.Event()
        self._stopper: asyncio.Future[Any] | None = None

    # -- messages to the server ---------------------------------------------------

    def send(self, kind: str, **fields: Any) -> None:
        msg = {"run": self.token, "task": self.job.task_id, "n": self.n, "k": kind, **fields}
        self.n += 1
        try:
            self.worker.log_event(self.topic, msg)
        except Exception:  # worker closing: the server notices the gap and the lost worker
            log.exception("taskrun: could not send a %s message of task %s", kind, self.job.task_id)

    def emit(self, type: str, data: dict[str, Any]) -> None:
        """The runner's emit: events of one loop turn travel as one message."""
        self.batch.append([str(type), data])
        if self.flush_handle is None:
            self.flush_handle = asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        if self.flush_handle is not None:
            self.flush_handle.cancel()
            self.flush_handle = None
        if self.batch:
            batch, self.batch = self.batch, []
            self.send("ev", e=json.dumps(batch, default=str))

    # -- stopping -----------------------------------------------------------------

    def request_stop(self, grace: float) -> None:
        if self.stop_grace is not None and grace >= self.stop_grace:
            return
        self.stop_grace = grace
        kernel = self.kernel
        if kernel is None:
            return  # not started yet: execute() checks stop_grace once it is
        if grace <= 0:
            kernel.kill_now()
        elif self._stopper is None:
            self._stopper = asyncio.ensure_future(self._interrupt_then_kill(grace))

    async def _interrupt_then_kill(self, grace: float) -> None:
        kernel = self.kernel
        try:
            await kernel.km.interrupt_kernel()
        except Exception:
            pass
        try:
            await asyncio.wait_for(self.finished.wait(), grace)
        except asyncio.TimeoutError:
            pass
        kernel.kill_now()

    async def _watch_key(self) -> None:
        """Future cancellation reaches the kernel: the server stopped wanting this key."""
        try:
            tasks = self.worker.state.tasks
        except AttributeError:
            return
        while True:
            await asyncio.sleep(0.1)
            ts = tasks.get(self.key)
            if ts is None or getattr(ts, "state", None) in ("cancelled", "released", "forgotten"):
                self.request_stop(0.0)
                return

    # -- the run ------------------------------------------------------------------

    async def execute(self) -> dict[str, Any]:
        worker, job = self.worker, self.job
        self.send("start", worker=worker.address, host=socket.gethostname(), pid=os.getpid(), name=str(worker.name))
        _ensure_reaper()
        launcher = _launcher(self.settings)
        cwd = job.context.get("cwd")
        tmp = None
        if not cwd or not os.path.isdir(cwd) or job.inputs or job.outputs:
            # the server's folder does not exist here (no shared file system), or the task moves
            # files in and out (artifacts.py): a scratch one, laid out as its cwd on the server
            tmp = cwd = tempfile.mkdtemp(prefix="taskrun-")
            stage_inputs(tmp, job.staged_inputs or {})
        job.context = {**job.context, "cwd": cwd}
        watcher = asyncio.ensure_future(self._watch_key())
        kernel = None
        try:
            if self.stop_grace is None:
                kernel = await launcher.start(job.kernel_name, env=job.env, cwd=cwd)
                self.kernel = kernel
                self.send("kernel", pid=kernel.pid)
            if kernel is None or self.stop_grace is not None:
                if kernel is not None:
                    kernel.kill_now()
                reason = "stopped before its kernel started"
                error: dict[str, Any] = {
                    "ename": "TaskStopped",
                    "evalue": reason,
                    "traceback": [],
                    "cell_index": None,
                    "reason": reason,
                }
                result = JobResult(
                    outcome=RunOutcome(TaskStatus.FAILED, error=error),
                    notebook=job.notebook,
                    metrics={},
                )
            else:
                result = await run_job_in_kernel(kernel, job, self.emit, log=log)
            self.finished.set()
            result.worker = worker.address
            result.metrics.update(
                worker=worker.address,
                worker_name=str(worker.name),
                worker_host=socket.gethostname(),
                pooled_kernel=False,
                dask_key=self.key,
            )
            if tmp is not None:
                result.metrics["worker_cwd"] = tmp
            self.flush()
            return {"result": result, "sent": self.n}
        finally:
            self.finished.set()
            watcher.cancel()
            if self._stopper is not None:
                self._stopper.cancel()
            try:
                self.flush()
            except Exception:
                pass
            if kernel is not None:
                kernel.kill_now()
                # reap off the critical path: the result goes back now, the worker cleans up
                t = asyncio.ensure_future(_dispose(kernel, tmp))
                _DISPOSALS.add(t)
                t.add_done_callback(_DISPOSALS.discard)
            elif tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)


async def _dispose(kernel: Any, tmp: str | None) -> None:
    try:
        await kernel.dispose()
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def dask_setup(server: Any) -> None:
    """Preload hook: ``dask worker|scheduler ... --preload jupyter_taskrun.dask_executor``.

    Optional, and only a warm-up: importing this module pays the import of the task-running
    code (nbclient, jupyter_client) when the process starts rather than at the first task.
    The scheduler needs it too: it unpickles every submitted task graph, so it imports
    jupyter_taskrun when the first task arrives. On a worker it also starts the kernel reaper.
    """
    if type(server).__name__ == "Worker":
        _ensure_reaper()


async def worker_main(job: TaskJob, token: str, key: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The Dask task: run ``job`` in a fresh kernel on this worker's machine."""
    from distributed import get_worker

    run = _WorkerRun(get_worker(), job, token, key, settings)
    _ACTIVE[token] = run
    try:
        return await run.execute()
    finally:
        _ACTIVE.pop(token, None)


async def worker_stop(token: str, grace: float) -> bool:
    """Run on a worker by ``Client.run``: interrupt, wait ``grace`` s, then kill the run's kernel."""
    run = _ACTIVE.get(token)
    if run is None:
        return False
    run.request_stop(grace)
    return True
