"""Typed models of the domain: submissions, tasks, events and the status machine.

Nothing here knows about HTTP or SQLite; ``TaskSubmission.from_dict`` is the one
place where untrusted input is validated, so the REST API, the Python client,
the magic and the CLI all get the same checks and messages.
"""

from __future__ import annotations

import enum
import functools
import json
import math
import re
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from .errors import InvalidSubmission, InvalidTransition


class TaskStatus(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES

    def __str__(self) -> str:  # so f-strings and JSON read "running", not "TaskStatus.RUNNING"
        return self.value


TERMINAL_STATUSES = frozenset(
    {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.TIMED_OUT}
)
ACTIVE_STATUSES = frozenset({TaskStatus.QUEUED, TaskStatus.RUNNING})

#: The only legal moves; terminal states are final.
TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    # a queued task can fail without running, e.g. when its kernel cannot start
    TaskStatus.QUEUED: frozenset({TaskStatus.RUNNING, TaskStatus.CANCELLED, TaskStatus.FAILED}),
    TaskStatus.RUNNING: TERMINAL_STATUSES,
}


def check_transition(old: TaskStatus, new: TaskStatus) -> None:
    if new not in TRANSITIONS.get(old, frozenset()):
        raise InvalidTransition(f"a task cannot go from {old.value} to {new.value}")


class EventType(str, enum.Enum):
    STATUS = "status"
    LOG = "log"
    OUTPUT = "output"
    PROGRESS = "progress"
    METRICS = "metrics"
    CELL = "cell"
    RESULT = "result"
    TRUNCATED = "truncated"
    #: a cell's displayed outputs were cleared (``clear_output``), at the moment nbclient clears them
    CLEAR = "clear"

    def __str__(self) -> str:
        return self.value


