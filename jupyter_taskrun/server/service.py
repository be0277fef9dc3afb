"""``TaskRun``: the configurable service that owns the store, queue, executor and broker.

It is the domain API the HTTP handlers call (submit, cancel, list, ...) and the
one place that decides a task's status. Event flow for every task:

    executor/runner --emit--> TaskRun._emit --batch--> TaskStore (one tx per loop turn)
                                                   \\--> EventBroker.publish (after commit)
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from jupyter_core.paths import jupyter_data_dir
from traitlets import Bool, Dict, Enum, Float, Int, List, Unicode, Union, default
from traitlets.config import LoggingConfigurable

from .._version import __version__
from .broker import ALL_TASKS, EventBroker
from ..errors import (
    InvalidSubmission,
    QueueFull,
    StoreBusy,
    TaskNotFound,
    TaskRunError,
    TaskStateConflict,
    TooManyStreams,
    UnknownKernel,
)
from ..execution.executor import Executor, JobResult, LocalExecutor, TaskJob
from ..execution.kernels import KERNEL_MARKER_ENV, KernelLauncher, KernelPool, kill_marked_processes, task_base_env
from ..models import (
    EventType,
    Task,
    TaskEvent,
    TaskStatus,
    TaskSubmission,
    check_transition,
)
from ..execution.submission import build_notebook, parameters_source, resolve_path
from ..execution.outputs import fold_outputs
from .queue import TaskQueue
from .store import TaskStore
from .telemetry import TaskTelemetry


@dataclass
class RunningTask:
    task: Task
    future: asyncio.Future[Any] | None = None
    stop_status: TaskStatus | None = None
    stop_reason: str | None = None
    timer: asyncio.TimerHandle | None = None
    started: float = field(default_factory=time.monotonic)


def _encode_notebook(nb: Any) -> bytes:
    return json.dumps(nb).encode()


def default_task_name(sub: TaskSubmission) -> str:
    if sub.name:
        return sub.name
    if sub.path:
        return os.path.basename(sub.path)
    source = sub.code if sub.code is not None else (sub.cells[0] if sub.cells else "")
    if sub.notebook is not None:
        return str(sub.notebook.get("metadata", {}).get("title") or "notebook")
    for line in (source or "").splitlines():
        if line.strip():
            line = line.strip()
            return line if len(line) <= 60 else line[:57] + "..."
    return "task"


class TaskRun(LoggingConfigurable):
    """Runs submitted code as tracked tasks, each in its own fresh kernel.

    Configure in ``jupyter_server_config.py``, e.g. ``c.TaskRun.max_concurrent_tasks = 4``.
    """

    max_concurrent_tasks = Int(2, config=True, help="How many tasks run at once (one kernel each).")
    sandbox = Enum(
        ["none", "bwrap"],
        "none",
        config=True,
        help="Run each task kernel in a sandbox: 'bwrap' (Debian's bubblewrap) gives it a private /proc "
        "and /tmp, hides the server's runtime and data folders (token, task store), and makes everything "
        "but its working folder and sandbox_writable_paths read-only. See jupyter_taskrun/sandbox.py.",
    )
    sandbox_writable_paths = List(
        Unicode(), config=True, help="Absolute folders a sandboxed task may write besides its working folder."
    )
    max_queued_tasks = Int(
        10_000, config=True, help="Bound of the waiting queue; submissions beyond it get 429 with Retry-After."
    )
    db_path = Unicode(config=True, help="SQLite file holding tasks, events and artifacts.")

    @default("db_path")
    def _db_path_default(self) -> str:
        return os.path.join(jupyter_data_dir(), "taskrun", "tasks.sqlite3")

    default_kernel_name = Unicode(
        "", config=True, help="Kernel for tasks that name none (empty: the server's default kernel)."
    )
    default_timeout = Float(
        0.0, config=True, help="Whole-task timeout in seconds for tasks that give none (0: no limit)."
    )
    default_cell_timeout = Float(0.0, config=True, help="Per-cell timeout in seconds when a task gives none (0: none).")
    retain_days = Float(30.0, config=True, help="Finished tasks older than this many days are pruned (0: keep).")
    kernel_pool_size = Union(
        [Int(), Dict(value_trait=Int(), key_trait=Unicode())],
        default_value=1,
        config=True,
        help="Warm kernels kept ready: an int for the default kernel, or {kernel_name: n}. 0 disables the pool.",
    )
    output_flush_interval = Float(
        0.005, config=True, help="Seconds between output flushes in task kernels (ipykernel's default is 0.2)."
    )
    interrupt_grace = Float(
        0.5, config=True, help="On cancel/timeout, seconds between interrupting a kernel and killing it."
    )
    max_output_bytes = Int(
        64 * 1024 * 1024, config=True, help="Stored output per task; beyond it output is dropped with a marker event."
    )
    max_notebook_stream_bytes = Int(
        4 * 1024 * 1024, config=True, help="Stream text kept in the executed notebook (the logs keep up to max_output_bytes)."
    )
    memory_limit = Int(
        0, config=True, help="Default per-task memory limit in bytes for the kernel's process tree (0: none)."
    )
    metrics_interval = Float(0.5, config=True, help="Seconds between CPU/memory samples of a task's kernel.")
    kernel_start_timeout = Float(60.0, config=True, help="Seconds a kernel may take to become ready.")
    max_request_bytes = Int(16 * 1024 * 1024, config=True, help="Largest accepted request body in bytes.")
    sse_keepalive_interval = Float(15.0, config=True, help="Seconds between SSE keep-alive comments.")
    max_streams_per_user = Int(
        100, config=True, help="Live SSE/WebSocket streams one user may hold open at once."
    )
    pass_server_credentials = Bool(
        False, config=True, help="Let task kernels inherit the server's tokens (JUPYTER_TOKEN, ...). Off by default."
    )
    extra_secret_env = List(Unicode(), config=True, help="More environment variable names to strip from task kernels.")
    executor = Enum(["local", "dask"], "local", config=True, help="Where tasks run: this machine or a Dask cluster.")
    dask_scheduler_address = Unicode("", config=True, help="Address of a running Dask scheduler (tcp://host:8786).")
    dask_cluster_factory = Unicode(
        "", config=True, help="Import string of a callable returning a Dask cluster (e.g. LocalCluster)."
    )
    retry_on_worker_loss = Bool(False, config=True, help="Re-run a task once if its Dask worker dies.")
    store_busy_timeout = Float(
        5.0,
        config=True,
        help="Seconds a submission, rerun or delete waits for a database locked by another connection "
        "before it is refused with 503 (the server keeps serving meanwhile).",
    )
    max_cells = Int(
        2000, config=True, help="Most cells one task may have ('cells', an inline or a file notebook); more: 400."
    )
    stop_grace = Float(
        5.0,
        config=True,
        help="Seconds a cancelled or timed-out task's runner may take to end after its kernel was told to stop; "
        "then the task is ended anyway (its runner is abandoned and its kernel killed).",
    )
    emit_task_events = Bool(
        False,
        config=True,
        help="Emit task status events (id, name, owner, reason) on jupyter_server's event bus. Off by default: "
        "every user allowed to subscribe to /api/events/subscribe would see every user's tasks.",
    )

    def __init__(
        self, *, root_dir: str, kernel_spec_manager: Any, default_kernel: str = "python3", event_logger: Any = None, **kw: Any
    ):
        super().__init__(**kw)
        self.telemetry = TaskTelemetry(event_logger if self.emit_task_events else None, self.log)
        self.root_dir = os.path.realpath(root_dir)
        self.kernel_spec_manager = kernel_spec_manager
        self.server_default_kernel = default_kernel
        self.store = TaskStore(self.db_path)
        self.broker = EventBroker()
        self.queue = TaskQueue(self.max_queued_tasks)
        # kernels carry this prefix: lets a restarted server find the orphans of its previous life
        self.server_marker = hashlib.sha1(os.path.realpath(self.db_path).encode()).hexdigest()[:12]
        self.executor_impl: Executor = self._make_executor()
        self._active: dict[str, Task] = {}
        self._running: dict[str, RunningTask] = {}
        self._pending: list[TaskEvent] = []
        self._pending_changes: list[tuple[str, str, dict[str, Any]]] = []
        self._dirty: dict[str, Task] = {}
        self._flush_handle: asyncio.Handle | None = None
        self._progress_change_at: dict[str, float] = {}
        self._slots: asyncio.Semaphore | None = None
        self._bg: set[asyncio.Task[Any]] = set()
        self._started = False
        self._starting: asyncio.Future[None] | None = None
        self._stopped = False
        self._streams: dict[str, int] = {}
        self._dispatching = asyncio.Event()
        self._dispatching.set()
        #: set at startup when users are not isolated from each other (``auth.isolation_warning``)
        self.isolation_warning: str | None = None
        #: the last store write error while events are held back (None: the store writes)
        self._store_error: TaskRunError | None = None
        self._flush_chunk = 0  # 0: write everything pending at once; else recovering in chunks of this size

    # ------------------------------------------------------------------ setup

    @property
    def kernel_name_default(self) -> str:
        return self.default_kernel_name or self.server_default_kernel

    def _make_sandbox(self) -> Any:
        if self.sandbox != "bwrap":
            return None
        from jupyter_core.paths import jupyter_runtime_dir

        from ..execution.sandbox import BwrapSandbox

        hidden = [jupyter_runtime_dir(), jupyter_data_dir(), os.path.dirname(os.path.abspath(self.db_path))]
        return BwrapSandbox(hidden=hidden, writable=list(self.sandbox_writable_paths))

    def _make_executor(self) -> Executor:
        secrets = tuple(self.extra_secret_env)
        base_env = dict(os.environ) if self.pass_server_credentials else task_base_env(secrets)
        base_env.pop(KERNEL_MARKER_ENV, None)
        launcher = KernelLauncher(
            self.kernel_spec_manager,
            sandbox=self._make_sandbox(),
            base_env=base_env,
            flush_interval=self.output_flush_interval,
            start_timeout=self.kernel_start_timeout,
            server_marker=self.server_marker,
            log=self.log,
        )
        if self.executor == "dask":
            from ..execution.dask_executor import DaskExecutor

            return DaskExecutor(self, launcher_settings=launcher)
        sizes = self.kernel_pool_size
        if isinstance(sizes, int):
            sizes = {self.kernel_name_default: sizes}
        pool = KernelPool(launcher, dict(sizes), cwd=self.root_dir, log=self.log) if any(v > 0 for v in sizes.values()) else None
        return LocalExecutor(launcher, pool, root_dir=self.root_dir, log=self.log)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        t = asyncio.ensure_future(coro)
        self._bg.add(t)
        t.add_done_callback(self._bg.discard)
        return t

    async def start(self) -> None:
        """Recover from the previous run, then start dispatching. Idempotent; a no-op once stopped."""
        if self._started or self._stopped:
            return
        if self._starting is not None:
            await asyncio.shield(self._starting)
            return
        self._starting = asyncio.get_running_loop().create_future()
        try:
            self._slots = asyncio.Semaphore(self.max_concurrent_tasks)
            await self._recover()
            if self._stopped:  # stop() ran while we recovered: start nothing (no kernels after stop)
                return
            await self.executor_impl.start()
            self._spawn(self._dispatch_forever())
            self._spawn(self._prune_forever())
            self._started = True
            self.log.info(
                "taskrun: %s executor, %d concurrent, store %s", self.executor_impl.kind, self.max_concurrent_tasks, self.db_path
            )
        finally:
            self._starting.set_result(None)

    async def _recover(self) -> None:
        # orphans of a server that died without cleaning up (SIGKILL): kill by marker
        killed = await asyncio.to_thread(self._kill_orphans)
        if self._stopped:
            return  # the store is closed
        if killed:
            self.log.warning("taskrun: killed %d orphan kernel process(es) of a previous server", len(killed))
        for task in self.store.tasks_with_status(TaskStatus.RUNNING):
            self._active[task.id] = task
            self._finish(task, TaskStatus.FAILED, reason="interrupted: server stopped while the task was running")
        for task in self.store.tasks_with_status(TaskStatus.QUEUED):
            self._active[task.id] = task
            self.queue.put(task.id, task.priority, force=True)
        self._flush()

    def _kill_orphans(self) -> list[int]:
        return kill_marked_processes(prefix=self.server_marker + ":")

    async def stop(self) -> None:
        """Stop dispatching, end running tasks as interrupted, kill every kernel, close the store."""
        if self._stopped:
            return
        self._stopped = True
        # taken before cancelling: _run_one's cleanup removes them from _running
        interrupted = list(self._running.values())
        for running in interrupted:
            running.stop_status = TaskStatus.FAILED
            running.stop_reason = "interrupted: server stopped while the task was running"
            self.executor_impl.kill(running.task.id)
        for t in list(self._bg):
            if t is not asyncio.current_task():
                t.cancel()
        await asyncio.gather(*[t for t in self._bg if t is not asyncio.current_task()], return_exceptions=True)
        for running in interrupted:
            task = running.task
            if not task.status.is_terminal:  # queued → failed is legal too (stopped before it ran)
                self._finish(task, TaskStatus.FAILED, reason=running.stop_reason)
        self._running.clear()
        await self.executor_impl.stop()
        self._flush()
        self.broker.close_all()
        self.store.close()

    # ------------------------------------------------------------- validation

    def validate(self, data: Any) -> TaskSubmission:
        """Parse and check a submission against this server (kernel, paths) without queueing it."""
        sub = data if isinstance(data, TaskSubmission) else TaskSubmission.from_dict(data)
        kernel_name = sub.kernel_name or self.kernel_name_default
        language = self.kernel_language(kernel_name)
        self.check_cell_count(sub)
        if sub.parameters:
            parameters_source(sub.parameters, language)  # a language papermill cannot translate: 400
        if sub.path is not None:
            resolve_path(self.root_dir, sub.path)
        if sub.cwd is not None:
            resolve_path(self.root_dir, sub.cwd or ".", want_dir=True)
        return sub

    def check_cell_count(self, sub: TaskSubmission, nb: Any = None) -> None:
        """At most ``max_cells`` cells: a huge notebook would hold the server's memory and loop."""
        cells = nb.get("cells") if nb is not None else sub.cells if sub.cells is not None else (sub.notebook or {}).get("cells")
        if isinstance(cells, list) and len(cells) > self.max_cells:
            raise InvalidSubmission(f"a task may have at most {self.max_cells} cells (c.TaskRun.max_cells), not {len(cells)}")

    def kernel_language(self, kernel_name: str) -> str:
        """The kernel spec's language (parameters are written in it); UnknownKernel if none."""
        try:
            spec = self.kernel_spec_manager.get_kernel_spec(kernel_name)
        except Exception:
            raise UnknownKernel(f"no kernel named {kernel_name!r}") from None
        return str(getattr(spec, "language", "") or "python")

    def _new_task(self, sub: TaskSubmission, owner: str, rerun_of: str | None = None) -> Task:
        metrics: dict[str, Any] = {}
        return Task(
            id=uuid.uuid4().hex,
            status=TaskStatus.QUEUED,
            submission=sub.to_dict(),
            source_kind=sub.source_kind,
            name=default_task_name(sub),
            owner=owner,
            kernel_name=sub.kernel_name or self.kernel_name_default,
            tags=list(sub.tags),
            priority=sub.priority,
            executor=self.executor_impl.kind,
            rerun_of=rerun_of,
            metrics=metrics,
        )

    # -------------------------------------------------------------- domain API

    async def _when_store_free(self, write: Any, *args: Any, **kw: Any) -> Any:
        """Run a synchronous store write, retrying while another connection holds the lock.

        Each attempt blocks the loop for at most the store's short busy timeout;
        the waiting in between is asynchronous, so the server keeps serving.
        """
        deadline = time.monotonic() + self.store_busy_timeout
        delay = 0.01
        while True:
            try:
                return write(*args, **kw)
            except StoreBusy:
                if time.monotonic() + delay > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.25)

    async def submit(self, data: Any, owner: str = "") -> Task:
        return (await self.submit_batch([data], owner))[0]

    async def submit_batch(self, items: list[Any], owner: str = "", rerun_of: str | None = None) -> list[Task]:
        """Validate every submission first; queue all or none."""
        return await self._when_store_free(self._submit_batch_now, items, owner, rerun_of)

    def _submit_batch_now(self, items: list[Any], owner: str, rerun_of: str | None) -> list[Task]:
        if not isinstance(items, list) or not items:
            raise InvalidSubmission("'tasks' must be a non-empty list of submissions")
        subs = []
        for i, item in enumerate(items):
            try:
                subs.append(self.validate(item))
            except TaskRunError as e:
                if len(items) > 1:
                    e.args = (f"tasks[{i}]: {e}",)
                raise
        self.queue.check_room(len(subs))
        tasks = [self._new_task(sub, owner, rerun_of) for sub in subs]
        # keep the feed in order (pending events go before these 'created' entries), and take no
        # new work while held-back events cannot be written (disk full: 503 with Retry-After)
        self.store_writable()
        changes = self.store.insert_tasks(tasks)
        for task in tasks:
            self._active[task.id] = task
            self.queue.put(task.id, task.priority, force=True)
            self.telemetry.status(task)
        self._update_gauges()
        self.broker.publish(ALL_TASKS, changes)
        return tasks

    async def rerun(self, task_id: str, owner: str = "") -> Task:
        old = self.get(task_id)
        return (await self.submit_batch([old.submission], owner or old.owner, rerun_of=old.id))[0]

    def get(self, task_id: str) -> Task:
        if not isinstance(task_id, str):
            raise TaskNotFound("no such task")
        task = self._active.get(task_id)
        return task if task is not None else self.store.get_task(task_id)

    def list(self, **filters: Any) -> tuple[list[Task], str | None]:
        self._flush()
        tasks, cursor = self.store.list_tasks(**filters)
        # active tasks: the in-memory copy has the freshest progress and metrics
        return [self._active.get(t.id, t) for t in tasks], cursor

    def queue_position(self, task_id: str) -> int | None:
        return self.queue.position(task_id)

    async def cancel(self, task_id: str) -> Task:
        task = self.get(task_id)
        if task.status.is_terminal:
            raise TaskStateConflict(f"task {task_id} already {task.status.value}")
        if self.queue.remove(task_id):
            self._finish(task, TaskStatus.CANCELLED, reason="cancelled while queued")
            return task
        if task_id not in self._running:
            # in no queue and with no runner: nothing else would ever end it, so end it here
            self._active.setdefault(task_id, task)
            self._finish(task, TaskStatus.CANCELLED, reason="cancelled by user")
            return task
        self._stop_running(task_id, TaskStatus.CANCELLED, "cancelled by user")
        return task

    def _stop_running(self, task_id: str, status: TaskStatus, reason: str) -> None:
        running = self._running.get(task_id)
        if running is None or running.stop_status is not None:
            return  # already stopping: cancel is idempotent
        running.stop_status = status
        running.stop_reason = reason
        self._spawn(self.executor_impl.interrupt_and_kill(task_id, self.interrupt_grace))
        self._spawn(self._end_if_wedged(running))

    async def _end_if_wedged(self, running: RunningTask) -> None:
        """A stop must end the task even if its runner never returns (a kernel that never gets
        ready, a hung executor): after the grace, the task is ended as asked and its runner cancelled."""
        await asyncio.sleep(self.interrupt_grace + self.stop_grace)
        task = running.task
        if task.status.is_terminal:
            return
        self.log.warning("taskrun: task %s did not stop within %.1f s; ending it", task.id, self.interrupt_grace + self.stop_grace)
        self.executor_impl.kill(task.id)
        self._finish(task, running.stop_status or TaskStatus.CANCELLED, reason=running.stop_reason)
        if running.future is not None and not running.future.done():
            running.future.cancel()  # its cleanup (kill, reap, release the slot) still runs

    async def delete(self, task_id: str) -> None:
        await self._when_store_free(self._delete_now, task_id)

    def _delete_now(self, task_id: str) -> None:
        task = self.get(task_id)
        if not task.status.is_terminal:
            raise TaskStateConflict(f"task {task_id} is {task.status.value}; cancel it before deleting")
        self._flush()
        self.store.delete_task(task_id)
        self._active.pop(task_id, None)
        self._record_change("deleted", task_id, {"owner": task.owner})
        self._flush()
        self.broker.close_key(task_id)

    async def wait(self, task_id: str, timeout: float | None) -> Task:
        """Return the task once it ends, or as it is after ``timeout`` seconds."""
        task = self.get(task_id)
        if task.status.is_terminal:
            return task
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.broker.subscribe(task_id, maxsize=1) as sub:
            while True:
                task = self.get(task_id)
                if task.status.is_terminal:
                    return task
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return task
                if not await sub.wait(remaining):
                    return self.get(task_id)
                sub.reset_lag()
                sub.drain()
                if sub.closed:
                    return self.get(task_id)

    def read_events(self, task_id: str, after: int = 0, limit: int | None = None) -> list[TaskEvent]:
        self.get(task_id)
        self._flush()
        return self.store.read_events(task_id, after, limit)

    def logs(self, task_id: str, stream: str | None = None, offset: int = 0) -> bytes:
        """The task's log as UTF-8, stdout and stderr merged in order (or one stream), from a byte offset."""
        self.get(task_id)
        self._flush()
        chunks: list[bytes] = []
        pos = 0
        for ev in self.store.iter_events(task_id, (EventType.LOG.value,)):
            if stream and ev.data.get("stream") != stream:
                continue
            b = ev.data.get("text", "").encode("utf-8")
            end = pos + len(b)
            if end > offset:
                chunks.append(b[max(0, offset - pos) :])
            pos = end
        return b"".join(chunks)

    def outputs(self, task_id: str) -> list[dict[str, Any]]:
        """The outputs a notebook view shows now: ``output``/``clear`` events folded (``outputs.py``)."""
        self.get(task_id)
        self._flush()
        events = self.store.iter_events(task_id, (EventType.OUTPUT.value, EventType.CLEAR.value))
        return fold_outputs((ev.type, ev.data) for ev in events)

    def executed_notebook(self, task_id: str) -> dict[str, Any] | None:
        self.get(task_id)
        blob = self.store.get_artifact(task_id, "notebook")
        return json.loads(blob) if blob else None

    def metrics(self, task_id: str) -> dict[str, Any]:
        task = self.get(task_id)
        self._flush()
        samples = [
            {"t": ev.data.get("t"), "cpu": ev.data.get("cpu"), "rss": ev.data.get("rss")}
            for ev in self.store.iter_events(task_id, (EventType.METRICS.value,))
        ]
        return {"task_id": task.id, "summary": task.metrics, "samples": samples, "cells": task.metrics.get("cell_durations", [])}

    def _update_gauges(self) -> None:
        running = sum(1 for t in self._active.values() if t.status == TaskStatus.RUNNING)
        self.telemetry.gauges(running, len(self.queue))

    def acquire_stream(self, user: str) -> None:
        """Count a live SSE/WebSocket stream against the user's limit."""
        n = self._streams.get(user, 0)
        if n >= self.max_streams_per_user:
            raise TooManyStreams(f"at most {self.max_streams_per_user} live event streams per user")
        self._streams[user] = n + 1

    def release_stream(self, user: str) -> None:
        n = self._streams.get(user, 0) - 1
        if n > 0:
            self._streams[user] = n
        else:
            self._streams.pop(user, None)

    def status(self, owner: str | None = None) -> dict[str, Any]:
        """The runner's status. With ``owner``, the counts are that user's own (running, queued,
        streams): a user must not learn how much work others have; ``None`` (an admin): everyone's."""
        active = [t for t in self._active.values() if owner is None or t.owner == owner]
        running = sum(1 for t in active if t.status == TaskStatus.RUNNING)
        queued = len(self.queue) if owner is None else sum(1 for t in active if t.id in self.queue)
        streams = sum(self._streams.values()) if owner is None else self._streams.get(owner, 0)
        store_error = self._store_error
        return {
            "version": __version__,
            "executor": self.executor_impl.info(),
            "capacity": self.max_concurrent_tasks,
            "running": running,
            "queued": queued,
            "max_queued": self.max_queued_tasks,
            "started": self._started,
            "paused": self.paused,
            "streams": streams,
            "store_writable": store_error is None,
        }

    def queue_position_for(self, task_id: str, owner: str | None = None) -> int | None:
        """The task's place in the queue; with ``owner``, counting only that user's tasks ahead."""
        if owner is None or task_id not in self.queue:
            return self.queue.position(task_id)
        # the queue's own order (priority, then FIFO), counting only the owner's queued tasks
        mine = sorted(
            e for e in self.queue._heap
            if e[2] in self.queue and (t := self._active.get(e[2])) is not None and t.owner == owner
        )  # fmt: skip
        return next((i + 1 for i, e in enumerate(mine) if e[2] == task_id), None)

    # -------------------------------------------------------------- dispatch

    def pause(self) -> None:
        """Stop starting queued tasks (running ones go on); submissions still queue."""
        self._dispatching.clear()

    def resume(self) -> None:
        self._dispatching.set()

    @property
    def paused(self) -> bool:
        return not self._dispatching.is_set()

    async def _dispatch_forever(self) -> None:
        assert self._slots is not None
        while True:
            # wait for work first, then for permission and a slot; pop only when all three hold,
            # so a pause never strands a task outside the queue
            await self.queue.wait_not_empty()
            await self._dispatching.wait()
            await self._slots.acquire()
            task_id = None
            try:
                task_id = self.queue.pop_nowait() if self._dispatching.is_set() else None
                if task_id is None:
                    self._slots.release()
                    continue
                task = self._active.get(task_id)
                if task is None or task.status != TaskStatus.QUEUED:
                    self._slots.release()
                    continue
                running = RunningTask(task=task)
                self._running[task_id] = running
                fut = self._spawn(self._run_one(running))
                running.future = fut
                fut.add_done_callback(lambda _f: self._slots.release() if self._slots else None)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the dispatcher must never die, nor keep a task it popped
                self.log.exception("taskrun: dispatching %s failed", task_id)
                self._slots.release()
                if task_id is not None:
                    self._running.pop(task_id, None)
                    self._fail_safely(task_id, f"internal error while dispatching: {type(e).__name__}: {e}")

    def _fail_safely(self, task_id: str, reason: str) -> None:
        """End a task ``failed`` whatever state the service is in; never raises."""
        try:
            task = self._active.get(task_id) or self.store.get_task(task_id)
            if not task.status.is_terminal:
                self._finish(task, TaskStatus.FAILED, reason=reason)
        except Exception:
            self.log.exception("taskrun: could not record the failure of %s", task_id)

    async def _run_one(self, running: RunningTask) -> None:
        """Run one dispatched task. Whatever fails - building the notebook (a malformed file, deep
        parameters), the executor, the service itself - the task ends terminal with the reason."""
        task = running.task
        try:
            await self._run_task(running)
        except asyncio.CancelledError:
            if not self._stopped and not task.status.is_terminal:  # stop() records its own reason
                self._finish(task, running.stop_status or TaskStatus.FAILED, reason=running.stop_reason or "the task's runner was cancelled")
            raise
        except Exception as e:
            self.log.exception("taskrun: task %s failed", task.id)
            when = "while running" if task.status == TaskStatus.RUNNING else "before it could start"
            reason = running.stop_reason or f"internal error {when}: {type(e).__name__}: {e}"
            if not task.status.is_terminal:
                try:
                    self._finish(task, running.stop_status or TaskStatus.FAILED, reason=reason[:2000])
                except Exception:
                    self.log.exception("taskrun: could not record the failure of %s", task.id)
        finally:
            self._running.pop(task.id, None)
            if not task.status.is_terminal and not self._stopped:
                self._fail_safely(task.id, "internal error: the task's runner ended without an outcome")

    async def _build(self, sub: TaskSubmission, kernel_name: str, language: str) -> tuple[Any, dict[str, Any]]:
        """``build_notebook`` in a thread, off the server's loop (files are read there too).

        Note: a thread keeps the loop turning, but CPU-bound Python in it still competes for the
        GIL; building thousands of cells must stay cheap (no per-cell nbformat validation)."""
        return await asyncio.to_thread(build_notebook, sub, self.root_dir, kernel_name, language)

    async def _run_task(self, running: RunningTask) -> None:
        task = running.task
        try:
            try:
                sub = TaskSubmission.from_dict(task.submission)
                language = self.kernel_language(task.kernel_name)
                # off the loop: reading files and building big notebooks must not stall the server
                nb, context = await self._build(sub, task.kernel_name, language)
                self.check_cell_count(sub, nb)
                if context.get("cwd") is None:
                    context["cwd"] = self.root_dir
            except TaskRunError as e:
                self._finish(task, TaskStatus.FAILED, reason=str(e))
                return
            now = time.time()
            task.started_at = now
            task.metrics["queue_wait"] = round(now - task.created_at, 6)
            self._set_status(task, TaskStatus.RUNNING)
            timeout = sub.timeout or self.default_timeout or None
            if timeout:
                running.timer = asyncio.get_running_loop().call_later(
                    timeout, self._stop_running, task.id, TaskStatus.TIMED_OUT, f"task exceeded its timeout of {timeout:g} s"
                )
            job = TaskJob(
                task_id=task.id,
                kernel_name=task.kernel_name,
                notebook=dict(nb),
                context=context,
                env=dict(sub.env),
                cell_timeout=sub.cell_timeout or self.default_cell_timeout or None,
                memory_limit=sub.memory_limit or self.memory_limit or None,
                max_output_bytes=self.max_output_bytes,
                max_notebook_stream_bytes=self.max_notebook_stream_bytes,
                metrics_interval=self.metrics_interval,
                resources=dict(sub.resources),
            )

            def emit(type: str, data: dict[str, Any]) -> None:
                self._emit(task, type, data)

            def on_kernel(pid: int | None) -> None:
                task.kernel_pid = pid
                self._dirty[task.id] = task
                if running.stop_status is not None:
                    self.executor_impl.kill(task.id)  # cancelled while its kernel was starting

            if running.stop_status is not None:
                self._finish(task, running.stop_status, reason=running.stop_reason)
                return
            try:
                result = await self.executor_impl.run(job, emit, on_kernel)
            except asyncio.CancelledError:
                raise
            except TaskRunError as e:
                self._finish(task, running.stop_status or TaskStatus.FAILED, reason=running.stop_reason or str(e))
                return
            except Exception as e:  # a broken task must never take the server down
                self.log.exception("taskrun: task %s failed in the executor", task.id)
                self._finish(task, running.stop_status or TaskStatus.FAILED, reason=running.stop_reason or f"{type(e).__name__}: {e}")
                return
            notebook_blob = await asyncio.to_thread(_encode_notebook, result.notebook)
            self._complete(task, running, result, notebook_blob)
        finally:
            if running.timer:
                running.timer.cancel()
            self._running.pop(task.id, None)
            # the task is already reported finished; its slot frees once the kernel has exited
            await self.executor_impl.release(task.id)

    def _complete(self, task: Task, running: RunningTask, result: JobResult, notebook_blob: bytes | None = None) -> None:
        task.metrics.update(result.metrics)
        task.metrics["wall"] = round(time.time() - (task.started_at or time.time()), 6)
        if result.worker:
            task.worker = result.worker
            task.metrics["worker"] = result.worker
        try:
            blob = notebook_blob if notebook_blob is not None else _encode_notebook(result.notebook)
            self.store.put_artifact(task.id, "notebook", blob)
        except TaskRunError as e:
            self.log.error("taskrun: could not store the notebook of %s: %s", task.id, e)
        outcome = result.outcome
        if running.stop_status is not None:
            # the kill we sent made the kernel "die": report what the user asked for instead
            self._finish(task, running.stop_status, reason=running.stop_reason)
            return
        task.exit_code = outcome.exit_code
        if outcome.result is not None:
            task.result = outcome.result
            self._emit(task, EventType.RESULT, outcome.result)
        if outcome.status == TaskStatus.COMPLETED:
            self._finish(task, TaskStatus.COMPLETED)
        else:
            error = outcome.error or {}
            self._finish(task, outcome.status, reason=error.get("reason"), error=error)

    # ---------------------------------------------------------- status & events

    def _set_status(self, task: Task, status: TaskStatus, *, reason: str | None = None, error: dict[str, Any] | None = None) -> None:
        check_transition(task.status, status)
        task.status = status
        data: dict[str, Any] = {"status": status.value}
        if reason:
            data["reason"] = reason
        if error:
            data["error"] = error
        self._emit(task, EventType.STATUS, data)
        self._record_change("status", task.id, task.to_dict())
        self._flush()
        self.telemetry.status(task)
        self._update_gauges()

    def _finish(self, task: Task, status: TaskStatus, *, reason: str | None = None, error: dict[str, Any] | None = None) -> None:
        if task.status.is_terminal:
            return
        task.finished_at = time.time()
        if task.started_at:
            task.metrics.setdefault("wall", round(task.finished_at - task.started_at, 6))
        if error is None and status != TaskStatus.COMPLETED:
            error = {"ename": status.value, "evalue": reason or status.value, "traceback": [], "cell_index": None, "reason": reason or status.value}
        task.error = error
        task.kernel_pid = None
        self._set_status(task, status, reason=reason, error=error)
        self._active.pop(task.id, None)
        self._progress_change_at.pop(task.id, None)

    def _emit(self, task: Task, type: str, data: dict[str, Any]) -> None:
        task.last_seq += 1
        self._pending.append(TaskEvent(task_id=task.id, seq=task.last_seq, type=str(type), data=data))
        self._dirty[task.id] = task
        if type == EventType.PROGRESS:
            task.progress = data
            now = time.monotonic()
            # the global feed is for list views: a few progress updates per second is plenty
            if now - self._progress_change_at.get(task.id, 0.0) >= 0.25:
                self._progress_change_at[task.id] = now
                self._record_change("progress", task.id, {"progress": data, "id": task.id, "owner": task.owner})
        elif type == EventType.METRICS:
            for key in ("cpu_user", "cpu_system", "peak_rss"):
                if key in data:
                    task.metrics[key] = data[key]
        self._schedule_flush()

    def _record_change(self, type: str, task_id: str, data: dict[str, Any]) -> None:
        self._pending_changes.append((type, task_id, data))
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self._flush_handle is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._flush_handle = loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Persist everything pending in one transaction, then publish it."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if not (self._pending or self._pending_changes or self._dirty):
            return
        # Normally everything pending goes in one transaction. After a failed write (disk full),
        # what was held back is written in bounded chunks, smallest first, growing while writes
        # succeed: any space that frees up is used at once, no transaction needs room for the
        # whole backlog, and the WAL stays small. Task rows go with every chunk (their last_seq
        # is ahead of the events written, never behind: a crash leaves a gap, not a conflict).
        while self._pending or self._pending_changes or self._dirty:
            chunk_size = self._flush_chunk or len(self._pending)
            events, rest = self._pending[:chunk_size], self._pending[chunk_size:]
            changes, dirty = self._pending_changes, self._dirty
            self._pending, self._pending_changes, self._dirty = rest, [], {}
            try:
                written = self.store.append_events(events, dirty.values(), changes)
            except TaskRunError as e:
                # keep everything and retry: nothing is published that is not persisted
                if self._store_error is None or self._flush_chunk <= 1:
                    self.log.error("taskrun: store write failed, will retry: %s", e)
                self._store_error = e
                self._pending = events + self._pending
                self._pending_changes = changes + self._pending_changes
                self._dirty = {**dirty, **self._dirty}
                self._flush_chunk = max(1, min(self._flush_chunk or 64, len(events)) // 2)
                try:
                    self._flush_handle = asyncio.get_running_loop().call_later(0.5 if self._flush_chunk <= 1 else 0.05, self._flush)
                except RuntimeError:
                    pass
                return
            self._publish(events, written)
            if self._flush_chunk:  # recovering: bigger chunks while writes succeed
                self._flush_chunk = min(self._flush_chunk * 2, 256)
        if self._store_error is not None:
            self.log.warning("taskrun: the store writes again; all held-back events are written")
            self._store_error = None
            self._flush_chunk = 0
            self.store.checkpoint()  # give the WAL's space back

    def _publish(self, events: list[TaskEvent], written: list[Any]) -> None:
        by_task: dict[str, list[TaskEvent]] = {}
        for ev in events:
            by_task.setdefault(ev.task_id, []).append(ev)
        for task_id, evs in by_task.items():
            self.broker.publish(task_id, evs)
        if written:
            self.broker.publish(ALL_TASKS, written)

    def store_writable(self) -> None:
        """Raise the store's last write error while events are still held back (→ 503 Retry-After)."""
        self._flush()
        error = self._store_error
        if error is not None:
            refused = type(error)(f"the task store cannot write now (held-back events wait for it): {error}")
            refused.retry_after = getattr(error, "retry_after", 5)  # type: ignore[attr-defined]
            raise refused from None

    # ---------------------------------------------------------------- pruning

    async def _prune_forever(self) -> None:
        while True:
            try:
                self.prune()
            except TaskRunError as e:
                self.log.warning("taskrun: pruning failed: %s", e)
            await asyncio.sleep(3600)

    def prune(self, now: float | None = None) -> int:
        """Delete finished tasks older than ``retain_days``; returns how many."""
        if self.retain_days <= 0:
            return 0
        cutoff = (now or time.time()) - self.retain_days * 86400
        count = 0
        while True:
            ids = self.store.finished_before(cutoff)
            if not ids:
                break
            for task_id, owner in ids:
                self.store.delete_task(task_id)
                self._record_change("deleted", task_id, {"owner": owner})
                count += 1
        self.store.prune_changes(keep=100_000)
        self._flush()
        return count
