"""Workflows: tasks that wait for other tasks, take their values, and are retried with back-off.

``Workflows`` (``TaskRun.workflows``) is called by the service at submission, by the dispatcher
when a task starts, at start-up recovery, and as the recorder's first ``on_terminal`` listener.
Edges and retry chains live in SQLite (``workflow_store.py``). Guarantees:

* **All or nothing.** A batch's graph is checked before anything is stored: an unknown id,
  another user's task (the same words: nothing about it is revealed), an unknown or duplicate
  key, a reference to a task that is not a dependency, a cycle, or more than
  ``c.TaskRun.max_workflow_tasks`` tasks → ``InvalidSubmission`` (400) naming ``tasks[i].field``.
  The tasks and their edges are written in one transaction.
* **Waiting.** A task with dependencies that have not all ended is ``waiting`` (``waiting_for``
  lists them). It is queued, with its own priority, once all have *completed*. When one fails,
  times out or is cancelled, the task ends ``cancelled`` with a reason naming it; with
  ``on_dependency_failure: "run"`` it is queued anyway. A dependency is always a chain of tries:
  dependents wait for its last try (an edge points at the first).
* **Values downstream.** A parameter ``{"$value": "KEY_OR_ID.name"}`` is the dependency's latest
  recorded value ``name``; ``{"$result": "KEY_OR_ID"}`` its last expression: the result's
  ``application/json`` if it has one, else its ``text/plain`` read as a Python literal
  (``ast.literal_eval``: numbers, strings, lists, dicts, booleans, None), else no result. They are
  resolved when the task is dispatched; a missing one fails the task before it starts, naming
  the parameter. The resolved parameters are stored (``Task.run_parameters``: the task JSON's
  ``parameters``; ``parameter_refs`` keeps the references).
* **Retries.** A ``failed`` or ``timed_out`` try that had started, with ``retries`` left, is tried
  again as a new task row (``retry`` n, ``retry_of`` the first try; the old row gets
  ``retried_as``), after ``retry_delay * retry_backoff ** (n - 1)`` seconds (waiting until then).
  Never after a cancel, a refusal before the start (bad input, a missing value), or a server
  stop (that is ``recovery.py``'s ``requeue_on_restart``). ``attempt`` is unrelated: it counts
  re-dispatches of one row after server stops.
* **Restart.** Waiting tasks are re-evaluated from the stored edges and statuses; a retry's
  delay is kept by its stored ``not_before``.
"""

from __future__ import annotations

import ast
import asyncio
import json
import re
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import InvalidSubmission, TaskNotFound, TaskRunError
from ..models import Task, TaskStatus, TaskSubmission, is_reference
from .broker import ALL_TASKS
from .recovery import INTERRUPTED
from .workflow_store import WorkflowStore

if TYPE_CHECKING:
    from .service import TaskRun

_TASK_ID = re.compile(r"^[0-9a-f]{32}$")
#: at most this many characters of a ``text/plain`` result are read as a literal
MAX_RESULT_TEXT = 1_000_000


@dataclass
class Plan:
    """A batch's graph, checked: per entry, its dependencies as ("new", index) or ("id", first try)."""

    deps: list[list[tuple[str, Any]]] = field(default_factory=list)
    edges: list[tuple[str, str]] = field(default_factory=list)
    #: tasks to cancel right after the insert (a dependency had already ended badly)
    doomed: list[tuple[Task, str]] = field(default_factory=list)


def _label(i: int, n: int, name: str) -> str:
    return f"tasks[{i}].{name}" if n > 1 else name


def _ref_target(value: dict[str, str]) -> tuple[str, str, str | None]:
    """(kind, key or id, value name) of a reference."""
    kind, text = next(iter(value.items()))
    if kind == "$value":
        target, _, name = text.partition(".")
        return kind, target, name or None
    return kind, text, None


