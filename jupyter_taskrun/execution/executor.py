"""Executors run prepared jobs; the service decides what runs when and what it means.

``LocalExecutor`` runs kernels on the server's machine inside the server's event
loop; ``DaskExecutor`` (``dask_executor.py``) runs the same ``NotebookRunner``
on Dask workers. Both report through the same ``emit`` callback, so events take
the same persist-then-publish path whichever runs the task.

Swappable: the service builds ``c.TaskRun.executor_class`` (any ``Executor`` subclass) as
``executor_class(context, parent=service)``; ``ExecutorContext`` is everything an executor
gets from the server, so an executor never imports the server side.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import nbformat
from traitlets.config import LoggingConfigurable

from ..models import TaskStatus
from . import variables
from .artifacts import Caps, Collected, collect_outputs
from .kernels import KernelLauncher, KernelPool, TaskKernel
from .runner import Emit, NotebookRunner, RunOutcome
from .submission import setup_code

log = logging.getLogger(__name__)


@dataclass
class TaskJob:
    """Everything needed to run a task, and nothing server-specific: it can be pickled to a worker."""

    task_id: str
    kernel_name: str
    notebook: dict[str, Any]
    context: dict[str, Any]
    env: dict[str, str] = field(default_factory=dict)
    cell_timeout: float | None = None
    memory_limit: int | None = None
    max_output_bytes: int = 64 * 1024 * 1024
    max_notebook_stream_bytes: int = 4 * 1024 * 1024
    metrics_interval: float = 0.5
    resources: dict[str, float] = field(default_factory=dict)
    #: pickled notebook variables to restore before the first cell, and names to send back (``variables.py``)
    variables_in: dict[str, bytes] = field(default_factory=dict)
    variables_out: list[str] = field(default_factory=list)
    max_variable_bytes: int = 32 * 1024 * 1024
    max_task_variable_bytes: int = 128 * 1024 * 1024
    #: ``outputs`` globs, collected from the task's cwd once its kernel is gone (``artifacts.py``)
    outputs: list[str] = field(default_factory=list)
    artifact_caps: Caps = field(default_factory=Caps)
    #: ``inputs``, relative to the cwd; a Dask task gets their bytes as ``staged_inputs`` (path -> bytes)
    inputs: list[str] = field(default_factory=list)
    staged_inputs: dict[str, bytes] | None = None
    max_staged_input_bytes: int = 256 * 1024 * 1024


@dataclass
class JobResult:
    outcome: RunOutcome
    notebook: dict[str, Any]
    metrics: dict[str, Any]
    worker: str | None = None
    #: one entry per ``variables_out`` name once the task completed (``variables.collect``); None: not collected
    variables: list[dict[str, Any]] | None = None
    #: the ``outputs`` files (None: the task asked for none)
    artifacts: Collected | None = None


KernelCallback = Callable[[int | None], None]


@dataclass
class ExecutorContext:
    """What the service hands every executor it builds."""

    #: configured for this server (environment minus credentials, sandbox, marker, timeouts)
    launcher: KernelLauncher
    #: the server's root: default working folder of task kernels
    root_dir: str
    #: warm kernels to keep ready, by kernel name (``c.TaskRun.kernel_pool_size``)
    pool_sizes: dict[str, int] = field(default_factory=dict)
    #: more variable names stripped from task kernels' environment (``c.TaskRun.extra_secret_env``)
    secret_env: tuple[str, ...] = ()
    #: task kernels inherit the server's credentials (``c.TaskRun.pass_server_credentials``)
    pass_credentials: bool = False


class Executor(LoggingConfigurable):
    """Interface every executor implements (``c.TaskRun.executor_class``).

    Built once per server as ``cls(context, parent=service)``; its own settings are
    traits of the subclass (``c.DaskExecutor.*``).
    """

    kind = "abstract"

    def __init__(self, context: ExecutorContext, **kw: Any):
        super().__init__(**kw)
        self.context = context

    async def start(self) -> None:  # pragma: no cover - interface
        pass

    async def stop(self) -> None:  # pragma: no cover - interface
        pass

    async def run(self, job: TaskJob, emit: Emit, on_kernel: KernelCallback) -> JobResult:
        raise NotImplementedError

    async def release(self, task_id: str) -> None:
        """Return once the job's kernel is gone: only then may another task take its slot."""

    async def interrupt_and_kill(self, task_id: str, grace: float) -> None:
        """Hard-stop a running job: interrupt, wait ``grace`` seconds, then kill its kernel."""
        raise NotImplementedError

    def kill(self, task_id: str) -> None:
        """Kill a job's kernel now, without waiting (server stop, cancel during kernel start)."""
        raise NotImplementedError

    def info(self) -> dict[str, Any]:
        return {"kind": self.kind}


