"""Deleting finished tasks: one (``DELETE /tasks/{id}``), a filtered batch (``DELETE
/tasks?status=…&before=…``) and the retention pruning (``c.TaskRun.retain_days``).

All three take one path, ``TaskCleaner.remove``: the task rows with their tags, events,
artifacts and workflow rows (edges, tries, batch: ``workflow_store.py``) go in one store transaction, then each task gets a ``deleted`` entry in the change
feed (live list views drop it) and every stream following it ends (``end``, ``deleted: true``).
Only finished tasks are deleted; an active one is refused (409: cancel it first) or skipped.
A batch is bounded (``MAX_CLEAR``) and written in chunks, the loop turning between them, so
one large clean-up never stalls the server; a batch either refuses its filter up front (400,
nothing deleted) or deletes what matched.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import InvalidSubmission, TaskStateConflict
from ..models import TERMINAL_STATUSES, TaskStatus

if TYPE_CHECKING:
    from .service import TaskRun

#: most tasks one ``clear_finished`` call deletes (the answer says ``more`` when some remain)
MAX_CLEAR = 10_000
#: tasks deleted per store transaction in a batch
CLEAR_CHUNK = 200


def finished_status(value: TaskStatus | str) -> TaskStatus:
    """A finished status by name; InvalidSubmission (400) for an active or unknown one."""
    names = ", ".join(sorted(s.value for s in TERMINAL_STATUSES))
    try:
        status = TaskStatus(value)
    except ValueError:
        raise InvalidSubmission(f"unknown status {value!r}; use finished ones: {names}") from None
    if not status.is_terminal:
        raise InvalidSubmission(f"only finished tasks are deleted, not {status.value} ones; use {names}")
    return status


@dataclass
class ClearResult:
    """What a batch deletion did: the ids it deleted, oldest first, and whether more matched."""

    ids: list[str] = field(default_factory=list)
    more: bool = False

    def to_dict(self) -> dict[str, object]:
        return {"deleted": len(self.ids), "ids": list(self.ids), "more": self.more}


class TaskCleaner:
    """The service's deletions (``TaskRun.cleaner``)."""

    def __init__(self, service: TaskRun):
        self.service = service

    def remove(self, tasks: Iterable[tuple[str, str]]) -> list[str]:
        """Delete finished tasks given as ``(id, owner)``, all in one transaction; returns the
        ids deleted (one already gone, or not finished any more in memory, is skipped)."""
        recorder = self.service.recorder
        wanted = [(task_id, owner) for task_id, owner in tasks if task_id not in recorder.active]
        recorder.flush()  # events still pending for these tasks are written before they go
        owners = dict(wanted)
        with self.service.store.transaction():  # the task rows and their workflow rows go together
            deleted = self.service.store.delete_tasks([task_id for task_id, _ in wanted])
            self.service.workflows.store.delete(deleted)
        for task_id in deleted:
            recorder.record_change("deleted", task_id, {"owner": owners[task_id]})
        recorder.flush()
        for task_id in deleted:
            self.service.broker.close_key(task_id)
        return deleted

    def delete_one(self, task_id: str) -> None:
        """``DELETE /tasks/{id}``: TaskNotFound if there is none, TaskStateConflict if it is active."""
        task = self.service.get(task_id)
        if not task.status.is_terminal:
            raise TaskStateConflict(f"task {task_id} is {task.status.value}; cancel it before deleting")
        if not self.remove([(task.id, task.owner)]):
            self.service.store.get_task(task_id)  # raises TaskNotFound: deleted meanwhile

    async def clear_finished(
        self,
        owner: str | None,
        statuses: Iterable[TaskStatus | str] = TERMINAL_STATUSES,
        before: float | None = None,
        limit: int = MAX_CLEAR,
    ) -> ClearResult:
        """Delete up to ``limit`` of ``owner``'s (None: everyone's) tasks with one of the finished
        ``statuses``, finished before ``before`` (epoch seconds; None: any time), oldest first."""
        wanted = sorted(set(map(finished_status, statuses)) or TERMINAL_STATUSES, key=lambda s: s.value)
        limit = max(1, min(int(limit), MAX_CLEAR))
        service = self.service
        service.recorder.flush()
        matched = service.store.finished_tasks(wanted, owner=owner, before=before, limit=limit + 1)
        result = ClearResult(more=len(matched) > limit)
        matched = matched[:limit]
        for start in range(0, len(matched), CLEAR_CHUNK):
            chunk = matched[start : start + CLEAR_CHUNK]
            result.ids += await service._when_store_free(self.remove, chunk)
            await asyncio.sleep(0)  # let requests and running tasks' events through between chunks
        return result

    def prune(self, now: float | None = None) -> int:
        """Delete finished tasks older than ``retain_days``; returns how many."""
        service = self.service
        if service.retain_days <= 0:
            return 0
        cutoff = (now or time.time()) - service.retain_days * 86400
        count = 0
        while True:
            batch = service.store.finished_before(cutoff)
            if not batch:
                break
            deleted = self.remove(batch)
            if not deleted:
                break  # only tasks still active in memory matched: nothing more to do now
            count += len(deleted)
        service.store.prune_changes(keep=100_000)
        service.recorder.flush()
        return count
