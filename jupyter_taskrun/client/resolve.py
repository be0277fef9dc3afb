"""Which task a user means: a full id, a unique id prefix or a task name → that task.

The one resolver behind every front end that takes a task reference from a person: the CLI
(``jupyter taskrun show|logs|cancel|wait|download|rm|rerun REF``) and the ``%taskrun`` line
magic. It is pure over a client: it only calls ``client.get(id)`` and
``client.iter_tasks(page_size=...)`` (the sync ``TaskRunClient``, or anything shaped like it),
so it is tested with a stand-in client and behaves the same everywhere.

Rules, in order:

1. a task whose id is exactly ``ref`` (one ``GET``, asked only for a full id: 32 hex digits);
2. else the tasks whose id starts with ``ref`` (case-insensitive): exactly one → it; several →
   ``AmbiguousTaskRef`` listing them (give more of the id);
3. else the tasks named exactly ``ref``: the newest one (re-running a name is common);
4. else ``NoSuchTask``.

Only the newest ``MAX_SCANNED`` tasks the caller can see are searched for prefixes and names.
Both errors are ``TaskRefError``, a ``jupyter_taskrun.errors.TaskRunError`` and a ``LookupError``,
with ``ref`` and ``candidates``; their message is one line, fit for a terminal or a notebook.
Server refusals other than "no task with this id" (403, 5xx, connection lost) propagate unchanged.

``resolve_schedule`` applies the same rules to schedules (``client.get_schedule`` /
``client.list_schedules``; every schedule the caller can see is searched), raising
``NoSuchSchedule`` / ``AmbiguousScheduleRef``, which are ``TaskRefError`` too.
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import TaskRunError

__all__ = [
    "MAX_SCANNED",
    "AmbiguousScheduleRef",
    "AmbiguousTaskRef",
    "NoSuchSchedule",
    "NoSuchTask",
    "TaskRefError",
    "resolve_schedule",
    "resolve_task",
]

#: how many of the newest tasks are searched for an id prefix or a name
MAX_SCANNED = 5000
#: candidates named in an ambiguity message (the rest are counted)
_SHOWN_CANDIDATES = 5
_PAGE_SIZE = 200
#: a whole task id (the API's ids are 32 hex digits): worth one direct GET before a scan
_FULL_ID = re.compile(r"[0-9a-f]{32}")


class TaskRefError(TaskRunError, LookupError):
    """A task reference that names no task, or more than one."""

    reason = "not-found"

    def __init__(self, ref: str, message: str, candidates: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.ref = ref
        #: the tasks the reference could mean (newest first); empty when it means none
        self.candidates: list[dict[str, Any]] = list(candidates or [])


class NoSuchTask(TaskRefError):
    """No task has this id, an id starting with it, or this name."""


class AmbiguousTaskRef(TaskRefError):
    """Several tasks' ids start with this prefix."""

    reason = "ambiguous"


class NoSuchSchedule(TaskRefError):
    """No schedule has this id, an id starting with it, or this name."""


class AmbiguousScheduleRef(TaskRefError):
    """Several schedules' ids start with this prefix."""

    reason = "ambiguous"


def describe_candidate(task: dict[str, Any]) -> str:
    """``ab12cd34 'train' completed``: enough to tell tasks apart in one line."""
    name = task.get("name")
    label = f" {name!r}" if name else ""
    return f"{str(task.get('id', '?'))[:12]}{label} {task.get('status', '?')}"


def _is_not_found(error: Exception) -> bool:
    # the client's HTTP error, recognised by shape: this module imports no transport
    return getattr(error, "status", None) == 404


def resolve_task(client: Any, ref: str) -> dict[str, Any]:
    """The task ``ref`` means (see the module docstring); raises ``TaskRefError`` otherwise."""
    ref = (ref or "").strip()
    if not ref:
        raise NoSuchTask(ref, "give a task id, a unique id prefix or a task name")
    if _FULL_ID.fullmatch(ref.lower()):
        try:
            return client.get(ref.lower())
        except TaskRunError as e:
            if not _is_not_found(e):
                raise
    prefix = ref.lower()
    by_id: list[dict[str, Any]] = []
    by_name: list[dict[str, Any]] = []
    scanned = 0
    for task in client.iter_tasks(page_size=_PAGE_SIZE):
        task_id = str(task.get("id", ""))
        if task_id.lower().startswith(prefix):
            by_id.append(task)
        elif task.get("name") == ref:
            by_name.append(task)
        scanned += 1
        if scanned >= MAX_SCANNED:
            break
    if len(by_id) == 1:
        return by_id[0]
    if by_id:
        shown = ", ".join(describe_candidate(t) for t in by_id[:_SHOWN_CANDIDATES])
        more = f" and {len(by_id) - _SHOWN_CANDIDATES} more" if len(by_id) > _SHOWN_CANDIDATES else ""
        raise AmbiguousTaskRef(ref, f"{ref!r} is the start of {len(by_id)} task ids ({shown}{more}); give more of the id", by_id)
    if by_name:
        return by_name[0]  # newest first: the latest run of that name
    where = f" among the newest {MAX_SCANNED} tasks" if scanned >= MAX_SCANNED else ""
    raise NoSuchTask(ref, f"no task {ref!r}: no task has this id, an id starting with it, or this name{where}")


def resolve_schedule(client: Any, ref: str) -> dict[str, Any]:
    """The schedule ``ref`` means: the rules of ``resolve_task``, over ``client.list_schedules()``."""
    ref = (ref or "").strip()
    if not ref:
        raise NoSuchSchedule(ref, "give a schedule id, a unique id prefix or a schedule name")
    if _FULL_ID.fullmatch(ref.lower()):
        try:
            return client.get_schedule(ref.lower())
        except TaskRunError as e:
            if not _is_not_found(e):
                raise
    schedules = client.list_schedules()  # newest first
    prefix = ref.lower()
    by_id = [s for s in schedules if str(s.get("id", "")).lower().startswith(prefix)]
    if len(by_id) == 1:
        return by_id[0]
    if by_id:
        shown = ", ".join(_describe_schedule(s) for s in by_id[:_SHOWN_CANDIDATES])
        more = f" and {len(by_id) - _SHOWN_CANDIDATES} more" if len(by_id) > _SHOWN_CANDIDATES else ""
        raise AmbiguousScheduleRef(ref, f"{ref!r} is the start of {len(by_id)} schedule ids ({shown}{more}); give more of the id", by_id)
    by_name = [s for s in schedules if s.get("name") == ref]
    if by_name:
        return by_name[0]
    raise NoSuchSchedule(ref, f"no schedule {ref!r}: no schedule has this id, an id starting with it, or this name")


def _describe_schedule(schedule: dict[str, Any]) -> str:
    name = schedule.get("name")
    return f"{str(schedule.get('id', '?'))[:12]}" + (f" {name!r}" if name else "")
