"""``TaskRun``: the configurable service, and the domain API the HTTP handlers call.

It owns the store, queue, broker and executor, and offers submit, cancel, rerun,
delete, list, the read views (events, logs, outputs, notebook, metrics), the live
streams (``follow``, ``follow_changes``) and status. Its parts, one module each:

    dispatch.py  Dispatcher: queued task -> slot -> executor -> outcome (a running task's lifecycle)
    recorder.py  TaskRecorder: status changes and events, persisted (one tx per loop turn) then published
    follow.py    replay-then-live streams over the broker and the store (no gap, no duplicate)
    recovery.py  RestartPolicy: start-up recovery; interrupted tasks failed, or re-queued if they opted in
    cleanup.py   TaskCleaner: deleting finished tasks (one, a filtered batch, retention pruning)
    workflows.py Workflows: dependencies (waiting), $value/$result parameters, retries with back-off

Event flow for every task:

    executor/runner --emit--> TaskRecorder.emit --batch--> TaskStore (one tx per loop turn)
                                                       \\--> EventBroker.publish (after commit)

The executor is swappable (``c.TaskRun.executor_class``, jupyter-scheduler style); it gets an
``ExecutorContext`` and never sees the service.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterable
from typing import Any

from jupyter_core.paths import jupyter_data_dir

from .._version import __version__
from ..errors import InvalidSubmission, StoreBusy, TaskNotFound, TaskRunError, TaskStateConflict, TooManyStreams, UnknownKernel
from ..execution.executor import Executor, ExecutorContext
from ..execution.kernels import KERNEL_MARKER_ENV, KernelLauncher, task_base_env
from ..execution.outputs import fold_outputs
from ..execution.submission import parameters_source, resolve_path
from ..models import TERMINAL_STATUSES, EventType, Task, TaskEvent, TaskStatus, TaskSubmission
from .broker import ALL_TASKS, EventBroker
from .cleanup import MAX_CLEAR, ClearResult, TaskCleaner
from .dispatch import Dispatcher, RunningTask
from .follow import FeedItem, Follower, FollowItem, changes, task_events, until_terminal
from .queue import TaskQueue
from .recorder import TaskRecorder
from .recovery import INTERRUPTED, RestartPolicy
from .results import TaskResults
from .scheduler import Scheduler
from .settings import DEPRECATED_EXECUTOR_ALIASES, EXECUTOR_SHORTHANDS, TaskRunSettings  # noqa: F401  (EXECUTOR_SHORTHANDS: re-exported)
from .store import TaskStore
from .telemetry import TaskTelemetry
from .variables import TaskVariables
from .webhooks import WebhookNotifier
from .workflows import Workflows


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


class TaskRun(TaskRunSettings):
    """Runs submitted code as tracked tasks, each in its own fresh kernel.

    Configure in ``jupyter_server_config.py``, e.g. ``c.TaskRun.max_concurrent_tasks = 4``.
    """

    def __init__(self, *, root_dir: str, kernel_spec_manager: Any, default_kernel: str = "python3", event_logger: Any = None, **kw: Any):
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
        self.recorder = TaskRecorder(self.store, self.broker, self.telemetry, self.log, on_status=self._update_gauges)
        self.executor_impl: Executor = self._make_executor()
        self.dispatcher = Dispatcher(self)
        self.restart_policy = RestartPolicy(self)
        self.cleaner = TaskCleaner(self)
        self.webhooks = WebhookNotifier(self)
        self.scheduler = Scheduler(self)
        self.variables = TaskVariables(self)
        self.results = TaskResults(self)  # recorded values, output files, HTML (results.py)
        self.workflows = Workflows(self)  # dependencies, references, retries (workflows.py)
        self._bg: set[asyncio.Task[Any]] = set()
        self._started = False
        self._starting: asyncio.Future[None] | None = None
        self.stopped = False
        self._streams: dict[str, int] = {}
        #: set at startup when users are not isolated from each other (``auth.isolation_warning``)
        self.isolation_warning: str | None = None

    # the dispatcher's and recorder's state, under the names it had on the service
    @property
    def _active(self) -> dict[str, Task]:
        return self.recorder.active

    @property
    def _running(self) -> dict[str, RunningTask]:
        return self.dispatcher.running

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
            kernel_start=self.kernel_start,
            log=self.log,
        )
        sizes = self.kernel_pool_size
        if isinstance(sizes, int):
            sizes = {self.kernel_name_default: sizes}
        context = ExecutorContext(
            launcher=launcher,
            root_dir=self.root_dir,
            pool_sizes=dict(sizes),
            secret_env=secrets,
            pass_credentials=self.pass_server_credentials,
        )
        cls = self.executor_class
        return cls(context, parent=self, log=self.log, **self._deprecated_executor_options(cls))

    def _deprecated_executor_options(self, cls: type[Executor]) -> dict[str, Any]:
        """The old ``c.TaskRun.dask_*`` values, as the executor's traits (its own settings win)."""
        own = self.config[cls.__name__] if cls.__name__ in self.config else {}
        traits = cls.class_traits(config=True)
        return {
            DEPRECATED_EXECUTOR_ALIASES[old]: getattr(self, old)
            for old in self.__dict__.get("_deprecated_set", ())
            if DEPRECATED_EXECUTOR_ALIASES[old] in traits and DEPRECATED_EXECUTOR_ALIASES[old] not in own
        }

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        t = asyncio.ensure_future(coro)
        self._bg.add(t)
        t.add_done_callback(self._bg.discard)
        return t

    async def start(self) -> None:
        """Recover from the previous run, then start dispatching. Idempotent; a no-op once stopped."""
        if self._started or self.stopped:
            return
        if self._starting is not None:
            await asyncio.shield(self._starting)
            return
        self._starting = asyncio.get_running_loop().create_future()
        try:
            await self.restart_policy.recover()
            if self.stopped:  # stop() ran while we recovered: start nothing (no kernels after stop)
                return
            await self.executor_impl.start()
            self._spawn(self.dispatcher.run_forever())
            self._spawn(self.scheduler.run_forever())
            self._spawn(self._prune_forever())
            self._started = True
            self.log.info("taskrun: %s executor, %d concurrent, store %s", self.executor_impl.kind, self.max_concurrent_tasks, self.db_path)
        finally:
            self._starting.set_result(None)

    async def stop(self) -> None:
        """Stop dispatching, end running tasks as interrupted (or re-queue them: ``recovery.py``),
        kill every kernel, close the store."""
        if self.stopped:
            return
        self.stopped = True
        interrupted = self.dispatcher.interrupt_all(INTERRUPTED)
        for t in list(self._bg):
            if t is not asyncio.current_task():
                t.cancel()
        await asyncio.gather(*[t for t in self._bg if t is not asyncio.current_task()], return_exceptions=True)
        self.restart_policy.on_stop(interrupted)
        self.workflows.stop()
        await self.webhooks.stop()  # before the store closes: each cancelled delivery records why
        self.dispatcher.running.clear()
        await self.executor_impl.stop()
        self.recorder.flush()
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
        self.webhooks.check_url(sub.callback_url)
        self.variables.check(sub, language)
        self.results.check(sub)
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

    async def submit_batch(self, items: list[Any], owner: str = "", rerun_of: str | None = None) -> builtins.list[Task]:
        """Validate every submission first; queue all or none."""
        return await self._when_store_free(self._submit_batch_now, items, owner, rerun_of)

    async def submit_scheduled(self, data: Any, owner: str, firing: Any) -> Task:
        """A schedule's task (``scheduler.py``): ``firing`` stamps it and writes the schedule's new
        state in the task's own transaction, so a firing is stored whole or not at all."""
        return (await self._when_store_free(self._submit_batch_now, [data], owner, None, firing))[0]

    def _submit_batch_now(self, items: list[Any], owner: str, rerun_of: str | None, firing: Any = None) -> builtins.list[Task]:
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
        plan = self.workflows.plan(subs, owner)
        self.queue.check_room(len(subs))
        tasks = [self._new_task(sub, owner, rerun_of) for sub in subs]
        self.workflows.apply(plan, tasks)  # dependencies: ids, references, waiting or queued
        if len(tasks) > 1:  # one batch: the sidebar groups it (workflow_store.py keeps the id)
            batch_id = uuid.uuid4().hex
            for task in tasks:
                task.batch_id = batch_id
        # keep the feed in order (pending events go before these 'created' entries), and take no
        # new work while held-back events cannot be written (disk full: 503 with Retry-After)
        self.recorder.store_writable()
        with self.store.transaction():
            if firing is not None:
                for task in tasks:
                    firing.stamp(task)
            for task in tasks:
                self.variables.store_inputs(task)  # input pickles become artifacts, not part of the task row
            changes = self.store.insert_tasks(tasks)
            self.workflows.store.add_edges(plan.edges)
            self.workflows.store.add_batch(tasks)
            if firing is not None:
                changes += firing.commit(tasks)
        for task in tasks:
            self.recorder.active[task.id] = task
            if task.status == TaskStatus.QUEUED:
                self.queue.put(task.id, task.priority, force=True)
            self.telemetry.status(task)
        self._update_gauges()
        self.broker.publish(ALL_TASKS, changes)
        self.workflows.after_insert(plan)  # a dependency that had already failed: cancelled, naming it
        return tasks

    async def rerun(self, task_id: str, owner: str = "") -> Task:
        old = self.get(task_id)
        return (await self.submit_batch([self.variables.resubmission(old)], owner or old.owner, rerun_of=old.id))[0]

    def get(self, task_id: str) -> Task:
        if not isinstance(task_id, str):
            raise TaskNotFound("no such task")
        task = self.recorder.active.get(task_id)
        return task if task is not None else self.workflows.store.annotate([self.store.get_task(task_id)])[0]

    def list(self, **filters: Any) -> tuple[list[Task], str | None]:
        self.recorder.flush()
        tasks, cursor = self.store.list_tasks(**filters)
        # active tasks: the in-memory copy has the freshest progress and metrics
        return self.workflows.store.annotate([self.recorder.active.get(t.id, t) for t in tasks]), cursor

    def queue_position(self, task_id: str) -> int | None:
        return self.queue.position(task_id)

    async def cancel(self, task_id: str, cascade: bool = False) -> Task:
        """Cancel a task; ``cascade``: first its waiting dependents, direct or not (``workflows.py``)."""
        task = self.get(task_id)
        if task.status.is_terminal:
            raise TaskStateConflict(f"task {task_id} already {task.status.value}")
        for dependent in self.workflows.cascade(task) if cascade else ():
            self.recorder.finish(dependent, TaskStatus.CANCELLED, reason=f"cancelled with its dependency {task_id}")
        if self.queue.remove(task_id):
            self.recorder.finish(task, TaskStatus.CANCELLED, reason="cancelled while queued")
            return task
        if task_id not in self.dispatcher.running:
            # in no queue and with no runner: nothing else would ever end it, so end it here
            self.recorder.active.setdefault(task_id, task)
            self.recorder.finish(task, TaskStatus.CANCELLED, reason="cancelled by user")
            return task
        self.dispatcher.stop_running(task_id, TaskStatus.CANCELLED, "cancelled by user")
        return task

    async def delete(self, task_id: str) -> None:
        """Delete a finished task with its events and artifacts (``cleanup.py``)."""
        await self._when_store_free(self.cleaner.delete_one, task_id)

    async def clear_finished(
        self,
        owner: str | None,
        statuses: Iterable[TaskStatus | str] = TERMINAL_STATUSES,
        before: float | None = None,
        limit: int = MAX_CLEAR,
    ) -> ClearResult:
        """Delete ``owner``'s finished tasks (None: everyone's) with one of ``statuses``, finished
        before ``before`` (epoch seconds), oldest first, at most ``limit`` (``cleanup.py``)."""
        return await self.cleaner.clear_finished(owner, statuses, before, limit)

    async def wait(self, task_id: str, timeout: float | None) -> Task:
        """Return the task once it ends, or as it is after ``timeout`` seconds."""
        return await until_terminal(self, task_id, timeout)

    def read_events(self, task_id: str, after: int = 0, limit: int | None = None) -> builtins.list[TaskEvent]:
        self.get(task_id)
        self.recorder.flush()
        return self.store.read_events(task_id, after, limit)

    def logs(self, task_id: str, stream: str | None = None, offset: int = 0) -> bytes:
        """The task's log as UTF-8, stdout and stderr merged in order (or one stream), from a byte offset."""
        self.get(task_id)
        self.recorder.flush()
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

    def outputs(self, task_id: str) -> builtins.list[dict[str, Any]]:
        """The outputs a notebook view shows now: ``output``/``clear`` events folded (``outputs.py``)."""
        self.get(task_id)
        self.recorder.flush()
        events = self.store.iter_events(task_id, (EventType.OUTPUT.value, EventType.CLEAR.value))
        return fold_outputs((ev.type, ev.data) for ev in events)

    def executed_notebook(self, task_id: str) -> dict[str, Any] | None:
        self.get(task_id)
        blob = self.store.get_artifact(task_id, "notebook")
        return json.loads(blob) if blob else None

    def metrics(self, task_id: str) -> dict[str, Any]:
        task = self.get(task_id)
        self.recorder.flush()
        samples = [
            {"t": ev.data.get("t"), "cpu": ev.data.get("cpu"), "rss": ev.data.get("rss")}
            for ev in self.store.iter_events(task_id, (EventType.METRICS.value,))
        ]
        return {"task_id": task.id, "summary": task.metrics, "samples": samples, "cells": task.metrics.get("cell_durations", [])}

    def _update_gauges(self) -> None:
        running = sum(1 for t in self.recorder.active.values() if t.status == TaskStatus.RUNNING)
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
        active = [t for t in self.recorder.active.values() if owner is None or t.owner == owner]
        running = sum(1 for t in active if t.status == TaskStatus.RUNNING)
        queued = len(self.queue) if owner is None else sum(1 for t in active if t.id in self.queue)
        streams = sum(self._streams.values()) if owner is None else self._streams.get(owner, 0)
        store_error = self.recorder.store_error
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
            if e[2] in self.queue and (t := self.recorder.active.get(e[2])) is not None and t.owner == owner
        )  # fmt: skip
        return next((i + 1 for i, e in enumerate(mine) if e[2] == task_id), None)

    # -------------------------------------------------------------- dispatch

    # ----------------------------------------------------------- live streams

    def follow(self, task_id: str, after: int = 0) -> Follower[FollowItem]:
        """One task's events after seq ``after``: replayed, then live, then a ``StreamEnd``.

        Subscribed at once (before any replay), so nothing published from now on is missed;
        iterate it (``async for``), ``close()`` it when the client leaves, ``aclose()`` it after.
        """
        sub = self.broker.subscribe(task_id)
        return Follower(sub, task_events(self, task_id, after, self.sse_keepalive_interval))

    def follow_changes(self, after: int | None = None, owner: str | None = None) -> Follower[FeedItem]:
        """The change feed after ``after`` (None: from now, first yielding ``FeedStart``), limited
        to ``owner``'s tasks (None: everyone's, for admins). Never ends by itself."""
        sub = self.broker.subscribe(ALL_TASKS)
        return Follower(sub, changes(self, after, owner, self.sse_keepalive_interval))

    # -------------------------------------------------------------- dispatch

    def pause(self) -> None:
        """Stop starting queued tasks (running ones go on); submissions still queue."""
        self.dispatcher.pause()

    def resume(self) -> None:
        self.dispatcher.resume()

    @property
    def paused(self) -> bool:
        return self.dispatcher.paused

    def store_writable(self) -> None:
        """Raise the store's last write error while events are still held back (→ 503 Retry-After)."""
        self.recorder.store_writable()

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
        return self.cleaner.prune(now)
