"""Embedded SQLite persistence of tasks, their event logs, artifacts and the change feed.

One connection, used from the server's event loop thread only. Statements are
short and indexed (sub-millisecond), so they run inline; the hot path (events)
is batched by ``EventSink`` into one transaction per loop iteration.
WAL mode lets readers in other processes (a second server, a test) look in
while the server writes.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import time
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import InvalidSubmission, StoreBusy, StoreUnavailable, TaskNotFound
from ..models import Change, Task, TaskEvent, TaskStatus

SCHEMA_VERSION = 1

#: SQLite integers are 64-bit signed; a larger Python int raises OverflowError, not sqlite3.Error
SQLITE_MAX_INT = 2**63 - 1
#: times are shown to the microsecond (``models.isotime``): half of it is the rounding of a shown time
HALF_MICROSECOND = 5e-7
#: ``list_tasks(sort_field=...)``: the sortable task fields and their (indexed) SQL expressions
_FIELD_ORDER = {
    "created": "t.created_at",
    "name": "t.name",
    "status": "t.status",
    "finished": "t.finished_at",
    "duration": "(t.finished_at - t.started_at)",
}

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (
    n            INTEGER PRIMARY KEY AUTOINCREMENT,   -- insertion order: stable newest-first paging
    id           TEXT NOT NULL UNIQUE,
    name         TEXT NOT NULL,
    status       TEXT NOT NULL,
    owner        TEXT NOT NULL,
    kernel_name  TEXT NOT NULL,
    source_kind  TEXT NOT NULL,
    submission   TEXT NOT NULL,
    tags         TEXT NOT NULL,
    priority     INTEGER NOT NULL,
    created_at   REAL NOT NULL,
    started_at   REAL,
    finished_at  REAL,
    progress     TEXT,
    error        TEXT,
    metrics      TEXT NOT NULL,
    result       TEXT,
    executor     TEXT NOT NULL,
    worker       TEXT,
    rerun_of     TEXT,
    last_seq     INTEGER NOT NULL DEFAULT 0,
    kernel_pid   INTEGER,
    exit_code    INTEGER,
    attempt      INTEGER NOT NULL DEFAULT 1   -- 1 + how often a restart re-queued the task
);
CREATE INDEX IF NOT EXISTS tasks_status_n ON tasks (status, n);
CREATE INDEX IF NOT EXISTS tasks_owner_n ON tasks (owner, n);
CREATE INDEX IF NOT EXISTS tasks_name ON tasks (name);
CREATE INDEX IF NOT EXISTS tasks_finished ON tasks (finished_at);
CREATE INDEX IF NOT EXISTS tasks_created ON tasks (created_at);
CREATE INDEX IF NOT EXISTS tasks_duration ON tasks ((finished_at - started_at));
CREATE TABLE IF NOT EXISTS task_tags (
    tag     TEXT NOT NULL,
    n       INTEGER NOT NULL,
    task_id TEXT NOT NULL,
    PRIMARY KEY (tag, n)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS task_tags_task ON task_tags (task_id);
CREATE TABLE IF NOT EXISTS events (
    id      INTEGER PRIMARY KEY,
    task_id TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    type    TEXT NOT NULL,
    time    REAL NOT NULL,
    data    TEXT NOT NULL     -- JSON text, or zlib-compressed JSON (a BLOB) for large payloads
);
CREATE TABLE IF NOT EXISTS artifacts (
    task_id TEXT NOT NULL,
    name    TEXT NOT NULL,
    content BLOB NOT NULL,
    PRIMARY KEY (task_id, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS changes (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    type    TEXT NOT NULL,
    task_id TEXT NOT NULL,
    time    REAL NOT NULL,
    data    TEXT NOT NULL
);
"""

_TASK_COLUMNS = (
    "id, name, status, owner, kernel_name, source_kind, submission, tags, priority, created_at, "
    "started_at, finished_at, progress, error, metrics, result, executor, worker, rerun_of, last_seq, kernel_pid, "
    "exit_code, attempt, schedule_id, scheduled_for, recorded_values"
)
_TASK_COLUMN_COUNT = _TASK_COLUMNS.count(",") + 1

