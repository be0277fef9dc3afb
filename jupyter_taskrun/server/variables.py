"""``TaskVariables``: the server's side of ``variables_in`` / ``variables_out`` (opaque pickles).

Guarantees:

* **Never unpickled here.** The server checks a pickle's envelope only (valid base64, a pickle's
  first byte, the size caps) and stores and serves bytes. Only the submitter's own kernels load
  them: the task kernel (``--in``), the notebook's kernel (``--out``).
* **Bad input is refused whole** (``InvalidSubmission``, naming the field: ``'variables_in.df'``,
  ``'variables_out[2]'``) before anything is stored.
* **Stored as artifacts**, in the task's own submit transaction for the inputs: ``variable-in:<name>``
  and ``variable-out:<name>`` hold the bytes, ``variables`` a JSON index (names, sizes, types,
  errors). The stored submission keeps the input *names* only (``{"df": ""}``), so listing tasks
  never reads megabytes of base64; a rerun puts the bytes back (``resubmission``).
* **Owner only.** The routes (``handlers/variables.py``) serve a task's variables to its owner,
  admins included in "others": loading someone's pickle runs their code in your kernel.
* A variable's failure (not defined at the end, unpicklable, over a cap) is its own ``error``;
  the task's status is what it would have been without it.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import TYPE_CHECKING, Any

from ..errors import InvalidSubmission, TaskNotFound, VariableNotReady, VariableUnavailable
from ..execution.variables import RESULT_NAME, is_variable_name
from ..formatting import format_bytes
from ..models import Task, TaskStatus, TaskSubmission

if TYPE_CHECKING:
    from .service import TaskRun

INDEX = "variables"
IN_PREFIX = "variable-in:"
OUT_PREFIX = "variable-out:"
#: most variables one task takes in (``variables_out`` has the same bound, in the schema)
MAX_VARIABLES = 64
#: pickles of protocol 2 and later (cloudpickle writes 5) start with the PROTO opcode
_PICKLE_START = b"\x80"


def _decode(text: str, field: str) -> bytes:
    if not text:
        raise InvalidSubmission(f"{field} is empty: give the base64 of the variable's pickle")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidSubmission(f"{field} is not valid base64") from None
    if not data.startswith(_PICKLE_START):
        raise InvalidSubmission(f"{field} is not a pickle (protocol 2 or later, as cloudpickle writes)")
    return data


class TaskVariables:
    """Checks, stores and serves one server's task variables (``TaskRun.variables``)."""

    def __init__(self, service: TaskRun):
        self.service = service

    @property
    def _store(self) -> Any:
        return self.service.store

    # -- submission ------------------------------------------------------------------

    def check(self, sub: TaskSubmission, language: str) -> None:
        """Refuse what cannot work, naming the field; called by ``TaskRun.validate``."""
        if not sub.variables_in and not sub.variables_out:
            return
        if (language or "python").lower() != "python" and not sub.variables_in and sub.variables_out == [RESULT_NAME]:
            # %%taskrun asks every task for its last expression's object; another language has none to pickle
            sub.variables_out = []
            return
        if (language or "python").lower() != "python":
            field = "variables_in" if sub.variables_in else "variables_out"
            raise InvalidSubmission(
                f"'{field}' needs a Python kernel: variables travel as Python pickles, and this kernel's language is {language}"
            )
        if len(sub.variables_in) > MAX_VARIABLES:
            raise InvalidSubmission(f"'variables_in' may hold at most {MAX_VARIABLES} variables, not {len(sub.variables_in)}")
        cap, total_cap = self.service.max_variable_bytes, self.service.max_task_variable_bytes
        total = 0
        for name, text in sub.variables_in.items():
            field = f"'variables_in.{name}'"
            if not is_variable_name(name):
                raise InvalidSubmission(f"{field}: {name!r} is a Python keyword, not a variable name")
            data = _decode(text, field)
            if len(data) > cap:
                raise InvalidSubmission(
                    f"{field} is {format_bytes(len(data))} pickled, over the cap of {format_bytes(cap)} per variable (c.TaskRun.max_variable_bytes)"
                )
            total += len(data)
        if total > total_cap:
            raise InvalidSubmission(
                f"'variables_in' hold {format_bytes(total)} pickled, over the cap of {format_bytes(total_cap)} in all (c.TaskRun.max_task_variable_bytes)"
            )
        for i, name in enumerate(sub.variables_out):
            if name != RESULT_NAME and not is_variable_name(name):
                raise InvalidSubmission(
                    f"'variables_out[{i}]': {name!r} is not a Python variable name (nor {RESULT_NAME!r}, the last expression's value)"
                )

    def store_inputs(self, task: Task) -> None:
        """Move the input pickles out of the task's submission into its artifacts (inside the submit
        transaction, before the task row is written), and write the index."""
        submission = task.submission
        inputs = submission.get("variables_in") or {}
        outputs = list(submission.get("variables_out") or [])
        if not inputs and not outputs:
            return
        sizes = []
        for name, text in inputs.items():
            data = _decode(text, f"'variables_in.{name}'")
            self._store.put_artifact(task.id, IN_PREFIX + name, data)
            sizes.append({"name": name, "size": len(data)})
        if inputs:
            submission["variables_in"] = {name: "" for name in inputs}
        self._write_index(task.id, {"inputs": sizes, "requested": outputs, "ready": False, "variables": []})

    def resubmission(self, task: Task) -> dict[str, Any]:
        """The task's submission as it was sent (input pickles back in place), for a rerun."""
        submission = dict(task.submission)
        names = submission.get("variables_in") or {}
        if names:
            submission["variables_in"] = {name: base64.b64encode(self._bytes(task.id, IN_PREFIX + name)).decode("ascii") for name in names}
        return submission

    def inputs_for(self, task: Task) -> dict[str, bytes]:
        """The input pickles to restore in the task kernel (``TaskJob.variables_in``)."""
        names = (task.submission or {}).get("variables_in") or {}
        return {name: self._bytes(task.id, IN_PREFIX + name) for name in names}

    def _bytes(self, task_id: str, name: str) -> bytes:
        data = self._store.get_artifact(task_id, name)
        if data is None:
            raise TaskNotFound(f"task {task_id} has lost its stored variable {name!r}")
        return data

    # -- results -----------------------------------------------------------------------

    def store_outputs(self, task: Task, entries: list[dict[str, Any]] | None) -> None:
        """Keep what the task sent back (``JobResult.variables``), before its status says it ended."""
        if entries is None:
            return
        index = self._index(task.id) or {"inputs": [], "requested": [e["name"] for e in entries]}
        kept = []
        with self._store.transaction():
            for entry in entries:
                data = entry.get("data")
                if data is not None and entry.get("error") is None:
                    self._store.put_artifact(task.id, OUT_PREFIX + entry["name"], bytes(data))
                else:
                    data = None
                kept.append({"name": entry["name"], "size": entry.get("size"), "type": entry.get("type"), "error": entry.get("error")})
            index.update(ready=True, variables=kept)
            self._write_index(task.id, index)

    def listing(self, task: Task) -> dict[str, Any]:
        """``GET …/variables``: what was requested, and each variable's size, type and error."""
        index = self._index(task.id) or {"inputs": [], "requested": [], "ready": False, "variables": []}
        requested = list(index.get("requested") or [])
        variables = list(index.get("variables") or [])
        ready = bool(index.get("ready"))
        if not ready and task.status.is_terminal:
            ready = True
            reason = self._why_not_sent(task)
            variables = [{"name": n, "size": None, "type": None, "error": reason} for n in requested]
        return {
            "task_id": task.id,
            "status": task.status.value,
            "ready": ready,
            "requested": requested,
            "variables": variables,
            "inputs": list(index.get("inputs") or []),
        }

    def data(self, task: Task, name: str) -> bytes:
        """``GET …/variables/{name}``: the pickle's bytes, or why there are none."""
        listing = self.listing(task)
        if name not in listing["requested"]:
            asked = ", ".join(listing["requested"]) or "none"
            raise TaskNotFound(f"task {task.id} sends back no variable {name!r} (its variables_out: {asked})")
        if not listing["ready"]:
            raise VariableNotReady(f"task {task.id} is {task.status.value}: its variables come back when it completes")
        entry = next(e for e in listing["variables"] if e["name"] == name)
        if entry.get("error"):
            raise VariableUnavailable(entry["error"])
        return self._bytes(task.id, OUT_PREFIX + name)

    @staticmethod
    def _why_not_sent(task: Task) -> str:
        if task.status == TaskStatus.COMPLETED:
            return "not sent back: the task completed without collecting its variables"
        reason = (task.error or {}).get("reason")
        return f"not sent back: the task ended {task.status.value}" + (f" ({reason})" if reason else "")

    def _index(self, task_id: str) -> dict[str, Any] | None:
        raw = self._store.get_artifact(task_id, INDEX)
        return json.loads(raw) if raw else None

    def _write_index(self, task_id: str, index: dict[str, Any]) -> None:
        self._store.put_artifact(task_id, INDEX, json.dumps(index).encode("utf-8"))