class Workflows:
    """Dependencies, references and retries of the service's tasks."""

    def __init__(self, service: TaskRun):
        self.service = service
        self.store = WorkflowStore(service.store)
        self.log = service.log
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._work: deque[str] = deque()
        self._working = False
        # first: a retry must exist before the scheduler or anyone else looks at what is still active
        service.recorder.on_terminal.insert(0, self.on_terminal)

    # ------------------------------------------------------------ submission

    def plan(self, subs: list[TaskSubmission], owner: str) -> Plan:
        """Check a batch's graph; raise InvalidSubmission naming the entry and field."""
        n = len(subs)
        keys: dict[str, int] = {}
        for i, sub in enumerate(subs):
            if sub.key is not None:
                if sub.key in keys:
                    raise InvalidSubmission(f"{_label(i, n, 'key')}: the key {sub.key!r} is already used by tasks[{keys[sub.key]}]")
                keys[sub.key] = i
        plan = Plan()
        existing: set[str] = set()
        for i, sub in enumerate(subs):
            deps: list[tuple[str, Any]] = []
            for ref in sub.depends_on:
                if ref in keys:
                    if keys[ref] == i:
                        raise InvalidSubmission(f"{_label(i, n, 'depends_on')}: a task cannot depend on itself ({ref!r})")
                    deps.append(("new", keys[ref]))
                    continue
                task = self._own_task(ref, owner)
                if task is None:
                    what = "no task of yours with id" if _TASK_ID.match(ref) else "no entry of this batch with key"
                    raise InvalidSubmission(f"{_label(i, n, 'depends_on')}: {what} {ref!r}")
                first = task.retry_of or task.id
                existing.add(first)
                deps.append(("id", first))
            targets = set(sub.depends_on)
            for pname, value in sub.parameters.items():
                if isinstance(value, dict) and len(value) == 1 and next(iter(value)).startswith("$") and not is_reference(value):
                    raise InvalidSubmission(
                        f'{_label(i, n, "parameters")}.{pname}: a reference is {{"$value": "KEY.name"}} or {{"$result": "KEY"}}'
                    )
                if not is_reference(value):
                    continue
                kind, target, vname = _ref_target(value)
                if target not in targets:
                    raise InvalidSubmission(f"{_label(i, n, 'parameters')}.{pname}: {target!r} is not in this task's depends_on")
                if kind == "$value" and not vname:
                    raise InvalidSubmission(f"{_label(i, n, 'parameters')}.{pname}: '$value' names KEY_OR_ID.value_name")
            plan.deps.append(deps)
        cycle = _find_cycle([[j for kind, j in deps if kind == "new"] for deps in plan.deps])
        if cycle:
            names = " → ".join(subs[j].key or f"tasks[{j}]" for j in cycle)
            raise InvalidSubmission(f"{_label(cycle[0], n, 'depends_on')}: the dependencies form a cycle: {names}")
        limit = self.service.max_workflow_tasks
        if any(plan.deps) and n + len(existing) > limit:
            raise InvalidSubmission(f"a workflow may have at most {limit} tasks (c.TaskRun.max_workflow_tasks), not {n + len(existing)}")
        return plan

    def _own_task(self, task_id: str, owner: str) -> Task | None:
        if not _TASK_ID.match(task_id):
            return None
        try:
            task = self.service.get(task_id)
        except TaskNotFound:
            return None
        return task if task.owner == owner else None

    def apply(self, plan: Plan, tasks: list[Task]) -> None:
        """Give the new tasks their dependencies (ids, first tries), references (ids) and first status."""
        for task, deps in zip(tasks, plan.deps):
            ids = [tasks[ref].id if kind == "new" else ref for kind, ref in deps]
            if not ids:
                continue
            by_name = dict(zip(task.submission.get("depends_on") or [], ids))
            task.submission["depends_on"] = ids
            params = task.submission.get("parameters") or {}
            for pname, value in params.items():
                if is_reference(value):
                    kind, target, vname = _ref_target(value)
                    params[pname] = {kind: by_name[target] + (f".{vname}" if vname else "")}
            plan.edges += [(task.id, dep) for dep in ids]
            task.status = TaskStatus.WAITING
            failed: list[tuple[str, Task | None]] = []
            for (kind, _), dep in zip(deps, ids):
                last, final = (None, False) if kind == "new" else self._final(dep)
                if not final:
                    task.waiting_for.append(dep)
                elif _bad(last):
                    failed.append((dep, last))
            if failed and task.submission.get("on_dependency_failure") != "run":
                plan.doomed.append((task, _reason(failed[0][1], failed[0][0])))
            elif not task.waiting_for:
                task.status = TaskStatus.QUEUED

    def after_insert(self, plan: Plan) -> None:
        for task, reason in plan.doomed:
            self.service.recorder.finish(task, TaskStatus.CANCELLED, reason=reason)

    # --------------------------------------------------------------- ending

    def on_terminal(self, task: Task) -> None:
        """A try ended: retry it, or let its dependents move (iteratively: long chains never recurse)."""
        if self._retry(task) is not None:
            return
        self._work.extend(self.store.dependents(task.retry_of or task.id))
        if self._working:
            return
        self._working = True
        try:
            while self._work:
                dependent = self.service.recorder.active.get(self._work.popleft())
                if dependent is not None and dependent.status == TaskStatus.WAITING:
                    self.recheck(dependent)
        finally:
            self._working = False

    def recheck(self, task: Task) -> None:
        """Recompute a waiting task's ``waiting_for`` from the store; cancel, queue, or keep it waiting."""
        waiting, failed = [], []
        for dep in self.store.dependencies(task.id):
            last, final = self._final(dep)
            if not final:
                waiting.append(dep)
            elif _bad(last):
                failed.append((dep, last))
        task.waiting_for = waiting
        if failed and task.submission.get("on_dependency_failure") != "run":
            self.service.recorder.finish(task, TaskStatus.CANCELLED, reason=_reason(failed[0][1], failed[0][0]))
        elif not waiting:
            delay = (task.not_before or 0) - time.time()
            if delay > 0:
                self._arm(task.id, delay)
            else:
                self._queue(task)
        else:  # still waiting: list views see what for
            self.service.recorder.record_change("status", task.id, task.to_dict())

    def _final(self, first_id: str) -> tuple[Task | None, bool]:
        """The last try of a dependency's chain, and whether the chain has ended (None: deleted)."""
        chain = self.store.chain(first_id)
        try:
            last = self.service.get(chain[-1] if chain else first_id)
        except TaskNotFound:
            return None, True
        return last, last.status.is_terminal and last.retried_as is None

    def _queue(self, task: Task) -> None:
        if task.not_before is not None:
            task.not_before = None
            self.store.save(task)
        self.service.recorder.set_status(task, TaskStatus.QUEUED, reason="retry delay over" if task.retry else "dependencies completed")
        self.service.queue.put(task.id, task.priority, force=True)

    def _arm(self, task_id: str, delay: float) -> None:
        old = self._timers.pop(task_id, None)
        if old is not None:
            old.cancel()
        try:
            self._timers[task_id] = asyncio.get_running_loop().call_later(delay, self._release, task_id)
        except RuntimeError:  # no loop (a synchronous caller): the next start's recovery queues it
            pass

    def _release(self, task_id: str) -> None:
        self._timers.pop(task_id, None)
        task = self.service.recorder.active.get(task_id)
        if task is not None and task.status == TaskStatus.WAITING and not self.service.stopped:
            task.not_before = None
            self.recheck(task)

    # -------------------------------------------------------------- retries

    def retry_delay(self, sub: dict[str, Any], retry: int) -> float:
        """Seconds before try ``retry`` (1: the first retry): retry_delay × retry_backoff^(retry - 1)."""
        return float(sub.get("retry_delay") or 0) * float(sub.get("retry_backoff") or 1) ** (retry - 1)

    def _retry(self, task: Task) -> Task | None:
        service = self.service
        sub = task.submission or {}
        retries = int(sub.get("retries") or 0)
        if task.status not in (TaskStatus.FAILED, TaskStatus.TIMED_OUT) or task.retry >= retries:
            return None
        interrupted = str((task.error or {}).get("reason") or "").startswith(INTERRUPTED)
        if task.started_at is None or service.stopped or interrupted or task.retried_as is not None:
            return None  # refused before it started, or a server stop (recovery.py's business): not a failed try
        try:
            new = service._new_task(service.validate(service.variables.resubmission(task)), task.owner, task.rerun_of)
        except TaskRunError as e:
            self.log.warning("taskrun: task %s cannot be retried: %s", task.id, e)
            return None
        new.retry, new.retry_of, new.schedule_id = task.retry + 1, task.retry_of or task.id, task.schedule_id
        new.batch_id = task.batch_id
        delay = self.retry_delay(sub, new.retry)
        new.status = TaskStatus.WAITING if delay > 0 else TaskStatus.QUEUED
        new.not_before = time.time() + delay if delay > 0 else None
        try:
            with service.store.transaction():
                service.variables.store_inputs(new)
                changes = service.store.insert_tasks([new])
                task.retried_as = new.id
                self.store.save(task)
                self.store.save(new)
                self.store.add_batch([new])
        except TaskRunError as e:
            task.retried_as = None
            self.log.error("taskrun: could not store the retry of %s: %s", task.id, e)
            return None
        service.recorder.active[new.id] = new
        service.broker.publish(ALL_TASKS, changes)
        service.recorder.record_change("status", task.id, task.to_dict())  # lists drop the superseded try
        if delay > 0:
            self._arm(new.id, delay)
        else:
            service.queue.put(new.id, new.priority, force=True)
        service.log.info("taskrun: task %s %s; retry %d of %d is %s", task.id, task.status.value, new.retry, retries, new.id)
        return new

    # ------------------------------------------------------------- dispatch

    def resolve_parameters(self, task: Task, parameters: dict[str, Any]) -> dict[str, Any]:
        """The parameters with every reference replaced by its value (InvalidSubmission naming it if missing)."""
        if not any(is_reference(v) for v in parameters.values()):
            return parameters
        resolved = dict(parameters)
        for pname, value in parameters.items():
            if is_reference(value):
                resolved[pname] = self._resolve(pname, value)
        task.run_parameters = resolved
        self.store.save(task)
        self.service.recorder.mark_dirty(task)
        return resolved

    def _resolve(self, pname: str, ref: dict[str, str]) -> Any:
        kind, target, vname = _ref_target(ref)
        last, _ = self._final(target)
        if last is None:
            raise InvalidSubmission(f"parameter {pname!r}: its dependency {target} no longer exists")
        if kind == "$value":
            if vname not in last.values:
                raise InvalidSubmission(f"parameter {pname!r}: task {last.id} ({last.name}) recorded no value {vname!r}")
            return last.values[vname]
        return result_value(last, pname)

    # ------------------------------------------------------------ recovery

    def recover(self, tasks: list[Task]) -> None:
        """Start-up, before interrupted tasks are decided: the active tasks' retry fields, and what
        each waiting one waits for."""
        self.store.annotate(tasks)
        for task in (t for t in tasks if t.status == TaskStatus.WAITING):
            task.waiting_for = [dep for dep in self.store.dependencies(task.id) if not self._final(dep)[1]]

    def settle(self) -> None:
        """Start-up, last: queue, cancel or time the waiting tasks whose dependencies ended meanwhile."""
        for task in [t for t in self.service.recorder.active.values() if t.status == TaskStatus.WAITING]:
            if not task.waiting_for:
                self.recheck(task)

    # ---------------------------------------------------------- user views

    def cascade(self, task: Task) -> list[Task]:
        """The waiting tasks that depend on ``task``, directly or not (for a cascading cancel), each
        after every one depending on it: cancelled in this order, each ends with the cascade's own
        reason, not as the dependent of one cancelled just before (a depth-first post-order)."""
        root = task.retry_of or task.id
        active = self.service.recorder.active
        entered: set[str] = set()
        order: list[Task] = []
        stack: list[tuple[str, bool]] = [(root, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                if node != root:
                    order.append(active[node])
                continue
            if node in entered:
                continue
            entered.add(node)
            stack.append((node, True))
            for dep_id in self.store.dependents(node):
                dependent = active.get(dep_id)
                if dependent is not None and dep_id not in entered and dependent.status == TaskStatus.WAITING:
                    stack.append((dep_id, False))
        return order

    def attempts(self, task: Task) -> list[Task]:
        """Every try of the task's chain, first first."""
        first = task.retry_of or task.id
        out = []
        for task_id in [first, *self.store.chain(first)]:
            try:
                out.append(self.service.get(task_id))
            except TaskNotFound:
                continue
        return out

    def graph(self, task: Task) -> dict[str, list[Task]]:
        """The last tries of what the task depends on and of what depends on it."""
        first = task.retry_of or task.id
        ups = [last for dep in self.store.dependencies(first) for last, _ in [self._final(dep)] if last is not None]
        downs = [last for dep in self.store.dependents(first) for last, _ in [self._final(dep)] if last is not None]
        return {"depends_on": ups, "dependents": downs}

    def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()


def result_value(task: Task, pname: str) -> Any:
    """A task's last expression as JSON: application/json, else text/plain as a Python literal."""
    data = (task.result or {}).get("data") or {}
    if "application/json" in data:
        return data["application/json"]
    text = data.get("text/plain")
    if isinstance(text, str) and len(text) <= MAX_RESULT_TEXT:
        try:
            value = ast.literal_eval(text)
            json.dumps(value, allow_nan=False)
            return value
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            pass
    raise InvalidSubmission(f"parameter {pname!r}: task {task.id} ({task.name}) has no JSON result (its last expression)")


def _bad(task: Task | None) -> bool:
    return task is None or task.status != TaskStatus.COMPLETED


def _reason(task: Task | None, dep_id: str) -> str:
    if task is None:
        return f"dependency {dep_id} was deleted"
    return f"dependency {task.name!r} ({task.id}) {task.status.value}"


def _find_cycle(edges: list[list[int]]) -> list[int] | None:
    """A cycle of the graph (node i depends on edges[i]) as a node path that returns to its start, or None."""
    state = [0] * len(edges)  # 0 unseen, 1 on the path, 2 done
    for start in range(len(edges)):
        if state[start]:
            continue
        path: list[int] = []
        stack: list[tuple[int, int]] = [(start, 0)]
        while stack:
            node, i = stack.pop()
            if i == 0:
                state[node] = 1
                path.append(node)
            if i < len(edges[node]):
                stack.append((node, i + 1))
                nxt = edges[node][i]
                if state[nxt] == 1:
                    return path[path.index(nxt) :] + [nxt]
                if state[nxt] == 0:
                    stack.append((nxt, 0))
            else:
                state[node] = 2
                path.pop()
    return None