#: columns added after a schema was first created: ``ALTER TABLE`` adds them to an older store
_ADDED_COLUMNS = {
    "exit_code": "INTEGER",
    "attempt": "INTEGER NOT NULL DEFAULT 1",
    "schedule_id": "TEXT",  # the schedule that made the task (server/schedule_store.py)
    "scheduled_for": "REAL",  # the cron time it fired for: unique per schedule, so never fired twice
    "recorded_values": "TEXT",  # the latest record()ed value per name, JSON (Task.values; server/results.py)
}


#: seconds a client is told to wait (``Retry-After``) when the store cannot write (disk full, I/O error)
STORE_RETRY_AFTER = 5

#: an event's JSON longer than this is stored zlib-compressed (``output`` events stay JSON text:
#: the store queries them with ``json_extract``)
COMPRESS_OVER = 512

#: cap of the WAL file kept after a checkpoint (SQLite's ``journal_size_limit``)
WAL_SIZE_LIMIT = 4 * 1024 * 1024


def _store_error(what: str, e: sqlite3.Error) -> StoreUnavailable:
    text = str(e)
    if isinstance(e, sqlite3.OperationalError) and ("locked" in text or "busy" in text):
        return StoreBusy(f"{what}: the database is locked by another connection ({text})")
    err = StoreUnavailable(f"{what}: {text}")
    err.retry_after = STORE_RETRY_AFTER  # type: ignore[attr-defined]  # → 503 with Retry-After
    return err


