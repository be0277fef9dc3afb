"""Run one prepared notebook in one kernel with nbclient, reporting everything as events.

This is the only code that executes tasks: the local executor calls it in the
server's event loop, the Dask executor calls it on a worker. It knows nothing
of the store, HTTP or Dask - it reports through ``emit(type, data)``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionComplete, CellExecutionError, CellTimeoutError, DeadKernelError
from nbformat import NotebookNode

from ..models import EventType, TaskStatus
from .kernels import TaskKernel, describe_exit, execute_silently, reap, watch_process_exit
from .output_parsing import crash_location, crash_report, parse_tqdm, system_exit_code
from .processes import ProcessTreeSampler

log = logging.getLogger(__name__)

# progress() sends a display message with PROGRESS_MIME; intercepted here, never shown.
from ..progress import PROGRESS_MIME  # noqa: E402
from ..values import MAX_VALUE_NAMES, VALUE_MIME, value_event  # noqa: E402  (record(): the same, as ``value`` events)

Emit = Callable[[str, dict[str, Any]], None]

#: ipywidgets progress bars (tqdm.notebook) become progress events
_PROGRESS_MODELS = {"IntProgressModel", "FloatProgressModel"}

#: longest an fd-level chunk waits for IOPub to deliver the Python-level text written before it
HOLD_SECONDS = 0.5


@dataclass
class RunOutcome:
    status: TaskStatus
    error: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    #: see ``Task.exit_code``
    exit_code: int | None = None


class TaskNotebookClient(NotebookClient):
    """nbclient's executor, reporting each message as it arrives instead of only at the end."""

    def __init__(self, nb: NotebookNode, runner: NotebookRunner, **kw: Any):
        super().__init__(nb, **kw)
        self.runner = runner
        self._progress_comms: dict[str, dict[str, Any]] = {}
        self._pollers: set[asyncio.Task[Any]] = set()

    async def _async_poll_output_msg(self, parent_msg_id: str, cell: NotebookNode, cell_index: int) -> None:
        # nbclient's loop, plus: stream text of other requests (a thread still printing after its
        # cell ended) is not in the notebook, as with nbclient, but it is in the logs, and counted
        # as delivered for the durable channel's reconciliation
        assert self.kc is not None
        runner = self.runner
        runner.cell_parents.add(parent_msg_id)
        while True:
            msg = await self.kc.iopub_channel.get_msg(timeout=None)
            parent = msg["parent_header"].get("msg_id", "")
            if parent == parent_msg_id:
                try:
                    self.process_message(msg, cell, cell_index)
                except CellExecutionComplete:
                    return
            elif msg["msg_type"] == "stream":
                content = msg["content"]
                name, text = content.get("name", "stdout"), content.get("text", "")
                if runner.durable is not None:
                    runner.confirm_stream(name, text, parent)
                if parent in runner.cell_parents:  # an earlier cell's thread; not kernel start-up noise
                    runner.emit_log(name, text)

    async def _async_poll_kernel_alive(self) -> None:
        # nbclient cancels this poller only when a reply arrives; when the cell is cancelled from
        # outside (kernel death, memory limit, cancel) it would stay pending: keep a handle on it
        task = asyncio.current_task()
        if task is not None:
            self._pollers.add(task)
        try:
            await super()._async_poll_kernel_alive()
        finally:
            if task is not None:
                self._pollers.discard(task)

    async def cancel_pollers(self) -> None:
        pollers = list(self._pollers)
        for task in pollers:
            task.cancel()
        await asyncio.gather(*pollers, return_exceptions=True)

    def process_message(self, msg: dict[str, Any], cell: NotebookNode, cell_index: int) -> NotebookNode | None:
        msg_type = msg["msg_type"]
        if msg_type == "update_display_data":
            content = msg["content"]
            self.runner.emit_output(
                cell_index,
                {"output_type": "display_data", "data": content.get("data", {}), "metadata": content.get("metadata", {})},
                display_id=(content.get("transient") or {}).get("display_id"),
                update=True,
            )
        elif msg_type in ("comm_open", "comm_msg"):
            self._watch_progress_widget(msg)
        return super().process_message(msg, cell, cell_index)

    def _hooked(self, msg: dict[str, Any]) -> bool:
        """An Output widget captures this message's outputs (nbclient's output hooks)."""
        return bool(self.output_hook_stack[msg["parent_header"].get("msg_id")])

    def output(self, outs: list[NotebookNode], msg: dict[str, Any], display_id: str | None, cell_index: int) -> NotebookNode | None:
        msg_type = msg["msg_type"]
        content = msg["content"]
        runner = self.runner
        if msg_type == "stream":
            text = content.get("text", "")
            name = content.get("name", "stdout")
            if runner.durable is not None:
                runner.confirm_stream(name, text, msg["parent_header"].get("msg_id", ""))
            if self._hooked(msg):
                runner.emit_log(name, text)
                return super().output(outs, msg, display_id, cell_index)
            return self.add_stream(outs, cell_index, name, text)
        if msg_type == "display_data" and PROGRESS_MIME in content.get("data", {}):
            runner.emit_progress(content["data"][PROGRESS_MIME])
            return None
        if msg_type == "display_data" and VALUE_MIME in content.get("data", {}):
            runner.emit_value(content["data"][VALUE_MIME])
            return None
        clearing = self.clear_before_next_output and not self._hooked(msg)
        out = super().output(outs, msg, display_id, cell_index)
        if clearing and not self.clear_before_next_output:
            runner.emit(EventType.CLEAR, {"cell_index": cell_index})  # nbclient's delayed clear ran
        if out is not None:
            runner.emit_output(cell_index, dict(out), display_id=display_id)
            if msg_type == "execute_result":
                runner.result = {"data": dict(content.get("data", {})), "cell_index": cell_index}
        return out

    def add_stream(self, outs: list[NotebookNode], cell_index: int, name: str, text: str) -> NotebookNode | None:
        """Stream text into a cell, as nbclient does (a pending ``clear_output(wait=True)`` runs
        first), coalesced with the cell's last output of the same stream, as JupyterLab shows it."""
        runner = self.runner
        runner.emit_log(name, text)
        if self.clear_before_next_output:
            outs[:] = []
            self.clear_display_id_mapping(cell_index)
            self.clear_before_next_output = False
            runner.emit(EventType.CLEAR, {"cell_index": cell_index})
        return runner.keep_stream(outs, name, text)

    def clear_output(self, outs: list[NotebookNode], msg: dict[str, Any], cell_index: int) -> None:
        hooked = self._hooked(msg)
        super().clear_output(outs, msg, cell_index)
        if not hooked and not msg["content"].get("wait"):
            self.runner.emit(EventType.CLEAR, {"cell_index": cell_index})

    def _watch_progress_widget(self, msg: dict[str, Any]) -> None:
        """tqdm.notebook / ipywidgets progress bars become progress events."""
        content = msg["content"]
        comm_id = content.get("comm_id")
        state = (content.get("data") or {}).get("state") or {}
        if msg["msg_type"] == "comm_open":
            if state.get("_model_name") in _PROGRESS_MODELS:
                self._progress_comms[comm_id] = {"value": state.get("value", 0), "total": state.get("max")}
            return
        tracked = self._progress_comms.get(comm_id)
        if tracked is None or not state:
            return
        if "max" in state:
            tracked["total"] = state["max"]
        if "value" in state:
            tracked["value"] = state["value"]
            self.runner.emit_progress({"value": tracked["value"], "total": tracked["total"], "message": ""})


