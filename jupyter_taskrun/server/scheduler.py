"""``Scheduler``: stored schedules fire ordinary tasks at their cron times (the domain API of schedules).

Guarantees:

- **on time**: the loop sleeps until the earliest due time (at most ``MAX_SLEEP`` at once, so a
  wall-clock jump is noticed within a second) and fires then: within milliseconds of the cron
  time on an idle server;
- **never twice**: a firing's task and the schedule's new state (``next_fire_at``,
  ``last_fired_for``) are written in one transaction, and tasks are unique per (schedule, cron
  time) in the store. A restart, a crash mid-firing or a clock jumping back cannot repeat a time;
- **missed firings** (server down, clock jumped forward, loop blocked): a firing later than
  ``c.TaskRun.schedule_misfire_grace`` is missed; ``catch_up: run_once`` fires once for the
  latest missed time, ``skip`` fires none. Either way the next time is computed from now;
- **overlap**, when the schedule's previous run is still queued or running: ``skip`` fires
  nothing (counted in ``skipped``), ``queue`` holds one firing until the previous run ends
  (stored, so a restart keeps it; further firings meanwhile are folded into it),
  ``cancel_previous`` cancels the previous run, then fires. *Run now* always runs;
- a firing that the server refuses (the template's file was deleted, the queue is full) makes no
  task: it is counted as skipped, logged, and shown as the schedule's ``last_error``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, NamedTuple

from ..cron import check_cron, check_timezone, describe, latest_run_at_or_before, next_runs
from ..errors import InvalidSubmission, TaskRunError, TaskStateConflict
from ..models import Change, Task, TaskSubmission, isotime
from ..schedule import Schedule, parse_schedule
from .broker import ALL_TASKS
from .schedule_store import ScheduleStore, is_duplicate_firing

if TYPE_CHECKING:
    from .service import TaskRun

#: how many upcoming times a schedule's JSON lists
NEXT_RUNS_SHOWN = 5


def _dt(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=timezone.utc)


def next_fire_time(s: Schedule, after: float) -> float | None:
    """The first cron time strictly after ``after`` within start_at/end_at, or None (paused, ended)."""
    if not s.enabled or (s.max_runs is not None and s.fire_count >= s.max_runs):
        return None
    zone = check_timezone(s.timezone)
    start = _dt(s.start_at) if s.start_at is not None else None
    end = _dt(s.end_at) if s.end_at is not None else None
    times = next_runs(s.cron, zone, _dt(after), 1, start_at=start, end_at=end)
    return times[0].timestamp() if times else None


class FiringPlan(NamedTuple):
    #: the cron time to fire for now (None: nothing to fire)
    fire_for: float | None
    #: where ``next_fire_at`` moves to
    next_at: float | None
    #: the due time was missed (later than the grace), so ``catch_up`` decided
    missed: bool


def plan_firing(s: Schedule, now: float, grace: float) -> FiringPlan:
    """What a due schedule does at ``now`` (pure: the policy of missed firings, unit-tested)."""
    due = s.next_fire_at
    if due is None or due > now:
        return FiringPlan(None, due, False)
    if now - due <= grace:
        return FiringPlan(due, next_fire_time(s, due), False)
    fire_for = None
    if s.catch_up == "run_once":
        zone = check_timezone(s.timezone)
        until = min(now, s.end_at) if s.end_at is not None else now
        latest = latest_run_at_or_before(s.cron, zone, _dt(until), _dt(due - 1e-3))
        fire_for = latest.timestamp() if latest is not None else due
    return FiringPlan(fire_for, next_fire_time(s, now), True)


class _Firing:
    """Stamps a firing's task and writes the schedule's new state in the task's transaction."""

    def __init__(self, scheduler: Scheduler, s: Schedule, fire_for: float | None, next_at: float | None):
        self.scheduler, self.s, self.fire_for, self.next_at = scheduler, s, fire_for, next_at

    def stamp(self, task: Task) -> None:
        task.schedule_id = self.s.id
        task.scheduled_for = self.fire_for

    def commit(self, tasks: list[Task]) -> list[Change]:
        s = self.s
        s.run_count += len(tasks)
        if self.fire_for is not None:
            s.fire_count += 1
            s.last_fired_for = self.fire_for
            s.next_fire_at = self.next_at if s.max_runs is None or s.fire_count < s.max_runs else None
            if s.pending_for == self.fire_for:
                s.pending_for = None
        s.last_error = None
        self.scheduler.store.save(s)
        return [self.scheduler.change("fired", s, tasks[0])]