def _event_data(type: str, data: Any) -> str | bytes:
    """An event's ``data`` column: compact JSON, zlib-compressed when large (one event of 1-2 KB
    took a 4 KiB overflow page of its own in the old WITHOUT ROWID table: 4-4.7x its size)."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False, default=str)
    if len(text) > COMPRESS_OVER and type != "output":
        packed = zlib.compress(text.encode("utf-8"), 1)
        if len(packed) < len(text) * 0.9:
            return packed
    return text


def _load_event_data(value: str | bytes) -> Any:
    return json.loads(zlib.decompress(value) if isinstance(value, bytes) else value)


def _create_private(path: str) -> None:
    """The store holds code, logs and env values: its folder is 0700 and its file 0600.

    SQLite creates the ``-wal`` and ``-shm`` files with the database file's permissions.
    """
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        os.makedirs(folder, mode=0o700, exist_ok=True)
        os.chmod(folder, 0o700)  # makedirs' mode is masked by the umask
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    for suffix in ("", "-wal", "-shm"):  # a store created by an older version, world-readable
        try:
            if stat.S_IMODE(os.stat(path + suffix).st_mode) & 0o077:
                os.chmod(path + suffix, 0o600)
        except OSError:
            pass


def task_attempt(task: Task) -> int:
    """Which run of the task this is: 1, plus one per re-queue after a server stop (``recovery.py``)."""
    return int(getattr(task, "attempt", 1) or 1)


def set_task_attempt(task: Task, attempt: int) -> None:
    # an attribute until ``models.Task`` declares the field (then this is a plain assignment)
    setattr(task, "attempt", int(attempt or 1))  # noqa: B010


def _value_path(name: str) -> str:
    """The JSON path of a recorded value (names never hold quotes: ``values.NAME_PATTERN``)."""
    return f'$."{name}"'


#: how a ``where_values`` operator compares: SQL operator, and the JSON types it applies to
_NUMERIC = ("integer", "real")


def _value_condition(name: str, op: str, value: Any) -> tuple[str, list[Any]]:
    """SQL for "the task's recorded ``name`` ``op`` ``value``"; a task without it never matches.

    Numbers compare with numbers, strings with strings (by code point); ``true``/``false``/``null``
    only with ``=`` and ``!=``; ``op`` ``"exists"`` asks only that the value was recorded."""
    path = _value_path(name)
    kind = "json_type(t.recorded_values, ?)"
    got = "json_extract(t.recorded_values, ?)"
    if op == "exists":
        return f"{kind} IS NOT NULL", [path]
    if value is None or isinstance(value, bool):
        literal = "null" if value is None else ("true" if value else "false")
        return (f"{kind} = ?" if op == "=" else f"{kind} IS NOT NULL AND {kind} != ?"), (
            [path, literal] if op == "=" else [path, path, literal]
        )
    sql_op = {"=": "=", "!=": "!=", ">": ">", ">=": ">=", "<": "<", "<=": "<="}[op]
    if isinstance(value, str):
        return f"{kind} = 'text' AND {got} {sql_op} ?", [path, path, value]
    return f"{kind} IN {_NUMERIC!r} AND {got} {sql_op} ?", [path, path, value]


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"), allow_nan=False, default=str)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


class TaskStore:
    """Tasks, per-task event logs, artifacts and a global change feed in one SQLite file."""

    def __init__(self, path: str, *, busy_timeout: float = 0.05):
        """``busy_timeout``: how long one statement waits for another connection's lock.

        Short on purpose: the store runs on the server's event loop thread, so a
        long wait would freeze the whole server. Callers that can wait (submissions)
        retry asynchronously on ``StoreBusy``; event writes are retried by the service.
        """
        self.path = path
        if path != ":memory:":
            _create_private(path)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=busy_timeout)
        self._db.execute("PRAGMA journal_mode=WAL")
        # after a checkpoint the WAL is cut back to this size, so one burst cannot keep the disk full
        self._db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        # NORMAL in WAL mode: durable against process crashes (our failure model), fsync only at checkpoints
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=OFF")
        self._db.executescript(SCHEMA)
        self._migrate_events()
        have = {row[1] for row in self._db.execute("PRAGMA table_info(tasks)")}
        for column, decl in _ADDED_COLUMNS.items():
            if column not in have:
                self._db.execute(f"ALTER TABLE tasks ADD COLUMN {column} {decl}")
        self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        self._in_tx = False
        self._marks: dict[tuple[str, str, Any], int] = {}

    def _migrate_events(self) -> None:
        """Stores made before rowid events hold them in a WITHOUT ROWID table, where every event
        over ~1 KB takes an overflow page of its own: copy them into the compact table once.
        Best effort: on a full disk the old table stays and keeps working (same columns)."""
        row = self._db.execute("SELECT sql FROM sqlite_master WHERE type='table' AND name='events'").fetchone()
        if row and "WITHOUT ROWID" in row[0].upper():
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute(
                    "CREATE TABLE events_compact (id INTEGER PRIMARY KEY, task_id TEXT NOT NULL, "
                    "seq INTEGER NOT NULL, type TEXT NOT NULL, time REAL NOT NULL, data TEXT NOT NULL)"
                )
                self._db.execute(
                    "INSERT INTO events_compact (task_id, seq, type, time, data) "
                    "SELECT task_id, seq, type, time, data FROM events ORDER BY task_id, seq"
                )
                self._db.execute("DROP TABLE events")
                self._db.execute("ALTER TABLE events_compact RENAME TO events")
                self._db.execute("CREATE UNIQUE INDEX events_task_seq ON events (task_id, seq)")
                self._db.execute("COMMIT")
            except sqlite3.Error:
                self._rollback()
            return
        self._db.execute("CREATE UNIQUE INDEX IF NOT EXISTS events_task_seq ON events (task_id, seq)")

    def checkpoint(self, mode: str = "TRUNCATE") -> None:
        """Copy the WAL into the database; TRUNCATE also cuts the WAL file to nothing (after a
        recovery, to give space back), PASSIVE only lets the next write reuse it from the start."""
        try:
            self._db.execute(f"PRAGMA wal_checkpoint({mode})")
        except sqlite3.Error:
            pass

    def close(self) -> None:
        try:
            self._db.close()
        except sqlite3.Error:
            pass

    # -- transactions --------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All-or-nothing writes; nested use joins the outer transaction."""
        if self._in_tx:
            yield self._db
            return
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            raise _store_error("task store unavailable", e) from e
        self._in_tx = True
        try:
            yield self._db
            self._db.execute("COMMIT")
        except sqlite3.Error as e:
            self._rollback()
            raise _store_error("task store write failed", e) from e
        except BaseException:
            self._rollback()
            raise
        finally:
            self._in_tx = False

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        try:
            return self._db.execute(sql, tuple(params)).fetchall()
        except sqlite3.Error as e:
            raise StoreUnavailable(f"task store read failed: {e}") from e

    # -- tasks ---------------------------------------------------------------

    def insert_tasks(self, tasks: list[Task]) -> list[Change]:
        """Insert tasks and their ``created`` feed entries all-or-nothing."""
        changes: list[Change] = []
        with self.transaction() as db:
            for task in tasks:
                cur = db.execute(
                    f"INSERT INTO tasks ({_TASK_COLUMNS}) VALUES ({', '.join('?' * _TASK_COLUMN_COUNT)})", self._task_row(task)
                )
                n = cur.lastrowid
                db.executemany(
                    "INSERT OR IGNORE INTO task_tags (tag, n, task_id) VALUES (?, ?, ?)",
                    [(tag, n, task.id) for tag in task.tags],
                )
                changes += self.append_events([], changes=[("created", task.id, task.to_dict())])
        return changes

    def update_task(self, task: Task) -> None:
        with self.transaction() as db:
            cur = db.execute(
                "UPDATE tasks SET name=?, status=?, started_at=?, finished_at=?, progress=?, error=?, "
                "metrics=?, result=?, worker=?, last_seq=?, kernel_pid=?, exit_code=?, attempt=?, recorded_values=? WHERE id=?",
                (
                    task.name, task.status.value, task.started_at, task.finished_at, _dumps(task.progress),
                    _dumps(task.error), _dumps(task.metrics), _dumps(task.result), task.worker,
                    task.last_seq, task.kernel_pid, task.exit_code, task_attempt(task), _dumps(task.values or None), task.id,
                ),
            )  # fmt: skip
            if cur.rowcount == 0:
                raise TaskNotFound(f"no task {task.id}")

    @staticmethod
    def _task_row(t: Task) -> tuple:
        return (
            t.id, t.name, t.status.value, t.owner, t.kernel_name, t.source_kind, _dumps(t.submission),
            _dumps(t.tags), t.priority, t.created_at, t.started_at, t.finished_at, _dumps(t.progress),
            _dumps(t.error), _dumps(t.metrics), _dumps(t.result), t.executor, t.worker, t.rerun_of,
            t.last_seq, t.kernel_pid, t.exit_code, task_attempt(t), t.schedule_id, t.scheduled_for, _dumps(t.values or None),
        )  # fmt: skip

    @staticmethod
    def _task_from_row(r: tuple) -> Task:
        task = Task(
            id=r[0], name=r[1], status=TaskStatus(r[2]), owner=r[3], kernel_name=r[4], source_kind=r[5],
            submission=_loads(r[6]), tags=_loads(r[7]), priority=r[8], created_at=r[9], started_at=r[10],
            finished_at=r[11], progress=_loads(r[12]), error=_loads(r[13]), metrics=_loads(r[14]) or {},
            result=_loads(r[15]), executor=r[16], worker=r[17], rerun_of=r[18], last_seq=r[19],
            kernel_pid=r[20], exit_code=r[21], schedule_id=r[23], scheduled_for=r[24], values=_loads(r[25]) or {},
        )  # fmt: skip
        set_task_attempt(task, r[22])
        return task

    def get_task(self, task_id: str) -> Task:
        rows = self._query(f"SELECT {_TASK_COLUMNS} FROM tasks WHERE id=?", (task_id,))
        if not rows:
            raise TaskNotFound(f"no task with id {task_id!r}")
        return self._task_from_row(rows[0])

    def list_tasks(
        self,
        *,
        status: list[str] | None = None,
        tag: str | None = None,
        owner: str | None = None,
        name: str | None = None,
        schedule: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        sort_value: tuple[str, bool] | None = None,
        where_values: list[tuple[str, str, Any]] | None = None,
        sort_field: tuple[str, bool] | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
        latest_attempts: bool = False,
    ) -> tuple[list[Task], str | None]:
        """Newest first; ``cursor`` is the opaque token returned as the second value.

        ``sort_value`` = (name, descending) orders by a recorded value instead (tasks without it
        last, ties newest first) and pages by position; ``where_values`` = [(name, op, value)]
        keeps tasks whose recorded value compares so (see ``_value_condition``). ``sort_field`` =
        (one of ``_FIELD_ORDER``, descending) orders by a column the same way (indexed); the
        ``created_*`` bounds (epoch seconds) keep ``created_after <= created_at < created_before``."""
        where: list[str] = []
        params: list[Any] = []
        offset = 0
        positional = sort_value is not None or sort_field is not None
        if positional and cursor is not None:
            if not (cursor[:1] == "o" and cursor[1:].isascii() and cursor[1:].isdigit() and int(cursor[1:]) <= SQLITE_MAX_INT):
                raise InvalidSubmission(f"invalid cursor {cursor!r}")
            offset, cursor = int(cursor[1:]), None
        if cursor is not None:
            try:
                before = int(cursor)
                if not 0 < before <= SQLITE_MAX_INT:
                    raise ValueError
            except (TypeError, ValueError):
                raise InvalidSubmission(f"invalid cursor {cursor!r}") from None
            where.append("t.n < ?")
            params.append(before)
        # the bounds compare with created_at as the API shows it (rounded to the microsecond, isotime),
        # so a task's own created_at given back as created_after keeps it
        if created_after is not None:
            where.append("t.created_at >= ?")
            params.append(created_after - HALF_MICROSECOND)
        if created_before is not None:
            where.append("t.created_at < ?")
            params.append(created_before - HALF_MICROSECOND)
        if status:
            where.append(f"t.status IN ({', '.join('?' * len(status))})")
            params.extend(status)
        if owner is not None:
            where.append("t.owner = ?")
            params.append(owner)
        if schedule is not None:
            where.append("t.schedule_id = ?")
            params.append(schedule)
        if latest_attempts:  # tries a retry superseded (workflow_store.py; its partial index answers this)
            where.append("t.id NOT IN (SELECT task_id FROM task_retries WHERE retried_as IS NOT NULL)")
        if name:
            # prefix match via range so the index is used (LIKE would need escaping and case rules)
            where.append("t.name >= ? AND t.name < ?")
            params.extend([name, name + "\U0010ffff"])
        if tag is not None:
            sql_from = "task_tags g JOIN tasks t ON t.n = g.n"
            where.insert(0, "g.tag = ?")
            params.insert(0, tag)
            order = "g.n DESC"
            if cursor is not None:  # the cursor condition must use the tag index's column
                where[1] = "g.n < ?"
        else:
            sql_from = "tasks t"
            order = "t.n DESC"
        for value_name, op, value in where_values or ():  # last: the tag branch above indexes ``where``
            clause, args = _value_condition(value_name, op, value)
            where.append(clause)
            params.extend(args)
        cols = ", ".join(f"t.{c.strip()}" for c in _TASK_COLUMNS.split(","))
        sql = f"SELECT {cols}, t.n FROM {sql_from}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        order_params: list[Any] = []
        if sort_value is not None:
            path = _value_path(sort_value[0])
            direction = "DESC" if sort_value[1] else "ASC"
            order = f"json_type(t.recorded_values, ?) IS NULL, json_extract(t.recorded_values, ?) {direction}, {order}"
            order_params = [path, path]
        elif sort_field is not None:
            column = _FIELD_ORDER[sort_field[0]]
            direction = "DESC" if sort_field[1] else "ASC"
            order = f"{column} IS NULL, {column} {direction}, {order}"  # never started/finished: last
        sql += f" ORDER BY {order} LIMIT ? OFFSET ?"
        params += [*order_params, limit + 1, offset]
        rows = self._query(sql, params)
        more = len(rows) > limit
        rows = rows[:limit]
        tasks = [self._task_from_row(r) for r in rows]
        next_cursor = None
        if more and rows:
            next_cursor = f"o{offset + limit}" if positional else str(rows[-1][-1])
        return tasks, next_cursor

    def tasks_with_status(self, *statuses: TaskStatus) -> list[Task]:
        """Oldest first: the order a restarted server re-queues them in."""
        marks = ", ".join("?" * len(statuses))
        rows = self._query(
            f"SELECT {_TASK_COLUMNS} FROM tasks WHERE status IN ({marks}) ORDER BY n ASC",
            [s.value for s in statuses],
        )
        return [self._task_from_row(r) for r in rows]

    def count_by_status(self) -> dict[str, int]:
        return dict(self._query("SELECT status, COUNT(*) FROM tasks GROUP BY status"))

    def delete_task(self, task_id: str) -> None:
        if not self.delete_tasks([task_id]):
            raise TaskNotFound(f"no task with id {task_id!r}")

    def delete_tasks(self, task_ids: list[str]) -> list[str]:
        """Delete tasks with their tags, events and artifacts in one transaction; returns the ids
        that were there (an id already gone is skipped, not an error)."""
        deleted: list[str] = []
        with self.transaction() as db:
            for task_id in task_ids:
                if db.execute("DELETE FROM tasks WHERE id=?", (task_id,)).rowcount == 0:
                    continue
                db.execute("DELETE FROM task_tags WHERE task_id=?", (task_id,))
                db.execute("DELETE FROM events WHERE task_id=?", (task_id,))
                db.execute("DELETE FROM artifacts WHERE task_id=?", (task_id,))
                deleted.append(task_id)
        return deleted

    def finished_before(self, cutoff: float, limit: int = 500) -> list[tuple[str, str]]:
        """(id, owner) of finished tasks older than ``cutoff``."""
        rows = self._query("SELECT id, owner FROM tasks WHERE finished_at IS NOT NULL AND finished_at < ? LIMIT ?", (cutoff, limit))
        return [(r[0], r[1]) for r in rows]

    def finished_tasks(
        self, statuses: Iterable[TaskStatus], *, owner: str | None = None, before: float | None = None, limit: int = 1000
    ) -> list[tuple[str, str]]:
        """(id, owner) of tasks with one of the (finished) ``statuses``, oldest first; only
        ``owner``'s (None: everyone's), only those finished before ``before`` (None: any time)."""
        values = [s.value for s in statuses]
        sql = f"SELECT id, owner FROM tasks WHERE status IN ({', '.join('?' * len(values))}) AND finished_at IS NOT NULL"
        params: list[Any] = list(values)
        if owner is not None:
            sql += " AND owner = ?"
            params.append(owner)
        if before is not None:
            sql += " AND finished_at < ?"
            params.append(before)
        params.append(limit)
        return [(r[0], r[1]) for r in self._query(sql + " ORDER BY n ASC LIMIT ?", params)]

    # -- events --------------------------------------------------------------

    def append_events(
        self,
        events: list[TaskEvent],
        tasks: Iterable[Task] = (),
        changes: Iterable[tuple[str, str, dict[str, Any]]] = (),
    ) -> list[Change]:
        """Write a batch of events, the task rows they changed and feed entries in one transaction."""
        written: list[Change] = []
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO events (task_id, seq, type, time, data) VALUES (?, ?, ?, ?, ?)",
                [(e.task_id, e.seq, str(e.type), e.time, _event_data(str(e.type), e.data)) for e in events],
            )
            self._drop_superseded(db, events)
            for task in tasks:
                self.update_task(task)
            for type, task_id, data in changes:
                now = time.time()
                cur = db.execute(
                    "INSERT INTO changes (type, task_id, time, data) VALUES (?, ?, ?, ?)",
                    (type, task_id, now, _dumps(data)),
                )
                written.append(Change(seq=cur.lastrowid or 0, type=type, task_id=task_id, data=data, time=now))
        return written

    def _drop_superseded(self, db: sqlite3.Connection, events: list[TaskEvent]) -> None:
        """Delete output events that nothing can show any more, so stored outputs stay bounded
        by what is visible: a cell's outputs before its ``clear`` event, and a display's
        earlier ``update_display_data`` events once a newer one replaces them.

        The in-memory marks only narrow the scan (one key range per clear); losing them
        (a restart, the cap) just widens it.
        """
        if len(self._marks) > 10_000:
            self._marks.clear()
        for e in events:
            if e.type == "clear":
                cell = e.data.get("cell_index")
                key = (e.task_id, "clear", cell)
                db.execute(
                    "DELETE FROM events WHERE task_id=? AND seq>? AND seq<? AND type='output' AND json_extract(data, '$.cell_index') IS ?",
                    (e.task_id, self._marks.get(key, 0), e.seq, cell),
                )
                self._marks[key] = e.seq
            elif e.type == "output" and e.data.get("update") and e.data.get("display_id"):
                key = (e.task_id, "update", e.data["display_id"])
                previous = self._marks.get(key)
                if previous is not None:
                    db.execute("DELETE FROM events WHERE task_id=? AND seq=?", (e.task_id, previous))
                self._marks[key] = e.seq

    def read_events(self, task_id: str, after: int = 0, limit: int | None = None) -> list[TaskEvent]:
        sql = "SELECT seq, type, time, data FROM events WHERE task_id=? AND seq>? ORDER BY seq"
        params: list[Any] = [task_id, after]
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [TaskEvent(task_id=task_id, seq=r[0], type=r[1], time=r[2], data=_load_event_data(r[3])) for r in self._query(sql, params)]

    def iter_events(self, task_id: str, types: tuple[str, ...], batch: int = 2000) -> Iterator[TaskEvent]:
        """Stream a task's events of some types in pages, so a huge log never sits in memory at once."""
        after = 0
        marks = ", ".join("?" * len(types))
        while True:
            rows = self._query(
                f"SELECT seq, type, time, data FROM events WHERE task_id=? AND seq>? AND type IN ({marks}) ORDER BY seq LIMIT ?",
                [task_id, after, *types, batch],
            )
            for r in rows:
                yield TaskEvent(task_id=task_id, seq=r[0], type=r[1], time=r[2], data=_load_event_data(r[3]))
            if len(rows) < batch:
                return
            after = rows[-1][0]

    # -- artifacts -----------------------------------------------------------

    def put_artifact(self, task_id: str, name: str, content: bytes) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO artifacts VALUES (?, ?, ?)", (task_id, name, content))

    def get_artifact(self, task_id: str, name: str) -> bytes | None:
        rows = self._query("SELECT content FROM artifacts WHERE task_id=? AND name=?", (task_id, name))
        return bytes(rows[0][0]) if rows else None

    # -- global change feed --------------------------------------------------

    def append_change(self, type: str, task_id: str, data: dict[str, Any]) -> Change:
        return self.append_events([], changes=[(type, task_id, data)])[0]

    def read_changes(self, after: int = 0, limit: int = 1000) -> list[Change]:
        rows = self._query("SELECT seq, type, task_id, time, data FROM changes WHERE seq>? ORDER BY seq LIMIT ?", (after, limit))
        return [Change(seq=r[0], type=r[1], task_id=r[2], time=r[3], data=json.loads(r[4])) for r in rows]

    def last_change_seq(self) -> int:
        rows = self._query("SELECT MAX(seq) FROM changes")
        return rows[0][0] or 0

    def prune_changes(self, keep: int) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM changes WHERE seq <= (SELECT MAX(seq) FROM changes) - ?", (keep,))
