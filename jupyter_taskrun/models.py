"""Typed models of the domain: submissions, tasks, events and the status machine.

Nothing here knows about HTTP or SQLite; ``TaskSubmission.from_dict`` is the one
place where untrusted input is validated, so the REST API, the Python client,
the magic and the CLI all get the same checks and messages. It validates against
the one definition of a submission, ``schemas/submission.json`` (see ``schema.py``),
plus the few checks JSON Schema cannot express (Unicode, finite numbers, depth).
"""

from __future__ import annotations

import enum
import functools
import json
import math
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from . import schema
from .errors import InvalidSubmission, InvalidTransition


class TaskStatus(str, enum.Enum):
    #: before ``queued``: its dependencies have not all ended, or a retry waits for its delay (``server/workflows.py``)
    WAITING = "waiting"
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


TERMINAL_STATUSES = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.TIMED_OUT})
ACTIVE_STATUSES = frozenset({TaskStatus.WAITING, TaskStatus.QUEUED, TaskStatus.RUNNING})

#: The only legal moves; terminal states are final.
TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    # a waiting task is queued, or cancelled (a dependency failed, a user), or fails (e.g. its store row is gone)
    TaskStatus.WAITING: frozenset({TaskStatus.QUEUED, TaskStatus.CANCELLED, TaskStatus.FAILED}),
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
    #: one attempt to deliver the task's webhook (``callback_url``), recorded after the task ended
    NOTIFICATION = "notification"
    #: ``record(name, value, step)`` from task code (``values.py``): {"name", "value", "step"}
    VALUE = "value"
    #: the task's ``outputs`` files, collected when it ended (``execution/artifacts.py``)
    ARTIFACTS = "artifacts"

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

#: the sources a submission gives exactly one of, in ``schemas/submission.json``'s order
SOURCE_KINDS = schema.SOURCE_KINDS
_PROPERTIES = schema.submission_definition()["properties"]
# the definition's limits, named for Python callers
MAX_NAME_LEN: int = _PROPERTIES["name"]["maxLength"]
MAX_TAG_LEN: int = _PROPERTIES["tags"]["items"]["maxLength"]
MAX_TAGS: int = _PROPERTIES["tags"]["maxItems"]
MAX_ARGS: int = _PROPERTIES["args"]["maxItems"]
#: nesting limit of ``parameters`` (objects/lists inside each other): deeper values are refused
#: at submission with a 400 instead of overflowing the recursive translators at run time
MAX_PARAMETER_DEPTH = 64
#: nesting limit of an inline ``notebook`` (widget state and output JSON are rarely past 20)
MAX_NOTEBOOK_DEPTH = 200


def _fail(msg: str) -> InvalidSubmission:
    return InvalidSubmission(msg)


@dataclass
class TaskSubmission:
    """What a user asks to run: exactly one source plus options (see ``schemas/submission.json``)."""

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
    #: queue it again if the server stops while it runs (``server/recovery.py``)
    requeue_on_restart: bool = False
    #: an http(s) URL POSTed a signed summary when the task ends (``server/webhooks.py``)
    callback_url: str | None = None
    #: notebook variables in ({name: base64 pickle}) and names to send back (``server/variables.py``)
    variables_in: dict[str, str] = field(default_factory=dict)
    variables_out: list[str] = field(default_factory=list)
    #: globs relative to the task's cwd: files collected into its artifacts when it ends (``execution/artifacts.py``)
    outputs: list[str] = field(default_factory=list)
    #: server-root-relative files or folders inside the task's cwd, staged into a Dask task's folder
    inputs: list[str] = field(default_factory=list)
    #: workflows (``server/workflows.py``): a batch entry's name, what it waits for, what a failed dependency does
    key: str | None = None
    depends_on: list[str] = field(default_factory=list)
    on_dependency_failure: str | None = None
    #: retries of a failed / timed-out run: how many, the first delay (s), the delay's growth factor
    retries: int = 0
    retry_delay: float | None = None
    retry_backoff: float | None = None

    #: every field a submission may carry (the definition's properties; tests check they match)
    FIELDS = schema.FIELDS

    @property
    def source_kind(self) -> str:
        for kind in SOURCE_KINDS:
            if getattr(self, kind) is not None:
                return kind
        raise AssertionError("validated submissions have a source")

    @classmethod
    def from_dict(cls, data: Any) -> TaskSubmission:
        """Validate untrusted JSON; raise InvalidSubmission with a precise message.

        The definition (``schemas/submission.json``) checks fields, types, NUL characters, limits and
        exactly-one-source; the checks below add what JSON Schema cannot say.
        """
        data = schema.validate_submission(data)
        _check_unicode_and_finite(data)
        if "parameters" in data:
            _check_json_value("parameters", data["parameters"], max_depth=MAX_PARAMETER_DEPTH)
        if "notebook" in data:
            _check_notebook(data["notebook"])
        sub = cls(**data)
        # copies, so a caller mutating its dict later does not change the submission
        if sub.cells is not None:
            sub.cells = list(sub.cells)
        sub.env = dict(sub.env)
        sub.tags = list(dict.fromkeys(sub.tags))
        sub.args = list(sub.args)
        sub.outputs = list(dict.fromkeys(sub.outputs))
        sub.inputs = list(dict.fromkeys(sub.inputs))
        sub.variables_in = dict(sub.variables_in)
        sub.variables_out = list(dict.fromkeys(sub.variables_out))
        sub.depends_on = list(dict.fromkeys(sub.depends_on))
        sub.retries = int(sub.retries or 0)
        sub.resources = {k: float(v) for k, v in sub.resources.items()}
        # JSON has one kind of number: 2.0 is a valid integer, kept as an int
        sub.priority = int(sub.priority)
        sub.memory_limit = int(sub.memory_limit) if sub.memory_limit is not None else None
        sub.timeout = float(sub.timeout) if sub.timeout is not None else None
        sub.cell_timeout = float(sub.cell_timeout) if sub.cell_timeout is not None else None
        return sub

    def to_dict(self) -> dict[str, Any]:
        """The submission as given (defaults left out), so a rerun repeats it exactly."""
        out: dict[str, Any] = {}
        for key, value in asdict(self).items():
            if value is None or value is False or value == {} or value == [] or (key in ("priority", "retries") and value == 0):
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