async def run_job_in_kernel(kernel: TaskKernel, job: TaskJob, emit: Emit, *, log: logging.Logger = log) -> JobResult:
    """The one code path that runs a job in a kernel; used by every executor.

    Always kills the kernel before returning (synchronous, microseconds); the
    caller reaps it with ``kernel.dispose()`` off the critical path. A cancel
    kills the kernel rather than the coroutine, so the partial notebook and
    metrics still come back in the JobResult.
    """
    nb = nbformat.from_dict(job.notebook)
    context = dict(job.context)
    if kernel.cwd and context.get("cwd") == kernel.cwd:
        context["cwd"] = None  # already there: skip a setup round trip
    runner = NotebookRunner(
        kernel,
        nb,
        emit,
        setup_code=variables.join_setup(setup_code(context), variables.restore_code(list(job.variables_in), job.variables_out)),
        cell_timeout=job.cell_timeout,
        max_output_bytes=job.max_output_bytes,
        max_notebook_stream_bytes=job.max_notebook_stream_bytes,
        memory_limit=job.memory_limit,
        sample_interval=job.metrics_interval,
        log=log,
    )
    runner.is_script = bool(context.get("file"))
    try:
        await variables.stage_inputs(kernel, job.variables_in)
        outcome = await runner.run()
        sent_back = None
        if job.variables_out and outcome.status == TaskStatus.COMPLETED and kernel.is_alive():
            sent_back = await variables.collect(kernel, job.variables_out, job.max_variable_bytes, job.max_task_variable_bytes)
        metrics = runner.metrics_summary()
        metrics["kernel_start"] = round(kernel.start_seconds, 6)
        result = JobResult(outcome=outcome, notebook=dict(runner.nb), metrics=metrics, variables=sent_back)
    finally:
        kernel.kill_now()
    cwd = job.context.get("cwd") or kernel.cwd
    if job.outputs and cwd:  # after the kill: no file changes while it is read
        result.artifacts = await asyncio.to_thread(collect_outputs, cwd, job.outputs, job.artifact_caps)
    return result


async def _dispose_next_turn(kernel: TaskKernel) -> None:
    await asyncio.sleep(0)
    await kernel.dispose()


class LocalExecutor(Executor):
    """Runs each job in a fresh kernel on this machine, from a warm pool when it can."""

    kind = "local"

    def __init__(self, context: ExecutorContext, **kw: Any):
        super().__init__(context, **kw)
        self.launcher = context.launcher
        self.root_dir = context.root_dir
        sizes = {name: n for name, n in context.pool_sizes.items() if n > 0}
        self.pool: KernelPool | None = KernelPool(self.launcher, sizes, cwd=self.root_dir, log=self.log) if sizes else None
        self._kernels: dict[str, TaskKernel] = {}
        self._teardowns: dict[str, asyncio.Future[None]] = {}

    async def start(self) -> None:
        if self.pool:
            self.pool.fill()

    async def stop(self) -> None:
        for kernel in list(self._kernels.values()):
            kernel.kill_now()
        if self.pool:
            await self.pool.close()
        await asyncio.gather(*self._teardowns.values(), return_exceptions=True)
        await self.launcher.close()  # its fork servers, if any (kernel_start = "fork")

    def _take_kernel(self, job: TaskJob) -> TaskKernel | None:
        # a pooled kernel was started with the base environment: a job that needs
        # other variables takes a fresh kernel, so no env ever leaks either way
        if self.pool is None or job.env:
            return None
        return self.pool.take(job.kernel_name)

    async def run(self, job: TaskJob, emit: Emit, on_kernel: KernelCallback) -> JobResult:
        kernel = self._take_kernel(job)
        pooled = kernel is not None
        if kernel is None:
            kernel = await self.launcher.start(job.kernel_name, env=job.env, cwd=job.context.get("cwd") or self.root_dir)
        self._kernels[job.task_id] = kernel
        on_kernel(kernel.pid)
        try:
            result = await run_job_in_kernel(kernel, job, emit, log=self.log)
            result.metrics["kernel_start"] = 0.0 if pooled else result.metrics["kernel_start"]
            result.metrics["pooled_kernel"] = pooled
            return result
        finally:
            self._kernels.pop(job.task_id, None)
            kernel.kill_now()  # run_job_in_kernel killed it; this covers a failure before it ran
            # reaped one loop turn later: the task's end (recorded by the caller in this same turn)
            # reaches its waiters before the teardown's first, synchronous step runs
            teardown = asyncio.ensure_future(_dispose_next_turn(kernel))
            self._teardowns[job.task_id] = teardown
            teardown.add_done_callback(lambda _f: self._teardowns.pop(job.task_id, None))

    async def release(self, task_id: str) -> None:
        teardown = self._teardowns.get(task_id)
        if teardown is not None:
            await asyncio.shield(teardown)
        if self.pool:
            self.pool.fill()  # replace after the task ends, not while it runs

    async def interrupt_and_kill(self, task_id: str, grace: float) -> None:
        kernel = self._kernels.get(task_id)
        if kernel is None:
            return
        if grace > 0:
            try:
                await kernel.km.interrupt_kernel()
            except Exception:
                pass
            for _ in range(int(grace / 0.02)):
                if task_id not in self._kernels:
                    return
                await asyncio.sleep(0.02)
        kernel.kill_now()

    def kill(self, task_id: str) -> None:
        kernel = self._kernels.get(task_id)
        if kernel is not None:
            kernel.kill_now()

    def running_pids(self) -> list[int]:
        return [k.pid for k in self._kernels.values() if k.pid]

    def info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"kind": self.kind}
        if self.pool:
            info["pool"] = {"ready": self.pool.ready_count(), "hits": self.pool.hits, "misses": self.pool.misses}
        return info
