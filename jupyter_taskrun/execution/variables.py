"""Python variables into and out of a task kernel (``variables_in`` / ``variables_out``).

In: the submitter's kernel pickled each variable (cloudpickle). ``stage_inputs`` hands the
bytes to the task kernel in a silent execution of their own (so no payload is ever part of code
a traceback shows), then the task's silent setup restores them (``restore_code``) before the
first cell: no output, no log, no history. A pickle that does not load there fails the task's
setup with a ``VariableError`` naming the variable.

Out: once every cell has run and the task completed, one hidden execution (``collect``) pickles
each requested variable with cloudpickle (plain pickle when cloudpickle is missing) and sends
the bytes back as the binary buffers of one comm message on IOPub, so nothing is base64- or
JSON-encoded on the way and no formatter touches them. Each variable carries its own error
instead of failing the task: not defined at the end, not picklable, over a cap
(``c.TaskRun.max_variable_bytes`` per variable, ``max_task_variable_bytes`` per task; an
oversized pickle is refused whole, never cut). ``@result`` (``RESULT_NAME``) is the last
expression's value, captured by a ``post_run_cell`` hook the setup registers on the shell
(not in the user's namespace).

Nothing here unpickles: bytes are only ever loaded in the submitter's own kernels.
"""

from __future__ import annotations

import keyword
import time
from queue import Empty
from typing import Any

from ..formatting import format_bytes
from .kernels import TaskKernel

#: the reserved ``variables_out`` name of the last expression's value (never a Python identifier)
RESULT_NAME = "@result"
#: target name of the comm message that carries the pickles back
COMM_TARGET = "jupyter_taskrun.variables"
#: seconds the collecting execution may take before every variable is reported not sent
COLLECT_TIMEOUT = 120.0


def is_variable_name(name: Any) -> bool:
    """A name a notebook can assign: a Python identifier that is not a keyword."""
    return isinstance(name, str) and name.isidentifier() and not keyword.iskeyword(name)


#: staged first, by itself: a payload is never part of code whose traceback a user may see
_STAGE = "get_ipython()._taskrun_inputs = %s\n"

_RESTORE = """\
def __taskrun_restore(names):
    import base64, pickle
    class VariableError(Exception):
        pass
    ip = get_ipython()
    payloads = getattr(ip, "_taskrun_inputs", None) or {}
    ip._taskrun_inputs = None
    for name in names:
        if name not in payloads:
            raise VariableError(f"--in {name}: its value did not reach the task kernel")
        try:
            ip.user_ns[name] = pickle.loads(base64.b64decode(payloads.pop(name)))
        except Exception as e:
            raise VariableError(f"--in {name}: cannot unpickle it in the task kernel: {type(e).__name__}: {e}") from None
try:
    __taskrun_restore(%s)
finally:
    del __taskrun_restore
"""

_CAPTURE = """\
def __taskrun_capture():
    box = []
    def keep(result):
        if result.result is not None:
            box[:] = [result.result]
    ip = get_ipython()
    ip.events.register("post_run_cell", keep)
    ip._taskrun_last_result = box
try:
    __taskrun_capture()
finally:
    del __taskrun_capture
"""

_COLLECT = """\
def __taskrun_collect(names, limit, total_limit, result_name, target):
    import pickle
    try:
        import cloudpickle as dumper
    except ImportError:
        dumper = pickle
    from comm import create_comm
    ip = get_ipython()
    ns = ip.user_ns
    entries, buffers, total = [], [], 0
    for name in names:
        entry = {"name": name, "size": None, "type": None, "error": None}
        entries.append(entry)
        if name == result_name:
            box = getattr(ip, "_taskrun_last_result", [])
            value = box[0] if box else None
        elif name not in ns:
            entry["error"] = "missing"
            continue
        else:
            value = ns[name]
        kind = type(value)
        entry["type"] = f"{kind.__module__}.{kind.__qualname__}"
        try:
            data = dumper.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except BaseException as e:
            entry["error"] = "unpicklable"
            entry["detail"] = f"{type(e).__name__}: {e}"[:2000]
            continue
        entry["size"] = len(data)
        if len(data) > limit:
            entry["error"] = "over-variable-cap"
        elif total + len(data) > total_limit:
            entry["error"] = "over-task-cap"
        else:
            total += len(data)
            entry["buffer"] = len(buffers)
            buffers.append(data)
        del value, data
    create_comm(target_name=target, data={"variables": entries}, buffers=buffers)
"""


def restore_code(inputs: list[str], outputs: list[str]) -> str | None:
    """Setup code for the task kernel: restore the staged ``inputs``; capture the last result if asked."""
    parts = []
    if inputs:
        parts.append(_RESTORE % repr(list(inputs)))
    if RESULT_NAME in outputs:
        parts.append(_CAPTURE)
    return "".join(parts) or None