class Scheduler:
    #: longest single sleep of the loop: bounds how late a wall-clock jump is noticed
    MAX_SLEEP = 1.0

    def __init__(self, service: TaskRun):
        self.service = service
        self.log = service.log
        self.store = ScheduleStore(service.store)
        self._wake: asyncio.Event | None = None
        service.recorder.on_terminal.append(self._on_task_end)

    # ------------------------------------------------------------ domain API

    @property
    def default_timezone(self) -> str:
        from ..cron import server_timezone

        return self.service.schedule_timezone or server_timezone()

    def _check_template(self, task: dict[str, Any], callback_url: str | None) -> TaskSubmission:
        """The template as ``POST /tasks`` would check it (400 naming ``task``), and the callback."""
        if callback_url is not None:
            self.service.webhooks.check_url(callback_url)
        try:
            return self.service.validate(task)
        except TaskRunError as e:
            e.args = (f"'task': {e}",)
            raise

    @staticmethod
    def _submission(task: dict[str, Any], callback_url: str | None, name: str | None) -> dict[str, Any]:
        sub = dict(task)
        if callback_url and "callback_url" not in sub:
            sub["callback_url"] = callback_url
        if name and "name" not in sub:
            sub["name"] = name
        return sub

    def create(self, data: Any, owner: str) -> Schedule:
        fields = parse_schedule(data, default_timezone=self.default_timezone)
        sub = self._check_template(fields["task"], fields.get("callback_url"))
        from .service import default_task_name

        fields.setdefault("name", None)
        fields["name"] = fields["name"] or default_task_name(sub)
        s = Schedule(id=uuid.uuid4().hex, owner=owner, **fields)
        s.next_fire_at = next_fire_time(s, time.time())
        self.service.recorder.store_writable()
        with self.service.store.transaction():
            self.store.insert(s)
            change = self.change("created", s)
        self._publish([change])
        return s

    def get(self, schedule_id: str) -> Schedule:
        return self.store.get(schedule_id)

    def owned_by(self, owner: str | None) -> list[Schedule]:
        return self.store.owned_by(owner)

    def update(self, schedule_id: str, data: Any) -> Schedule:
        s = self.store.get(schedule_id)
        fields = parse_schedule(data, current=s, default_timezone=self.default_timezone)
        if not fields:
            return s
        merged = {**s.spec(), **fields}
        if "task" in fields or "callback_url" in fields:
            self._check_template(merged["task"], merged.get("callback_url"))
        if fields.get("name", "") is None:
            fields["name"] = s.name
        for key, value in fields.items():
            setattr(s, key, value)
        s.updated_at = time.time()
        if not s.enabled:
            s.pending_for = None  # paused: nothing fires, a held firing neither
        # when changes (resumed, new cron): counted from now; times missed while paused are not caught up
        s.next_fire_at = next_fire_time(s, time.time())
        self.service.recorder.store_writable()
        with self.service.store.transaction():
            self.store.save(s)
            change = self.change("updated", s)
        self._publish([change])
        return s

    def delete(self, schedule_id: str) -> None:
        s = self.store.get(schedule_id)
        self.service.recorder.store_writable()
        with self.service.store.transaction():
            self.store.delete(schedule_id)
            change = self.service.store.append_change("schedule", s.id, {"action": "deleted", "owner": s.owner, "id": s.id})
        self._publish([change])

    async def run_now(self, schedule_id: str) -> Task:
        """A task from the template now, whatever ``overlap`` says (it counts as a run, not a firing)."""
        s = self.store.get(schedule_id)
        return await self._submit(s, None, s.next_fire_at)

    def preview(self, cron: Any, tz_name: Any) -> dict[str, Any]:
        cron = check_cron(cron)
        tz_name = tz_name or self.default_timezone
        zone = check_timezone(tz_name)
        times = next_runs(cron, zone, datetime.now(timezone.utc), NEXT_RUNS_SHOWN)
        return {"cron": cron, "timezone": tz_name, "description": describe(cron, tz_name), "next_runs": [t.isoformat() for t in times]}

    def to_json(self, s: Schedule) -> dict[str, Any]:
        out = s.to_dict()
        zone = check_timezone(s.timezone)
        runs: list[str] = []
        if s.next_fire_at is not None:
            first = datetime.fromtimestamp(s.next_fire_at, tz=zone)
            more = next_runs(
                s.cron, zone, first, NEXT_RUNS_SHOWN - 1,
                end_at=_dt(s.end_at) if s.end_at is not None else None,
            )  # fmt: skip
            left = None if s.max_runs is None else max(0, s.max_runs - s.fire_count)
            runs = [t.isoformat() for t in [first, *more]][: left if left is not None else NEXT_RUNS_SHOWN]
        out["next_runs"] = runs
        last = self.store.last_run(s.id)
        if last is None:
            out["last_run"] = None
        else:
            task_id, status, scheduled_for, created_at = last
            live = self.service.recorder.active.get(task_id)
            out["last_run"] = {
                "task_id": task_id,
                "status": live.status.value if live is not None else status,
                "scheduled_for": datetime.fromtimestamp(scheduled_for, tz=zone).isoformat() if scheduled_for else None,
                "created_at": isotime(created_at),
            }
        out["counts"] = self.store.counts(s.id)
        out["pending_for"] = datetime.fromtimestamp(s.pending_for, tz=zone).isoformat() if s.pending_for else None
        out["last_error"] = s.last_error
        return out

    def change(self, action: str, s: Schedule, task: Task | None = None) -> Change:
        """The schedule's change-feed entry (inside the caller's transaction)."""
        data: dict[str, Any] = {"action": action, "owner": s.owner, "schedule": self.to_json(s)}
        if task is not None:
            data["task_id"] = task.id
        return self.service.store.append_change("schedule", s.id, data)

    def _publish(self, changes: list[Change]) -> None:
        self.service.broker.publish(ALL_TASKS, changes)
        self.wake()

    def wake(self) -> None:
        if self._wake is not None:
            self._wake.set()

    # ------------------------------------------------------------------ loop

    async def run_forever(self) -> None:
        self._wake = asyncio.Event()
        for s in self.store.pending():
            await self._release_pending(s.id)
        while True:
            try:
                await self.tick(time.time())
            except TaskRunError as e:  # the store is busy or failing: try again on the next turn
                self.log.warning("taskrun: schedules: %s", e)
            except Exception:
                self.log.exception("taskrun: schedules: unexpected error")
            earliest = self.store.earliest_due()
            delay = self.MAX_SLEEP if earliest is None else min(max(earliest - time.time(), 0.0), self.MAX_SLEEP)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), delay)
            except asyncio.TimeoutError:
                pass

    async def tick(self, now: float) -> None:
        for s in self.store.due(now):
            plan = plan_firing(s, now, self.service.schedule_misfire_grace)
            if plan.fire_for is None:  # missed, and catch_up is skip
                self.log.info("taskrun: schedule %s (%s) missed %s; catch_up skip", s.id, s.name, isotime(s.next_fire_at))
                s.skip_count += 1
                s.next_fire_at = plan.next_at
                self._save(s, "skipped")
                continue
            try:
                await self._fire(s, plan.fire_for, plan.next_at)
            except _Skipped:
                pass  # recorded as skipped; the other due schedules still fire

    async def _fire(self, s: Schedule, fire_for: float, next_at: float | None) -> None:
        previous = [t for t in self.service.recorder.active.values() if t.schedule_id == s.id]
        if previous and s.overlap == "skip":
            s.skip_count += 1
            s.next_fire_at = next_at
            s.last_fired_for = fire_for
            self._save(s, "skipped")
            return
        if previous and s.overlap == "queue":
            s.pending_for = fire_for  # a firing held already is folded into this one
            s.next_fire_at = next_at
            self._save(s, "updated")
            return
        if previous and s.overlap == "cancel_previous":
            for t in previous:
                try:
                    await self.service.cancel(t.id)
                except TaskStateConflict:
                    pass
        await self._submit(s, fire_for, next_at)

    async def _submit(self, s: Schedule, fire_for: float | None, next_at: float | None) -> Task:
        sub = self._submission(s.task, s.callback_url, s.name)
        try:
            return await self.service.submit_scheduled(sub, s.owner, _Firing(self, s, fire_for, next_at))
        except Exception as e:
            if fire_for is None:  # run now: the caller sees the error (400, 429, 503)
                raise
            fresh = self.store.get(s.id)
            fresh.next_fire_at = next_at
            if is_duplicate_firing(e):  # that time made its task already (another life of the server)
                self.log.warning("taskrun: schedule %s already fired for %s", s.id, isotime(fire_for))
            else:
                fresh.skip_count += 1
                fresh.last_error = str(e)
                self.log.warning("taskrun: schedule %s (%s) could not fire: %s", s.id, s.name, e)
            fresh.last_fired_for = fire_for
            if fresh.pending_for == fire_for:
                fresh.pending_for = None
            self._save(fresh, "skipped")
            raise _Skipped() from e

    def _save(self, s: Schedule, action: str) -> None:
        self.service.recorder.store_writable()
        with self.service.store.transaction():
            self.store.save(s)
            change = self.change(action, s)
        self.service.broker.publish(ALL_TASKS, [change])

    # ------------------------------------------------- overlap: queue

    def _on_task_end(self, task: Task) -> None:
        if task.schedule_id is not None:
            self.service._spawn(self._release_pending(task.schedule_id))

    async def _release_pending(self, schedule_id: str) -> None:
        """Fire a held ``overlap: queue`` firing once the schedule's previous run has ended."""
        try:
            s = self.store.get(schedule_id)
        except TaskRunError:
            return
        if s.pending_for is None or not s.enabled:
            return
        if any(t.schedule_id == s.id for t in self.service.recorder.active.values()):
            return
        try:
            await self._submit(s, s.pending_for, s.next_fire_at)
        except _Skipped:
            pass
        except TaskRunError as e:
            self.log.warning("taskrun: schedule %s: held firing failed: %s", schedule_id, e)


class _Skipped(InvalidSubmission):
    """A firing the server refused (recorded as skipped); stops the caller's firing."""
