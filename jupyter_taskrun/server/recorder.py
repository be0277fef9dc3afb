"""``TaskRecorder``: the one writer of tasks' status changes and events: persist, then publish.

Every event gets its task's next sequence number and waits in a batch; one
``TaskStore.append_events`` transaction per event-loop turn writes the events, the
dirty task rows and the change-feed entries, and only after the commit does
``EventBroker.publish`` hand them to subscribers. If the write fails (disk full),
nothing is published: everything is kept and retried in growing chunks, and
``store_writable`` refuses new work meanwhile (503). It also holds the in-memory copy
of every active (not terminal) task, the freshest one (progress, metrics).

What a status *means* is decided by the service and its dispatcher; this records it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from ..errors import TaskRunError, TaskStateConflict
from ..models import EventType, Task, TaskEvent, TaskStatus, check_transition
from .broker import ALL_TASKS, EventBroker
from .store import TaskStore, set_task_attempt
from .telemetry import TaskTelemetry


class TaskRecorder:
    """Batches events and status changes of the active tasks into the store, then the broker."""

    #: seconds between two progress entries of one task in the global change feed
    PROGRESS_FEED_INTERVAL = 0.25

    def __init__(
        self,
        store: TaskStore,
        broker: EventBroker,
        telemetry: TaskTelemetry,
        log: logging.Logger,
        on_status: Callable[[], None] = lambda: None,
    ):
        self.store = store
        self.broker = broker
        self.telemetry = telemetry
        self.log = log
        #: called after every status change (the service updates its gauges)
        self.on_status = on_status
        #: called with each task that has just ended (webhooks, schedules); a listener's error is logged, never raised
        self.on_terminal: list[Callable[[Task], None]] = []
        #: tasks not yet terminal, by id: the copy the running code updates
        self.active: dict[str, Task] = {}
        self._pending: list[TaskEvent] = []
        self._pending_changes: list[tuple[str, str, dict[str, Any]]] = []
        self._dirty: dict[str, Task] = {}
        self._flush_handle: asyncio.Handle | None = None
        self._progress_change_at: dict[str, float] = {}
        #: the last store write error while events are held back (None: the store writes)
        self.store_error: TaskRunError | None = None
        self._flush_chunk = 0  # 0: write everything pending at once; else recovering in chunks of this size

    # ------------------------------------------------------------------ status

    def set_status(
        self,
        task: Task,
        status: TaskStatus,
        *,
        reason: str | None = None,
        error: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        check_transition(task.status, status)
        self._record_status(task, status, reason, error, extra)

    def requeue(self, task: Task, attempt: int, reason: str) -> None:
        """Put a task that a server stop interrupted back in line as run number ``attempt``
        (the restart policy, ``recovery.py``). The one move back to ``queued``: the status
        machine (``models.TRANSITIONS``) lists forward moves only, so this does not ask it."""
        if task.status != TaskStatus.RUNNING:
            raise TaskStateConflict(f"only a running task is re-queued, not a {task.status.value} one")
        # what the interrupted run left belongs to no run any more
        task.started_at = task.finished_at = task.kernel_pid = task.exit_code = None
        task.progress = task.error = task.result = None
        task.metrics = {}
        task.values = {}
        set_task_attempt(task, attempt)
        self._record_status(task, TaskStatus.QUEUED, reason, None, {"attempt": attempt})

    def _record_status(
        self, task: Task, status: TaskStatus, reason: str | None, error: dict[str, Any] | None, extra: dict[str, Any] | None
    ) -> None:
        task.status = status
        data: dict[str, Any] = {"status": status.value}
        if reason:
            data["reason"] = reason
        if error:
            data["error"] = error
        data.update(extra or {})
        self.emit(task, EventType.STATUS, data)
        self.record_change("status", task.id, task.to_dict())
        self.flush()
        self.telemetry.status(task)
        self.on_status()

    def finish(self, task: Task, status: TaskStatus, *, reason: str | None = None, error: dict[str, Any] | None = None) -> None:
        """End a task (no-op if it already ended); a non-completed end always carries an error."""
        if task.status.is_terminal:
            return
        task.finished_at = time.time()
        if task.started_at:
            task.metrics.setdefault("wall", round(task.finished_at - task.started_at, 6))
        if error is None and status != TaskStatus.COMPLETED:
            error = {
                "ename": status.value,
                "evalue": reason or status.value,
                "traceback": [],
                "cell_index": None,
                "reason": reason or status.value,
            }
        task.error = error
        task.kernel_pid = None
        self.set_status(task, status, reason=reason, error=error)
        self.active.pop(task.id, None)
        self._progress_change_at.pop(task.id, None)
        self._progress_change_at.pop("values:" + task.id, None)
        for listener in self.on_terminal:
            try:
                listener(task)
            except Exception:  # one listener's bug must not fail the task's end or the others
                self.log.exception("taskrun: on_terminal listener %r failed for task %s", listener, task.id)

    # ------------------------------------------------------------------ events

    def emit(self, task: Task, type: str, data: dict[str, Any]) -> None:
        task.last_seq += 1
        self._pending.append(TaskEvent(task_id=task.id, seq=task.last_seq, type=str(type), data=data))
        self._dirty[task.id] = task
        if type == EventType.PROGRESS:
            task.progress = data
            now = time.monotonic()
            # the global feed is for list views: a few progress updates per second is plenty
            if now - self._progress_change_at.get(task.id, 0.0) >= self.PROGRESS_FEED_INTERVAL:
                self._progress_change_at[task.id] = now
                self.record_change("progress", task.id, {"progress": data, "id": task.id, "owner": task.owner})
        elif type == EventType.VALUE:
            task.values[data["name"]] = data["value"]
            now = time.monotonic()
            key = "values:" + task.id
            if now - self._progress_change_at.get(key, 0.0) >= self.PROGRESS_FEED_INTERVAL:  # list views: a few a second
                self._progress_change_at[key] = now
                self.record_change("values", task.id, {"values": dict(task.values), "id": task.id, "owner": task.owner})
        elif type == EventType.METRICS:
            for key in ("cpu_user", "cpu_system", "peak_rss"):
                if key in data:
                    task.metrics[key] = data[key]
        self._schedule_flush()

    def has_unwritten(self, task_id: str) -> bool:
        """Events of this task still wait for the store (a disk-full recovery): its status in memory
        is ahead of what its logs and outputs can show yet."""
        return any(ev.task_id == task_id for ev in self._pending)

    def mark_dirty(self, task: Task) -> None:
        """The task row changed without an event (e.g. its kernel pid): write it with the next batch."""
        self._dirty[task.id] = task
        self._schedule_flush()

    def record_change(self, type: str, task_id: str, data: dict[str, Any]) -> None:
        self._pending_changes.append((type, task_id, data))
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self._flush_handle is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._flush_handle = loop.call_soon(self.flush)

    def flush(self) -> None:
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
                if self.store_error is None or self._flush_chunk <= 1:
                    self.log.error("taskrun: store write failed, will retry: %s", e)
                self.store_error = e
                self._pending = events + self._pending
                self._pending_changes = changes + self._pending_changes
                self._dirty = {**dirty, **self._dirty}
                self._flush_chunk = max(1, min(self._flush_chunk or 64, len(events)) // 2)
                try:
                    self._flush_handle = asyncio.get_running_loop().call_later(0.5 if self._flush_chunk <= 1 else 0.05, self.flush)
                except RuntimeError:
                    pass
                return
            self._publish(events, written)
            if self._flush_chunk:  # recovering: bigger chunks while writes succeed
                self._flush_chunk = min(self._flush_chunk * 2, 256)
                # and the WAL is reused, not grown: else on a nearly full disk it fills what was
                # freed, and the checkpoint SQLite then runs needs room the WAL took (stuck for good)
                self.store.checkpoint("PASSIVE")
        if self.store_error is not None:
            self.log.warning("taskrun: the store writes again; all held-back events are written")
            self.store_error = None
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
        self.flush()
        error = self.store_error
        if error is not None:
            refused = type(error)(f"the task store cannot write now (held-back events wait for it): {error}")
            refused.retry_after = getattr(error, "retry_after", 5)  # type: ignore[attr-defined]
            raise refused from None
