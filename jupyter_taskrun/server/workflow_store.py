"""Workflows in the task store's SQLite file: dependency edges and the retry chain of each task.

Same connection and transactions as ``TaskStore`` (the server's loop thread only). Guarantees:

- a batch's edges are written in the transaction that inserts its tasks (``TaskRun._submit_batch_now``),
  so a task is never stored without the dependencies it waits for, nor edges without their task;
- an edge always points at a dependency's *first try* (``retry_of`` or its own id): its retries
  replace one another, the edge stays, and dependents wait for the chain's last try;
- a retry's row and its predecessor's ``retried_as`` are written in one transaction;
- a batch's ``batch_id`` rows are written with its tasks, a retry's with the retry;
- deleting a task (``cleanup.py``, the one deletion path) deletes its rows here in the same
  transaction; edges *to* it stay, so a dependent still waiting learns the dependency was deleted;
- every query here is answered by an index (``task_deps`` both ways, ``task_retries`` by task,
  by chain, and the partial index of superseded tries that the task list leaves out).
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from ..errors import StoreUnavailable
from ..models import Task
from .store import TaskStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS task_deps (
    task_id TEXT NOT NULL,      -- the dependent
    dep_id  TEXT NOT NULL,      -- the first try of what it waits for
    PRIMARY KEY (task_id, dep_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS task_deps_dep ON task_deps (dep_id, task_id);
CREATE TABLE IF NOT EXISTS task_retries (
    task_id        TEXT PRIMARY KEY,
    retry          INTEGER NOT NULL DEFAULT 0,   -- 0: the first try
    retry_of       TEXT,                         -- the chain's first try (NULL for the first)
    retried_as     TEXT,                         -- the next try, once made: this one is superseded
    not_before     REAL,                         -- a waiting retry is queued then (its delay)
    run_parameters TEXT                          -- JSON: the parameters it ran with, references resolved
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS task_retries_chain ON task_retries (retry_of, retry) WHERE retry_of IS NOT NULL;
CREATE INDEX IF NOT EXISTS task_retries_superseded ON task_retries (task_id) WHERE retried_as IS NOT NULL;
CREATE INDEX IF NOT EXISTS task_retries_delayed ON task_retries (task_id) WHERE not_before IS NOT NULL;
CREATE TABLE IF NOT EXISTS task_batches (
    task_id  TEXT PRIMARY KEY,
    batch_id TEXT NOT NULL      -- shared by the tasks of one batch submission (and their retries)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS task_batches_batch ON task_batches (batch_id);
"""

#: the SQL condition that leaves superseded tries out of a task listing (``TaskStore.list_tasks``)
NOT_SUPERSEDED = "t.id NOT IN (SELECT task_id FROM task_retries WHERE retried_as IS NOT NULL)"

_FIELDS = ("retry", "retry_of", "retried_as", "not_before", "run_parameters")


class WorkflowStore:
    def __init__(self, store: TaskStore):
        self.store = store
        try:
            store._db.executescript(SCHEMA)
        except sqlite3.Error as e:
            raise StoreUnavailable(f"cannot create the workflow tables: {e}") from e

    # -- edges ------------------------------------------------------------------

    def add_edges(self, edges: list[tuple[str, str]]) -> None:
        """(dependent, first try of its dependency) pairs, inside the caller's transaction."""
        with self.store.transaction() as db:
            db.executemany("INSERT OR IGNORE INTO task_deps (task_id, dep_id) VALUES (?, ?)", edges)

    def dependencies(self, task_id: str) -> list[str]:
        return [r[0] for r in self.store._query("SELECT dep_id FROM task_deps WHERE task_id=? ORDER BY dep_id", (task_id,))]

    def dependents(self, dep_id: str) -> list[str]:
        return [r[0] for r in self.store._query("SELECT task_id FROM task_deps WHERE dep_id=? ORDER BY task_id", (dep_id,))]

    # -- retry chains -----------------------------------------------------------

    def save(self, task: Task) -> None:
        """Write the task's retry fields (inside the caller's transaction, if any)."""
        with self.store.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO task_retries (task_id, retry, retry_of, retried_as, not_before, run_parameters) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (task.id, task.retry, task.retry_of, task.retried_as, task.not_before, _dumps(task.run_parameters)),
            )

    def add_batch(self, tasks: list[Task]) -> None:
        """Write the ``batch_id`` of tasks that have one (inside the caller's transaction)."""
        rows = [(t.id, t.batch_id) for t in tasks if t.batch_id]
        if rows:
            with self.store.transaction() as db:
                db.executemany("INSERT OR REPLACE INTO task_batches (task_id, batch_id) VALUES (?, ?)", rows)

    def annotate(self, tasks: list[Task]) -> list[Task]:
        """Fill in the retry fields and batch of tasks read from the ``tasks`` table (two indexed queries per 500)."""
        if not tasks:
            return tasks
        by_id = {t.id: t for t in tasks}
        ids = list(by_id)
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            rows = self.store._query(
                f"SELECT task_id, {', '.join(_FIELDS)} FROM task_retries WHERE task_id IN ({', '.join('?' * len(part))})", part
            )
            for r in rows:
                task = by_id[r[0]]
                task.retry, task.retry_of, task.retried_as, task.not_before = r[1] or 0, r[2], r[3], r[4]
                task.run_parameters = json.loads(r[5]) if r[5] is not None else None
            marks = ", ".join("?" * len(part))
            for task_id, batch_id in self.store._query(f"SELECT task_id, batch_id FROM task_batches WHERE task_id IN ({marks})", part):
                by_id[task_id].batch_id = batch_id
        return tasks

    def chain(self, first_id: str) -> list[str]:
        """The ids of a chain's tries after the first, in order."""
        rows = self.store._query("SELECT task_id FROM task_retries WHERE retry_of=? ORDER BY retry", (first_id,))
        return [r[0] for r in rows]

    def waiting_retries(self) -> list[tuple[str, float | None]]:
        """(id, not_before) of the retries made but not queued yet (start-up recovery)."""
        rows = self.store._query(
            "SELECT r.task_id, r.not_before FROM task_retries r INDEXED BY task_retries_delayed JOIN tasks t ON t.id = r.task_id "
            "WHERE r.not_before IS NOT NULL AND t.status = 'waiting'"
        )
        return [(r[0], r[1]) for r in rows]

    def delete(self, task_ids: list[str]) -> None:
        """Forget deleted tasks' rows and their own edges (``cleanup.py`` deletes the tasks, in the
        same transaction). Edges pointing at them stay: a waiting dependent ends cancelled, naming
        the dependency as deleted, and its own edges go when it is deleted in turn."""
        with self.store.transaction() as db:
            for task_id in task_ids:
                db.execute("DELETE FROM task_deps WHERE task_id=?", (task_id,))
                db.execute("DELETE FROM task_retries WHERE task_id=?", (task_id,))
                db.execute("DELETE FROM task_batches WHERE task_id=?", (task_id,))


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"), allow_nan=False)
