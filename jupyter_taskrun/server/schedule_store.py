"""Schedules in the task store's SQLite file: their table, and the queries about their tasks.

Same connection and transactions as ``TaskStore`` (it runs on the server's loop thread only).
Guarantees:

- a schedule's client fields are one JSON column, its firing state plain columns, written
  together: a firing's task insert and the schedule's new firing state share one transaction
  (``Scheduler._fire``), so a crash leaves either both or neither;
- ``tasks (schedule_id, scheduled_for)`` is unique: no restart, clock jump or race can make two
  tasks for one cron time of one schedule (the second insert fails; the scheduler skips it).
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from ..errors import ScheduleNotFound, StoreUnavailable
from ..schedule import FIELDS, Schedule
from .store import TaskStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS schedules (
    n              INTEGER PRIMARY KEY AUTOINCREMENT,
    id             TEXT NOT NULL UNIQUE,
    owner          TEXT NOT NULL,
    spec           TEXT NOT NULL,       -- the client fields (schedule.FIELDS) as JSON
    created_at     REAL NOT NULL,
    updated_at     REAL NOT NULL,
    next_fire_at   REAL,                -- NULL: paused or ended
    last_fired_for REAL,
    pending_for    REAL,
    run_count      INTEGER NOT NULL DEFAULT 0,
    fire_count     INTEGER NOT NULL DEFAULT 0,
    skip_count     INTEGER NOT NULL DEFAULT 0,
    last_error     TEXT
);
CREATE INDEX IF NOT EXISTS schedules_next ON schedules (next_fire_at);
CREATE INDEX IF NOT EXISTS schedules_owner ON schedules (owner, n);
CREATE UNIQUE INDEX IF NOT EXISTS tasks_schedule_time ON tasks (schedule_id, scheduled_for) WHERE scheduled_for IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_schedule_n ON tasks (schedule_id, n) WHERE schedule_id IS NOT NULL;
"""

_COLUMNS = (
    "id, owner, spec, created_at, updated_at, next_fire_at, last_fired_for, pending_for, run_count, fire_count, skip_count, last_error"
)


def is_duplicate_firing(e: BaseException) -> bool:
    """The unique (schedule_id, scheduled_for) index refused a second task for one cron time."""
    cause: BaseException | None = e
    while cause is not None:
        if isinstance(cause, sqlite3.IntegrityError) and "scheduled_for" in str(cause):
            return True
        cause = cause.__cause__
    return False


class ScheduleStore:
    def __init__(self, store: TaskStore):
        self.store = store
        # after TaskStore.__init__: the tasks table has its schedule columns by now
        try:
            store._db.executescript(SCHEMA)
        except sqlite3.Error as e:
            raise StoreUnavailable(f"cannot create the schedules table: {e}") from e

    # -- rows ----------------------------------------------------------------

    @staticmethod
    def _row(s: Schedule) -> tuple:
        return (
            s.id, s.owner, json.dumps(s.spec()), s.created_at, s.updated_at, s.next_fire_at,
            s.last_fired_for, s.pending_for, s.run_count, s.fire_count, s.skip_count, s.last_error,
        )  # fmt: skip

    @staticmethod
    def _from_row(r: tuple) -> Schedule:
        spec = json.loads(r[2])
        return Schedule(
            id=r[0], owner=r[1], **{k: spec[k] for k in FIELDS if k in spec}, created_at=r[3], updated_at=r[4],
            next_fire_at=r[5], last_fired_for=r[6], pending_for=r[7], run_count=r[8], fire_count=r[9], skip_count=r[10],
            last_error=r[11],
        )  # fmt: skip

    def insert(self, s: Schedule) -> None:
        with self.store.transaction() as db:
            db.execute(f"INSERT INTO schedules ({_COLUMNS}) VALUES ({', '.join('?' * 12)})", self._row(s))

    def save(self, s: Schedule) -> None:
        """Write every field of an existing schedule (inside the caller's transaction, if any)."""
        with self.store.transaction() as db:
            cur = db.execute(
                "UPDATE schedules SET spec=?, updated_at=?, next_fire_at=?, last_fired_for=?, pending_for=?, "
                "run_count=?, fire_count=?, skip_count=?, last_error=? WHERE id=?",
                (json.dumps(s.spec()), s.updated_at, s.next_fire_at, s.last_fired_for, s.pending_for,
                 s.run_count, s.fire_count, s.skip_count, s.last_error, s.id),
            )  # fmt: skip
            if cur.rowcount == 0:
                raise ScheduleNotFound(f"no schedule with id {s.id!r}")

    def delete(self, schedule_id: str) -> None:
        with self.store.transaction() as db:
            if db.execute("DELETE FROM schedules WHERE id=?", (schedule_id,)).rowcount == 0:
                raise ScheduleNotFound(f"no schedule with id {schedule_id!r}")

    def get(self, schedule_id: str) -> Schedule:
        rows = self.store._query(f"SELECT {_COLUMNS} FROM schedules WHERE id=?", (schedule_id,))
        if not rows:
            raise ScheduleNotFound(f"no schedule with id {schedule_id!r}")
        return self._from_row(rows[0])

    def owned_by(self, owner: str | None = None) -> list[Schedule]:
        """Newest first; ``owner`` None: everyone's."""
        if owner is None:
            rows = self.store._query(f"SELECT {_COLUMNS} FROM schedules ORDER BY n DESC")
        else:
            rows = self.store._query(f"SELECT {_COLUMNS} FROM schedules WHERE owner=? ORDER BY n DESC", (owner,))
        return [self._from_row(r) for r in rows]

    def due(self, now: float) -> list[Schedule]:
        rows = self.store._query(
            f"SELECT {_COLUMNS} FROM schedules WHERE next_fire_at IS NOT NULL AND next_fire_at <= ? ORDER BY next_fire_at", (now,)
        )
        return [self._from_row(r) for r in rows]

    def earliest_due(self) -> float | None:
        rows = self.store._query("SELECT MIN(next_fire_at) FROM schedules")
        return rows[0][0] if rows else None

    def pending(self) -> list[Schedule]:
        rows = self.store._query(f"SELECT {_COLUMNS} FROM schedules WHERE pending_for IS NOT NULL")
        return [self._from_row(r) for r in rows]

    # -- its tasks -------------------------------------------------------------

    def last_run(self, schedule_id: str) -> tuple[str, str, float | None, float] | None:
        """(task id, status, scheduled_for, created_at) of the schedule's newest task, if any."""
        rows = self.store._query(
            "SELECT id, status, scheduled_for, created_at FROM tasks WHERE schedule_id=? ORDER BY n DESC LIMIT 1", (schedule_id,)
        )
        return tuple(rows[0]) if rows else None  # type: ignore[return-value]

    def counts(self, schedule_id: str) -> dict[str, int]:
        rows = self.store._query("SELECT status, COUNT(*) FROM tasks WHERE schedule_id=? GROUP BY status", (schedule_id,))
        return {status: n for status, n in rows}

    def describe_runs(self, schedule_id: str) -> dict[str, Any]:
        last = self.last_run(schedule_id)
        return {"last": last, "counts": self.counts(schedule_id)}
