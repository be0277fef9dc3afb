"""``TaskHandle``: a small Python object standing for one task, and ``TaskFailedError``.

``%%taskrun --as h`` binds one; ``TaskHandle(client, task_id)`` makes one for any task
(made by REST, the CLI or another notebook). Every property that shows live state asks
the server (it is a thin wrapper of ``TaskRunClient``), so a handle never goes stale.
"""

from __future__ import annotations

import ast
from typing import Any

from ..models import TERMINAL_STATUSES, TaskStatus

__all__ = ["RESULT_NAME", "TaskFailedError", "TaskHandle", "VariableError", "decode_result"]

_TERMINAL = {s.value for s in TERMINAL_STATUSES}
#: the reserved ``variables_out`` name of the last expression's object (as ``execution/variables.py`` says)
RESULT_NAME = "@result"


def decode_result(result: dict[str, Any] | None) -> Any:
    """A task's ``result`` (the last expression's mime bundle) as a Python value.

    ``application/json`` wins when the task displayed JSON; otherwise the ``text/plain``
    repr is read back with ``ast.literal_eval`` (numbers, strings, lists, dicts, ...), and
    when that fails (a DataFrame, an object) the text itself is returned. ``None`` when the
    task has no result.
    """
    if not result:
        return None
    data = result.get("data") if isinstance(result.get("data"), dict) else result
    if not isinstance(data, dict):
        return None
    if "application/json" in data:
        return data["application/json"]
    text = data.get("text/plain")
    if isinstance(text, list):  # nbformat may split multi-line strings
        text = "".join(text)
    if not isinstance(text, str):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def _not_requested(name: str, requested: list[str]) -> str:
    if name == RESULT_NAME:
        return "the task was not asked to send back its last expression's object (%%taskrun asks for it; a REST task needs '@result' in variables_out); h.result has its displayed value"
    asked = ", ".join(n for n in requested if n != RESULT_NAME) or "none"
    return f"the task was not asked to send back {name!r} (its --out / variables_out: {asked})"


class TaskFailedError(RuntimeError):
    """A task ended ``failed``, ``cancelled`` or ``timed_out``.

    Raised by ``%%taskrun --wait``, ``%taskrun wait`` and ``TaskHandle.get_result()``.
    Attributes: ``task`` (the task JSON), ``task_id``, ``name``, ``status``, ``ename``,
    ``evalue``, ``reason`` and ``remote_traceback`` (the task kernel's traceback lines).
    In IPython the traceback shown is the task's own, not this module's.
    """

    #: False when the task's traceback is already on screen (the ``%%taskrun --wait`` panel shows it):
    #: then IPython shows the one-line message only, not the same traceback a second time
    show_remote_traceback: bool = True

    def __init__(self, task: dict[str, Any], *, show_remote_traceback: bool = True):
        self.show_remote_traceback = show_remote_traceback
        self.task = task
        self.task_id: str = task.get("id", "")
        self.name: str = task.get("name") or self.task_id
        self.status: str = task.get("status", "")
        error = task.get("error") or {}
        self.ename: str = error.get("ename") or self.status
        self.evalue: str = error.get("evalue") or ""
        self.reason: str = error.get("reason") or self.evalue or self.status
        self.remote_traceback: list[str] = list(error.get("traceback") or [])
        super().__init__(f"task {self.name!r} ({self.task_id[:8]}) {self.status}: {self.reason}")

    def _render_traceback_(self) -> list[str]:
        """IPython shows this instead of a traceback through the magic's internals."""
        red, reset = "\x1b[0;31m", "\x1b[0m"
        lines = [f"{red}TaskFailedError{reset}: {self}"]
        if self.remote_traceback and not self.show_remote_traceback:
            lines.append(f"(the traceback of task {self.task_id[:8]} is in its panel above)")
        elif self.remote_traceback:
            lines.append(f"--- traceback in task {self.task_id[:8]} ---")
            lines.extend(self.remote_traceback)
        return lines


class VariableError(RuntimeError):
    """A variable could not go into a task (``--in``) or come back from it (``--out``, ``get``, ``pull``).

    The message names every variable concerned and why: not in the notebook, not picklable,
    not defined when the task ended, over a size cap, not loadable in this kernel.
    ``errors`` maps each name to its reason; ``task_id`` is the task's (None before submission).
    """

    def __init__(self, message: str, *, errors: dict[str, str] | None = None, task_id: str | None = None):
        super().__init__(message)
        self.errors = dict(errors or {})
        self.task_id = task_id

    def _render_traceback_(self) -> list[str]:
        """IPython shows the message, not a traceback through this module."""
        return [f"\x1b[0;31mVariableError\x1b[0m: {self}"]