async def stage_inputs(kernel: TaskKernel, inputs: dict[str, bytes], timeout: float = 60.0) -> None:
    """Hand the pickles to the task kernel (silently) before the setup restores them.

    Never raises: if they do not arrive, the restore code fails the task's setup naming them.
    """
    if not inputs:
        return
    import base64

    payloads = {name: base64.b64encode(data).decode("ascii") for name, data in inputs.items()}
    await _hidden(kernel, _STAGE % repr(payloads), timeout)


async def _hidden(kernel: TaskKernel, code: str, timeout: float) -> dict[str, Any]:
    """A silent execute (no output, no history); its reply, or ``{}`` if the kernel died or took too long."""
    msg_id = kernel.kc.execute(code, silent=True, store_history=False, allow_stdin=False)
    deadline = time.monotonic() + timeout
    while kernel.is_alive() and time.monotonic() < deadline:
        try:
            msg = await kernel.kc.shell_channel.get_msg(timeout=0.25)
        except Empty:
            continue
        if msg["parent_header"].get("msg_id") == msg_id:
            return dict(msg["content"])
    return {}


def join_setup(*parts: str | None) -> str | None:
    return "\n".join(p for p in parts if p) or None


def _message(entry: dict[str, Any], limit: int, total_limit: int) -> str | None:
    """The error of one variable, in words, naming it."""
    name, code, size = entry["name"], entry.get("error"), entry.get("size")
    label = "the last expression's value" if name == RESULT_NAME else repr(name)
    if code is None:
        return None
    if code == "missing":
        return f"{label} is not defined when the task ends"
    if code == "unpicklable":
        return f"cannot pickle {label} ({entry.get('type')}): {entry.get('detail')}"
    if code == "over-variable-cap":
        return f"{label} is {format_bytes(size)} pickled, over the cap of {format_bytes(limit)} per variable (c.TaskRun.max_variable_bytes)"
    if code == "over-task-cap":
        return (
            f"{label} ({format_bytes(size)} pickled) would take the task's variables over their cap of "
            f"{format_bytes(total_limit)} in all (c.TaskRun.max_task_variable_bytes)"
        )
    return str(code)


def not_sent(names: list[str], reason: str) -> list[dict[str, Any]]:
    return [{"name": n, "size": None, "type": None, "error": reason, "data": None} for n in names]


async def collect(
    kernel: TaskKernel, names: list[str], limit: int, total_limit: int, timeout: float = COLLECT_TIMEOUT
) -> list[dict[str, Any]]:
    """Pickle ``names`` in the (idle, alive) task kernel and bring the bytes back.

    Returns one entry per name: ``{"name", "size", "type", "error", "data"}`` (``data``: the
    pickle's bytes, or None when ``error`` says why not). Never raises for a variable's sake;
    a dead or silent kernel makes every entry an error.
    """
    kc = kernel.kc
    call = f"__taskrun_collect({list(names)!r}, {int(limit)}, {int(total_limit)}, {RESULT_NAME!r}, {COMM_TARGET!r})"
    code = f"{_COLLECT}try:\n    {call}\nfinally:\n    del __taskrun_collect\n"
    msg_id = kc.execute(code, silent=True, store_history=False, allow_stdin=False)
    deadline = time.monotonic() + timeout
    carried: dict[str, Any] | None = None
    idle = False
    while not idle:
        if not kernel.is_alive():
            return not_sent(names, "not sent back: the task kernel died while pickling its variables")
        if time.monotonic() > deadline:
            return not_sent(names, f"not sent back: the task kernel did not send its variables within {timeout:g} s")
        try:
            msg = await kc.iopub_channel.get_msg(timeout=0.25)
        except Empty:
            continue
        if msg["parent_header"].get("msg_id") != msg_id:
            continue  # another request's late output: the durable channel already kept its text
        kind = msg["msg_type"]
        if kind == "comm_open" and msg["content"].get("target_name") == COMM_TARGET:
            carried = msg
        elif kind == "status" and msg["content"].get("execution_state") == "idle":
            idle = True
    if carried is None:
        reply = await _reply(kernel, msg_id)
        why = f"{reply.get('ename')}: {reply.get('evalue')}" if reply.get("status") == "error" else "no answer"
        return not_sent(names, f"not sent back: collecting the variables failed in the task kernel ({why})")
    buffers = [bytes(b) for b in carried.get("buffers") or []]
    out = []
    for entry in (carried["content"].get("data") or {}).get("variables", []):
        index = entry.pop("buffer", None)
        data = buffers[index] if isinstance(index, int) and 0 <= index < len(buffers) else None
        error = _message(entry, limit, total_limit)
        out.append({"name": entry["name"], "size": entry.get("size"), "type": entry.get("type"), "error": error, "data": data})
    return out


async def _reply(kernel: TaskKernel, msg_id: str, timeout: float = 2.0) -> dict[str, Any]:
    """The execute_reply of ``msg_id`` (``{}`` if it does not come in time)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            msg = await kernel.kc.shell_channel.get_msg(timeout=0.25)
        except Empty:
            continue
        if msg["parent_header"].get("msg_id") == msg_id:
            return dict(msg["content"])
    return {}