def _is_valid_unicode(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, e.g. from a JSON '\ud800' escape
        return False
    return True


_FLOAT_LIMIT = 2**1024  # the first integer a float cannot hold


def _check_unicode_and_finite(data: dict[str, Any]) -> None:
    """Every string valid Unicode, every number finite: what a JSON Schema cannot say.

    ``parameters`` and ``notebook`` are left to ``_check_json_value``, which checks the same on any JSON.
    """
    stack: list[tuple[str, Any]] = [(name, value) for name, value in data.items() if name not in ("parameters", "notebook")]
    while stack:
        label, value = stack.pop()
        if isinstance(value, str):
            if not _is_valid_unicode(value):
                raise _fail(f"'{label}' is not valid Unicode (lone surrogate)")
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise _fail(f"'{label}' must be finite")
        elif isinstance(value, int) and not -_FLOAT_LIMIT < value < _FLOAT_LIMIT:
            raise _fail(f"'{label}' is too large")  # a JSON integer past any float: float() would overflow
        elif isinstance(value, list):
            try:
                if all(map(str.isascii, value)):
                    continue  # the common case, e.g. 2000 ASCII cells, without a Python loop per item
            except TypeError:  # not only strings: look at each item
                pass
            stack.extend((f"{label}[{i}]", item) for i, item in enumerate(value))
        elif isinstance(value, dict):
            for key, item in value.items():
                if not _is_valid_unicode(key):
                    raise _fail(f"a key of '{label}' is not valid Unicode (lone surrogate)")
                stack.append((f"{label}.{key}", item))


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
    #: which run this is: 1, plus one per re-queue after a server stop (``server/recovery.py``)
    attempt: int = 1
    #: the schedule that made this task, and the cron time it fired for (None: run now / not scheduled)
    schedule_id: str | None = None
    scheduled_for: float | None = None
    #: the latest value ``record()`` recorded per name (``values.py``)
    values: dict[str, Any] = field(default_factory=dict)
    #: retries (``server/workflows.py``), not to be confused with ``attempt`` (re-dispatch after a
    #: server stop, same row): ``retry`` is this row's place in its chain of tries (0: the first),
    #: ``retry_of`` the chain's first task, ``retried_as`` the next try once one was made
    retry: int = 0
    retry_of: str | None = None
    retried_as: str | None = None
    #: a waiting retry is queued at this time (epoch s; its delay)
    not_before: float | None = None
    #: the parameters it ran with, ``$value`` / ``$result`` references resolved at dispatch (None: not yet / none)
    run_parameters: dict[str, Any] | None = None
    #: of its dependencies (first tries' ids), those that have not ended yet; kept in memory, recomputed at start
    waiting_for: list[str] = field(default_factory=list)
    #: shared by the tasks of one batch submission of several tasks, and their retries (None: submitted alone)
    batch_id: str | None = None

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
            "attempt": self.attempt,
            "schedule_id": self.schedule_id,
            "scheduled_for": isotime(self.scheduled_for),
            "values": dict(self.values),
            # what it runs with (papermill's parameters): the Compare view's columns; references resolved once dispatched
            "parameters": dict(self.run_parameters if self.run_parameters is not None else self.submission.get("parameters") or {}),
            "parameter_refs": {k: v for k, v in (self.submission.get("parameters") or {}).items() if is_reference(v)},
            "key": self.submission.get("key"),
            "depends_on": list(self.submission.get("depends_on") or []),
            "waiting_for": list(self.waiting_for),
            "retry": self.retry,
            "retry_of": self.retry_of,
            "retried_as": self.retried_as,
            "not_before": isotime(self.not_before),
            "batch_id": self.batch_id,
        }


#: the reference forms a parameter value may take (``server/workflows.py`` resolves them at dispatch)
REFERENCE_KINDS = ("$value", "$result")


def is_reference(value: Any) -> bool:
    """``{"$value": "KEY_OR_ID.name"}`` or ``{"$result": "KEY_OR_ID"}``: a dependency's recorded value or result."""
    return (
        isinstance(value, dict) and len(value) == 1 and next(iter(value)) in REFERENCE_KINDS and isinstance(next(iter(value.values())), str)
    )


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