class TaskHandle:
    """One task on the server: ``id``, ``status``, ``wait()``, ``logs()``, ``outputs()``,
    ``cancel()``, ``result`` and more.

    >>> h = TaskHandle(client, task_id)
    >>> h.wait()["status"]
    'completed'
    >>> h.result          # the last expression's value
    42
    """

    def __init__(self, client: Any, task: str | dict[str, Any]):
        self.client = client
        if isinstance(task, dict):
            self.id: str = task["id"]
            self._task: dict[str, Any] | None = task
        else:
            self.id = task
            self._task = None

    # -- state -----------------------------------------------------------------

    @property
    def task(self) -> dict[str, Any]:
        """The task JSON, fresh from the server (cached once the task has finished)."""
        if self._task is None or self._task.get("status") not in _TERMINAL:
            self._task = self.client.get(self.id)
        return self._task

    def refresh(self) -> dict[str, Any]:
        self._task = self.client.get(self.id)
        return self._task

    @property
    def name(self) -> str:
        task = self._task if self._task is not None else self.task
        return task.get("name") or self.id

    @property
    def status(self) -> str:
        """``queued``, ``running``, ``completed``, ``failed``, ``cancelled`` or ``timed_out``."""
        return self.task["status"]

    @property
    def done(self) -> bool:
        return self.status in _TERMINAL

    @property
    def progress(self) -> dict[str, Any] | None:
        return self.task.get("progress")

    @property
    def error(self) -> dict[str, Any] | None:
        return self.task.get("error")

    @property
    def result(self) -> Any:
        """The last expression's value (see ``decode_result``); ``None`` until the task completes."""
        return decode_result(self.task.get("result"))

    # -- waiting ------------------------------------------------------------------

    def wait(self, timeout: float | None = None) -> dict[str, Any]:
        """Block until the task has finished; returns the final task JSON (never raises on failure)."""
        self._task = self.client.wait(self.id, timeout)
        return self._task

    def get_result(self, timeout: float | None = None) -> Any:
        """Wait, then return ``result``; raise ``TaskFailedError`` if the task did not complete."""
        task = self.wait(timeout)
        if task.get("status") != TaskStatus.COMPLETED.value:
            raise TaskFailedError(task)
        return decode_result(task.get("result"))

    # -- variables (``%%taskrun --out``; ipyparallel's get / pull) ---------------------

    def variables(self) -> dict[str, Any]:
        """What the task sends back: ``{"ready", "requested", "variables": [{"name", "size", "type", "error"}], ...}``."""
        return self.client.variables(self.id)

    def get(self, name: str | None = None, timeout: float | None = None) -> Any:
        """Wait for the task, then return the variable ``name`` it sent back (``--out name``),
        unpickled here; no name: the last expression's Python object (``h.result`` is its display).

        Raises ``TaskFailedError`` if the task did not complete, ``VariableError`` naming the
        variable when it has none to give (not defined at the end, not picklable, over a cap).
        """
        key = RESULT_NAME if name is None else name
        return self._load([key], timeout)[key]

    def pull(
        self, names: str | list[str] | None = None, *, namespace: dict[str, Any] | None = None, timeout: float | None = None
    ) -> list[str]:
        """Wait for the task, then assign the variables it sent back (default: every ``--out`` name)
        in ``namespace`` (default: the notebook's). All or nothing: if one cannot be loaded, a
        ``VariableError`` names each that failed and none is assigned. Returns the names assigned."""
        wanted = [names] if isinstance(names, str) else list(names) if names is not None else None
        values = self._load(wanted, timeout)
        if namespace is None:
            from IPython import get_ipython

            shell = get_ipython()
            if shell is None:
                raise VariableError("pull() assigns into the notebook's namespace: outside IPython, pass namespace=")
            namespace = shell.user_ns
        namespace.update(values)
        return list(values)

    def _load(self, names: list[str] | None, timeout: float | None) -> dict[str, Any]:
        import pickle

        task = self.wait(timeout)
        if task.get("status") != TaskStatus.COMPLETED.value:
            raise TaskFailedError(task)
        listing = self.client.variables(self.id)
        requested = list(listing.get("requested") or [])
        if names is None:
            names = [n for n in requested if n != RESULT_NAME]
            if not names:
                raise VariableError(f"task {self.id[:8]} sends back no variables (give %%taskrun --out NAME ...)", task_id=self.id)
        entries = {e["name"]: e for e in listing.get("variables") or []}
        errors: dict[str, str] = {}
        for name in names:
            if name not in requested:
                errors[name] = _not_requested(name, requested)
            elif (entries.get(name) or {}).get("error"):
                errors[name] = entries[name]["error"]
        values: dict[str, Any] = {}
        if not errors:
            for name in names:
                data = self.client.variable_bytes(self.id, name)
                try:
                    values[name] = pickle.loads(data)  # noqa: S301 - the owner's own task made it (the server serves it to them only)
                except Exception as e:
                    label = "the last expression's value" if name == RESULT_NAME else repr(name)
                    errors[name] = f"cannot unpickle {label} in this kernel: {type(e).__name__}: {e}"
        if errors:
            assigned = " (nothing was assigned)" if len(names) > 1 else ""
            raise VariableError(
                f"task {self.name!r} ({self.id[:8]}): " + "; ".join(errors.values()) + assigned, errors=errors, task_id=self.id
            )
        return values

    # -- artifacts and actions ------------------------------------------------------

    def logs(self, stream: str | None = None) -> str:
        """The task's log text so far (stdout and stderr merged, or one ``stream``)."""
        return self.client.logs(self.id, stream)

    def outputs(self) -> list[dict[str, Any]]:
        """Rich outputs (nbformat output dicts, each with ``cell_index``)."""
        return self.client.outputs(self.id)

    def metrics(self) -> dict[str, Any]:
        return self.client.metrics(self.id)

    def notebook(self, save: str | None = None) -> dict[str, Any]:
        """The executed notebook; with ``save=path`` the server writes it into its contents."""
        return self.client.notebook(self.id, save=save)

    def cancel(self) -> dict[str, Any]:
        self._task = self.client.cancel(self.id)
        return self._task

    def rerun(self) -> TaskHandle:
        return TaskHandle(self.client, self.client.rerun(self.id))

    def panel(self, *, start: bool = True) -> Any:
        """A live ``TaskPanel`` widget of this task."""
        from .panel import TaskPanel

        return TaskPanel(self.client, self.id, start=start)

    # -- display ---------------------------------------------------------------------

    def __repr__(self) -> str:
        status = (self._task or {}).get("status", "?")
        name = (self._task or {}).get("name")
        label = f" {name!r}" if name else ""
        return f"<TaskHandle {self.id[:8]}{label} {status}>"

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.panel())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TaskHandle) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)