class NotebookRunner:
    """Executes one notebook in one (already started) kernel; disposes the kernel at the end."""

    def __init__(
        self,
        kernel: TaskKernel,
        nb: NotebookNode,
        emit: Emit,
        *,
        setup_code: str | None = None,
        cell_timeout: float | None = None,
        max_output_bytes: int = 64 * 1024 * 1024,
        max_notebook_stream_bytes: int = 4 * 1024 * 1024,
        memory_limit: int | None = None,
        sample_interval: float = 0.5,
        log: logging.Logger = log,
    ):
        self.kernel = kernel
        self.nb = nb
        self._emit = emit
        self.setup_code = setup_code
        self.cell_timeout = cell_timeout
        self.max_output_bytes = max_output_bytes
        self.max_notebook_stream_bytes = max_notebook_stream_bytes
        self.notebook_stream_full = False
        self.memory_limit = memory_limit
        self.sample_interval = sample_interval
        self.log = log
        self.result: dict[str, Any] | None = None
        self.output_bytes = 0
        self.stored_stream_bytes = 0
        self.truncated = False
        self.cell_durations: list[dict[str, Any]] = []
        self.sampler: ProcessTreeSampler | None = None
        self.stop_reason: str | None = None
        self._exec: asyncio.Future[Any] | None = None
        self.durable = kernel.durable
        self._readers: set[int] = set()
        #: msg_ids of the task's cell executions: only their text is recovered from the tee
        self.cell_parents: set[str] = set()
        #: fd-level chunks waiting for the Python-level text written before them (pump_durable)
        self._held: list[tuple[str, str, dict[tuple[str, str], int], float]] = []
        self._hold_timer: asyncio.TimerHandle | None = None
        #: a ``.py`` script: exit codes as ``python script.py`` gives them
        self.is_script = False
        #: the last cell that ran: output arriving between cells (a thread, a daemon) belongs to it
        self._last_cell_index: int | None = None
        self.client: TaskNotebookClient | None = None
        self._last_progress: dict[str, Any] | None = None
        self._value_names: set[str] = set()  # record() names seen: at most values.MAX_VALUE_NAMES
        self.started = time.monotonic()

    # -- reporting -------------------------------------------------------------

    def emit(self, type: str, data: dict[str, Any]) -> None:
        try:
            self._emit(type, data)
        except Exception:  # a reporting failure must not break the execution
            self.log.exception("taskrun: could not record a %s event", type)

    def _count(self, nbytes: int) -> bool:
        """Account output; False once the task is over its stored-output budget."""
        self.output_bytes += nbytes
        if self.output_bytes <= self.max_output_bytes:
            return True
        if not self.truncated:
            self.truncated = True
            self.emit(
                EventType.TRUNCATED,
                {
                    "limit": self.max_output_bytes,
                    "message": f"output beyond {self.max_output_bytes} bytes is not stored; the task keeps running",
                },
            )
        return False

    def emit_log(self, stream: str, text: str) -> None:
        if self._count(len(text.encode("utf-8", "replace"))):
            self.emit(EventType.LOG, {"stream": stream, "text": text})
        if stream == "stderr" and "%|" in text:
            state = parse_tqdm(text)
            if state is not None:
                self.emit_progress(state)

    def keep_stream(self, outs: list[NotebookNode], name: str, text: str) -> NotebookNode | None:
        """Coalesce stream text into the cell's outputs, within the notebook's stream budget.

        The full log lives in the event store; the executed notebook keeps at most
        ``max_notebook_stream_bytes`` of it, so a task printing gigabytes never
        holds them in the server's memory.
        """
        if self.notebook_stream_full:
            return None
        self.stored_stream_bytes += len(text)
        if self.stored_stream_bytes > self.max_notebook_stream_bytes:
            self.notebook_stream_full = True
            text = f"\n[jupyter_taskrun: output truncated in this notebook after {self.max_notebook_stream_bytes} bytes; the full log is in the task's logs]\n"
        if outs and outs[-1].get("output_type") == "stream" and outs[-1].get("name") == name:
            outs[-1]["text"] += text
            return outs[-1]
        out = NotebookNode(output_type="stream", name=name, text=text)
        outs.append(out)
        return out

    def emit_output(self, cell_index: int, output: dict[str, Any], *, display_id: str | None = None, update: bool = False) -> None:
        import json

        size = len(json.dumps(output, default=str))
        if not self._count(size):
            return
        data: dict[str, Any] = {"cell_index": cell_index, "output": output}
        if display_id:
            data["display_id"] = display_id
        if update:
            data["update"] = True
        self.emit(EventType.OUTPUT, data)

    def emit_progress(self, raw: Any) -> None:
        if not isinstance(raw, dict):
            return
        value = raw.get("value")
        total = raw.get("total")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return
        if total is not None and (isinstance(total, bool) or not isinstance(total, (int, float))):
            total = None
        state = {"value": value, "total": total, "message": str(raw.get("message") or "")[:500]}
        if state != self._last_progress:
            self._last_progress = state
            self.emit(EventType.PROGRESS, state)

    def emit_value(self, raw: Any) -> None:
        """A ``record()`` message: checked again (``values.value_event``), counted as output."""
        data = value_event(raw)
        if data is None or (data["name"] not in self._value_names and len(self._value_names) >= MAX_VALUE_NAMES):
            return  # record() refuses these in the task; a kernel sending its own messages is held to it too
        self._value_names.add(data["name"])
        if self._count(len(json.dumps(data, default=str))):
            self.emit(EventType.VALUE, data)

    # -- the durable channel (durable.py) ----------------------------------------

    def confirm_stream(self, name: str, text: str, parent: str) -> None:
        assert self.durable is not None
        self.durable.confirm(name, text, parent)
        if self._held:
            self._release_held()
        tee = self.durable.fileno("tee")
        if tee not in self._readers and not self.durable.tee_paused and not self.durable.closed:
            self._watch(tee)

    def _watch(self, fd: int) -> None:
        asyncio.get_running_loop().add_reader(fd, self.pump_durable)
        self._readers.add(fd)

    def _unwatch_all(self) -> None:
        loop = asyncio.get_running_loop()
        for fd in self._readers:
            loop.remove_reader(fd)
        self._readers.clear()

    def pump_durable(self) -> None:
        """Forward fd-level output (C writes, subprocesses); keep the tee's text for the end.

        An fd-level chunk waits until IOPub has delivered the Python-level text written
        before it (a few ms: the kernel's flush interval, at most ``HOLD_SECONDS``), so
        ``print(...); os.write(1, ...)`` keeps its order in the cell.
        """
        durable = self.durable
        if durable is None or durable.closed:
            return
        for name, text in durable.drain():
            self._held.append((name, text, durable.tee_marks(), time.monotonic()))
        self._release_held()
        tee = durable.fileno("tee")
        if durable.tee_paused:
            durable.forget(self.cell_parents)  # text of requests that are not the task's cells
        if durable.tee_paused and tee in self._readers:
            asyncio.get_running_loop().remove_reader(tee)  # back-pressure: the kernel waits
            self._readers.discard(tee)

    def _release_held(self, *, all_of_them: bool = False) -> None:
        durable = self.durable
        now = time.monotonic()
        while self._held:
            name, text, marks, since = self._held[0]
            if not (all_of_them or (durable is not None and durable.delivered(marks)) or now - since > HOLD_SECONDS):
                if self._hold_timer is None:
                    self._hold_timer = asyncio.get_running_loop().call_later(HOLD_SECONDS, self._on_hold_timer)
                return
            self._held.pop(0)
            self._add_stream(name, text)

    def _on_hold_timer(self) -> None:
        self._hold_timer = None
        self._release_held()

    def recover_durable(self) -> None:
        """At the end, dead or alive: whatever IOPub never delivered, from the pipes, once.

        Python-level text first: in the pipes it was written before what fds 1 and 2 still hold.
        """
        durable = self.durable
        if durable is None or durable.closed:
            return
        while True:  # the tee may have been paused with more frames waiting in the pipe
            chunks = durable.drain()
            late = durable.take_unconfirmed(self.cell_parents)
            for name, text in late:
                self._add_stream(name, text)
            self._release_held(all_of_them=True)
            for name, text in chunks:
                self._add_stream(name, text)
            if not chunks and not late:
                break
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None

    def _add_stream(self, name: str, text: str) -> None:
        index = self._cell_index if self._cell_index is not None else self._last_cell_index
        if index is None or self.client is None:
            self.emit_log(name, text)
            return
        cell = self.nb.cells[index]
        self.client.add_stream(cell.setdefault("outputs", []), index, name, text)

    # -- execution -------------------------------------------------------------

    def _internal_stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        if self._exec is not None and not self._exec.done():
            self._exec.cancel()

    async def _sample_forever(self) -> None:
        assert self.sampler is not None
        interval = self.sample_interval if not self.memory_limit else min(self.sample_interval, 0.1)
        next_emit = 0.0
        while True:
            point = self.sampler.sample()
            self.kernel.seen_pids.update(self.sampler.seen)
            now = time.monotonic()
            if now >= next_emit:
                self.emit(EventType.METRICS, point)
                next_emit = now + self.sample_interval
            if self.memory_limit and point["rss"] > self.memory_limit:
                mib = 1024 * 1024
                self._internal_stop(
                    f"memory limit exceeded: the task used {point['rss'] / mib:.0f} MiB, its limit is {self.memory_limit / mib:.0f} MiB"
                )
                self.kernel.kill_now()
                return
            await asyncio.sleep(interval)

    async def run(self) -> RunOutcome:
        """Execute every code cell in order; raises CancelledError if cancelled from outside."""
        kernel = self.kernel
        pid = kernel.pid
        self.sampler = ProcessTreeSampler(pid, baseline=kernel.cpu_baseline) if pid else None
        stop_watch = watch_process_exit(pid, lambda: self._internal_stop(describe_exit(kernel.returncode()))) if pid else None
        if self.durable is not None:
            self.durable.drain()  # fd output of the kernel's start or warm-up is not the task's
            for name in ("stdout", "stderr", "tee"):
                self._watch(self.durable.fileno(name))
        # the execute request goes out before the first sample (a /proc walk): the kernel runs meanwhile
        self._exec = asyncio.ensure_future(self._execute_all())
        sampling = asyncio.ensure_future(self._sample_forever()) if self.sampler else None
        try:
            try:
                outcome = await self._exec
            except asyncio.CancelledError:
                if self.stop_reason is not None and not _outer_cancelled():
                    return await self._died(self.stop_reason)
                raise
            except DeadKernelError:
                return await self._died(self.stop_reason or describe_exit(kernel.returncode()))
            self.recover_durable()
            return outcome
        finally:
            self._unwatch_all()
            if stop_watch:
                stop_watch()
            if self.client is not None:
                await self.client.cancel_pollers()
            if sampling:
                sampling.cancel()
                await asyncio.gather(sampling, return_exceptions=True)
            if self.sampler:
                try:
                    self.emit(EventType.METRICS, self.sampler.sample())
                except Exception:
                    pass

    async def _died(self, reason: str) -> RunOutcome:
        """The kernel is gone (killed, crashed, exited): keep its last words, say where it crashed."""
        self.kernel.kill_now()  # a stop we asked for: make sure no writer is left before the last read
        if self.kernel.process is not None:
            await reap(self.kernel.process, timeout=5.0)  # its exit status, and pipes with no writer left
        self.recover_durable()
        returncode = self.kernel.returncode()
        crash = crash_report(self._stderr_tail())
        if crash:
            where = crash_location(crash)
            reason = f"{reason}, in {where}" if where else reason
        outcome = RunOutcome(
            TaskStatus.FAILED,
            error={
                "ename": "TaskFailed", "evalue": reason, "traceback": crash, "cell_index": self._cell_index,
                "reason": reason,
            },
        )  # fmt: skip
        outcome.exit_code = returncode
        return outcome

    def _stderr_tail(self) -> str:
        """The end of the task's stderr as the notebook holds it (faulthandler writes there)."""
        index = self._cell_index if self._cell_index is not None else self._last_cell_index
        if index is None:
            return ""
        texts = [o.get("text", "") for o in self.nb.cells[index].get("outputs", []) if o.get("name") == "stderr"]
        return "".join(texts)[-65536:]

    _cell_index: int | None = None

    async def _execute_all(self) -> RunOutcome:
        kernel = self.kernel
        if self.setup_code:
            reply = await execute_silently(kernel, self.setup_code)
            if reply.get("status") != "ok":
                msg = f"task setup failed: {reply.get('ename')}: {reply.get('evalue')}"
                return RunOutcome(
                    TaskStatus.FAILED,
                    error={
                        "ename": reply.get("ename", "SetupError"),
                        "evalue": msg,
                        "traceback": reply.get("traceback", []),
                        "cell_index": None,
                        "reason": msg,
                    },
                )
        client = TaskNotebookClient(
            self.nb,
            self,
            km=kernel.km,
            # nbclient's 'timeout' trait is an Integer; timeout_func may return any seconds (1.5)
            timeout_func=(lambda _cell: self.cell_timeout) if self.cell_timeout else None,
            kernel_name=kernel.kernel_name,
            record_timing=True,
            iopub_timeout=10,
        )
        client.kc = kernel.kc
        self.client = client
        for index, cell in enumerate(self.nb.cells):
            if cell.cell_type != "code" or not cell.source.strip():
                continue
            self._cell_index = self._last_cell_index = index
            t0 = time.monotonic()
            self.emit(EventType.CELL, {"cell_index": index, "phase": "start"})
            status = "ok"
            try:
                await client.async_execute_cell(cell, index)
            except CellTimeoutError:
                status = "timeout"
                reason = f"cell {index} exceeded its cell_timeout of {self.cell_timeout:g} s"
                return RunOutcome(
                    TaskStatus.TIMED_OUT,
                    error={"ename": "CellTimeoutError", "evalue": reason, "traceback": [], "cell_index": index, "reason": reason},
                )
            except CellExecutionError as e:
                status = "error"
                self.pump_durable()
                code = system_exit_code(e.ename, e.evalue)
                if code == 0:
                    # papermill's rule, and python's: SystemExit(0 / None) ends the run successfully
                    status = "exit"
                    return RunOutcome(TaskStatus.COMPLETED, result=self.result, exit_code=0)
                reason = f"{e.ename}: {e.evalue}"
                tb = []
                for out in cell.get("outputs", []):
                    if out.get("output_type") == "error":
                        tb = list(out.get("traceback", []))
                if code is not None:
                    reason = f"cell {index} exited with code {code} (SystemExit: {e.evalue})"
                else:
                    reason = f"cell {index} raised {reason}"
                    code = 1 if self.is_script else None  # python script.py exits 1 on an uncaught exception
                return RunOutcome(
                    TaskStatus.FAILED,
                    error={"ename": e.ename, "evalue": e.evalue, "traceback": tb, "cell_index": index, "reason": reason},
                    exit_code=code,
                )
            else:
                self.pump_durable()  # C-level output written during the cell belongs to it
            finally:
                duration = time.monotonic() - t0
                self.cell_durations.append({"cell_index": index, "duration": round(duration, 6), "status": status})
                cell.metadata.setdefault("taskrun", {})["duration"] = round(duration, 6)
                self.emit(EventType.CELL, {"cell_index": index, "phase": "end", "duration": round(duration, 6), "status": status})
        self._cell_index = None
        return RunOutcome(TaskStatus.COMPLETED, result=self.result, exit_code=0 if self.is_script else None)

    def metrics_summary(self) -> dict[str, Any]:
        s = self.sampler
        return {
            "wall": round(time.monotonic() - self.started, 6),
            "cpu_user": round(s.cpu_user, 3) if s else None,
            "cpu_system": round(s.cpu_system, 3) if s else None,
            "peak_rss": s.peak_rss if s else None,
            "output_bytes": self.output_bytes,
            "output_truncated": self.truncated,
            "cell_durations": self.cell_durations,
        }


def _outer_cancelled() -> bool:
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return bool(cancelling and cancelling())