def isotime(ts: float | None) -> str | None:
    """Epoch seconds → ISO 8601 UTC with microseconds, as the API shows times."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat().replace("+00:00", "Z")


# ---------------------------------------------------------------------------
# Submissions
# ---------------------------------------------------------------------------

SOURCE_KINDS = ("code", "cells", "path", "notebook")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_NAME_LEN = 200
MAX_TAG_LEN = 64
MAX_TAGS = 32
MAX_ARGS = 1000
#: nesting limit of ``parameters`` (objects/lists inside each other): deeper values are refused
#: at submission with a 400 instead of overflowing the recursive translators at run time
MAX_PARAMETER_DEPTH = 64
#: nesting limit of an inline ``notebook`` (widget state and output JSON are rarely past 20)
MAX_NOTEBOOK_DEPTH = 200


def _fail(msg: str) -> InvalidSubmission:
    return InvalidSubmission(msg)


def _check_text(field_name: str, value: Any, *, max_len: int | None = None, allow_empty=False) -> str:
    if not isinstance(value, str):
        raise _fail(f"'{field_name}' must be a string, not {type(value).__name__}")
    if "\x00" in value:
        raise _fail(f"'{field_name}' must not contain NUL characters")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate, e.g. from a JSON '\ud800' escape
            raise _fail(f"'{field_name}' is not valid Unicode (lone surrogate)") from None
    if not allow_empty and not value.strip():
        raise _fail(f"'{field_name}' must not be empty")
    if max_len is not None and len(value) > max_len:
        raise _fail(f"'{field_name}' is longer than {max_len} characters")
    return value


def _check_number(field_name: str, value: Any, *, minimum: float = 0.0, integer=False) -> float | int | None:
    if value is None:
        return None
    # bool is an int in Python; in JSON it is not a number
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(f"'{field_name}' must be a number, not {type(value).__name__}")
    if integer and not float(value).is_integer():
        raise _fail(f"'{field_name}' must be a whole number")
    if not math.isfinite(value):
        raise _fail(f"'{field_name}' must be finite")
    if value <= minimum:
        raise _fail(f"'{field_name}' must be greater than {minimum:g}")
    return int(value) if integer else float(value)


@dataclass
class TaskSubmission:
    """What a user asks to run: exactly one source plus options."""

    code: str | None = None
    cells: list[str] | None = None
    path: str | None = None
    notebook: dict[str, Any] | None = None
    name: str | None = None
    kernel_name: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    timeout: float | None = None
    cell_timeout: float | None = None
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    tags: list[str] = field(default_factory=list)
    priority: int = 0
    memory_limit: int | None = None
    resources: dict[str, float] = field(default_factory=dict)
    #: a script's command-line arguments: ``sys.argv[1:]`` (``.py`` paths only)
    args: list[str] = field(default_factory=list)

    FIELDS = (
        "code", "cells", "path", "notebook", "name", "kernel_name", "parameters", "timeout",
        "cell_timeout", "env", "cwd", "tags", "priority", "memory_limit", "resources", "args",
    )  # fmt: skip

    @property
    def source_kind(self) -> str:
        for kind in SOURCE_KINDS:
            if getattr(self, kind) is not None:
                return kind
        raise AssertionError("validated submissions have a source")

    @classmethod
    def from_dict(cls, data: Any) -> TaskSubmission:
        """Validate untrusted JSON; raise InvalidSubmission with a precise message."""
        if not isinstance(data, dict):
            raise _fail("a task submission must be a JSON object")
        unknown = sorted(set(data) - set(cls.FIELDS))
        if unknown:
            raise _fail(f"unknown field(s): {', '.join(map(str, unknown))}")
        sources = [k for k in SOURCE_KINDS if data.get(k) is not None]
        if len(sources) != 1:
            if not sources:
                raise _fail("give exactly one of 'code', 'cells', 'path' or 'notebook'")
            raise _fail(f"give exactly one source, not {' and '.join(sources)}")
        sub = cls()
        kind = sources[0]
        value = data[kind]
        if kind == "code":
            sub.code = _check_text("code", value, allow_empty=True)
        elif kind == "cells":
            if not isinstance(value, list) or not value:
                raise _fail("'cells' must be a non-empty list of strings")
            sub.cells = [_check_text(f"cells[{i}]", c, allow_empty=True) for i, c in enumerate(value)]
        elif kind == "path":
            sub.path = _check_text("path", value, max_len=4096)
            if not sub.path.endswith((".py", ".ipynb")):
                raise _fail("'path' must name a .py script or a .ipynb notebook")
        else:
            sub.notebook = _check_notebook(value)

        if data.get("name") is not None:
            sub.name = _check_text("name", data["name"], max_len=MAX_NAME_LEN)
        if data.get("kernel_name") is not None:
            sub.kernel_name = _check_text("kernel_name", data["kernel_name"], max_len=200)
        params = data.get("parameters")
        if params is not None:
            if not isinstance(params, dict):
                raise _fail("'parameters' must be an object")
            for key in params:
                if not key.isidentifier():
                    raise _fail(f"parameter name {key!r} is not a Python identifier")
            _check_json_value("parameters", params, max_depth=MAX_PARAMETER_DEPTH)
            sub.parameters = params
        sub.timeout = _check_number("timeout", data.get("timeout"))
        sub.cell_timeout = _check_number("cell_timeout", data.get("cell_timeout"))
        mem = _check_number("memory_limit", data.get("memory_limit"), integer=True)
        sub.memory_limit = int(mem) if mem is not None else None
        env = data.get("env")
        if env is not None:
            if not isinstance(env, dict):
                raise _fail("'env' must be an object of strings")
            for k, v in env.items():
                if not _ENV_NAME.match(k):
                    raise _fail(f"environment variable name {k!r} is not valid")
                _check_text(f"env.{k}", v, allow_empty=True)
            sub.env = dict(env)
        if data.get("cwd") is not None:
            sub.cwd = _check_text("cwd", data["cwd"], max_len=4096, allow_empty=True)
        tags = data.get("tags")
        if tags is not None:
            if not isinstance(tags, list):
                raise _fail("'tags' must be a list of strings")
            if len(tags) > MAX_TAGS:
                raise _fail(f"at most {MAX_TAGS} tags")
            sub.tags = [_check_text("tag", t, max_len=MAX_TAG_LEN) for t in tags]
            sub.tags = list(dict.fromkeys(sub.tags))
        prio = data.get("priority")
        if prio is not None:
            if isinstance(prio, bool) or not isinstance(prio, int):
                raise _fail("'priority' must be an integer")
            if not -1000 <= prio <= 1000:
                raise _fail("'priority' must be between -1000 and 1000")
            sub.priority = prio
        res = data.get("resources")
        if res is not None:
            if not isinstance(res, dict):
                raise _fail("'resources' must be an object of numbers")
            for k, v in res.items():
                _check_text("resource name", k, max_len=100)
                _check_number(f"resources.{k}", v, minimum=-1e-12)
            sub.resources = {k: float(v) for k, v in res.items()}
        args = data.get("args")
        if args is not None:
            if not isinstance(args, list):
                raise _fail("'args' must be a list of strings")
            if args and sub.code is None and not (sub.path or "").endswith(".py"):
                raise _fail("'args' are a script's command-line arguments: give 'code' or a 'path' to a .py file")
            if len(args) > MAX_ARGS:
                raise _fail(f"at most {MAX_ARGS} args")
            sub.args = [_check_text(f"args[{i}]", a, max_len=65536, allow_empty=True) for i, a in enumerate(args)]
        return sub

    def to_dict(self) -> dict[str, Any]:
        """The submission as given (defaults left out), so a rerun repeats it exactly."""
        out: dict[str, Any] = {}
        for key, value in asdict(self).items():
            if value is None or value == {} or value == [] or (key == "priority" and value == 0):
                continue
            out[key] = value
        return out


def json_depth(value: Any) -> int:
    """How deeply lists/objects nest in ``value`` (0 for a scalar), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def _check_json_value(field_name: str, value: Any, *, max_depth: int | None = None) -> None:
    """Values that must survive a strict JSON round trip: finite numbers, valid Unicode, bounded depth."""
    if max_depth is not None and json_depth(value) > max_depth:
        raise _fail(f"'{field_name}' is nested too deeply: at most {max_depth} levels of lists/objects")
    try:
        json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except RecursionError:
        raise _fail(f"'{field_name}' is nested too deeply") from None
    except UnicodeEncodeError:
        raise _fail(f"'{field_name}' holds a string that is not valid Unicode (lone surrogate)") from None
    except (TypeError, ValueError) as e:
        raise _fail(f"'{field_name}' must be plain JSON with finite numbers: {e}") from None


def _check_notebook(value: Any) -> dict[str, Any]:
    """Accept any notebook Jupyter would open (see ``notebook.normalize_notebook``), refuse the rest."""
    from .execution.submission import normalize_notebook  # notebook.py imports this module

    if not isinstance(value, dict):
        raise _fail("'notebook' must be a notebook's JSON object")
    _check_json_value("notebook", value, max_depth=MAX_NOTEBOOK_DEPTH)
    try:
        normalize_notebook(value, "python")
    except InvalidSubmission as e:
        raise _fail(f"'notebook' is {e}") from None
    return value


# ---------------------------------------------------------------------------
# Tasks and events
# ---------------------------------------------------------------------------


@dataclass
class Task:
    """A task record as stored and as the API shows it."""

    id: str
    status: TaskStatus
    submission: dict[str, Any]
    source_kind: str
    name: str
    owner: str = ""
    kernel_name: str = ""
    tags: list[str] = field(default_factory=list)
    priority: int = 0
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    progress: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] | None = None
    executor: str = "local"
    worker: str | None = None
    rerun_of: str | None = None
    last_seq: int = 0
    #: pid of the kernel process while running: lets a restarted server kill orphans
    kernel_pid: int | None = None
    #: how the task's code ended, as ``python script.py`` reports it: ``SystemExit``'s code
    #: (0 for ``sys.exit()``), 1 for an uncaught exception, the kernel's exit status when it
    #: died (``-signal`` when killed); ``None`` while running or when nothing ran
    exit_code: int | None = None

    @property
    def is_active(self) -> bool:
        return not self.status.is_terminal

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "status": self.status.value,
            "owner": self.owner,
            "kernel_name": self.kernel_name,
            "source_kind": self.source_kind,
            "path": self.submission.get("path"),
            "tags": list(self.tags),
            "priority": self.priority,
            "created_at": isotime(self.created_at),
            "started_at": isotime(self.started_at),
            "finished_at": isotime(self.finished_at),
            "progress": self.progress,
            "error": self.error,
            "metrics": self.metrics,
            "result": self.result,
            "executor": self.executor,
            "worker": self.worker,
            "rerun_of": self.rerun_of,
            "last_event_id": self.last_seq,
            "exit_code": self.exit_code,
        }


@dataclass
class TaskEvent:
    """One entry of a task's append-only event log; ``seq`` starts at 1 per task."""

    task_id: str
    seq: int
    type: str
    data: dict[str, Any]
    time: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "seq": self.seq,
            "type": str(self.type),
            "time": isotime(self.time),
            "data": self.data,
        }

    @functools.cached_property
    def json(self) -> str:
        """``to_dict()`` as JSON, encoded once: every live subscriber of the task shares it."""
        return json.dumps(self.to_dict(), default=str)


@dataclass
class Change:
    """One entry of the global change feed (``/taskrun/api/events``)."""

    seq: int
    type: str  # created | status | progress | deleted
    task_id: str
    data: dict[str, Any]
    time: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "type": self.type,
            "task_id": self.task_id,
            "time": isotime(self.time),
            "data": self.data,
        }

    @functools.cached_property
    def json(self) -> str:
        """``to_dict()`` as JSON, encoded once for every subscriber of the change feed."""
        return json.dumps(self.to_dict(), default=str)
