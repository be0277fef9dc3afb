"""``Dispatcher``: takes queued tasks into free slots and sees each one to a terminal status.

One dispatcher coroutine waits for work, for "not paused" and for a slot
(``asyncio.Semaphore(max_concurrent_tasks)``), then pops the highest-priority, oldest
task. A running task's lifecycle, all here: build its notebook (off the loop), mark it
running, arm its timeout, hand the job to the executor, and record the outcome. Whatever
fails (a malformed file, the executor, the service itself), the task ends terminal with
the reason; a stop (cancel, timeout, server stop) ends it as asked even if its runner
never returns. A slot frees only once the task's kernel has exited: the cap counts real
processes.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import TaskRunError
from ..execution.executor import JobResult, TaskJob
from ..execution.submission import build_notebook
from ..models import EventType, Task, TaskStatus, TaskSubmission

if TYPE_CHECKING:
    from .service import TaskRun


@dataclass
class RunningTask:
    """A dispatched task: its runner, and what a stop asked for."""

    task: Task
    future: asyncio.Future[Any] | None = None
    stop_status: TaskStatus | None = None
    stop_reason: str | None = None
    timer: asyncio.TimerHandle | None = None
    started: float = field(default_factory=time.monotonic)
    #: stopped by the server stopping (not by a cancel or a timeout)
    interrupted: bool = False


def encode_notebook(nb: Any) -> bytes:
    return json.dumps(nb).encode()


#: Notebooks (sources + outputs) and code submissions up to this size are built and encoded on the
#: loop: that takes a fraction of a millisecond, while handing them to a thread and back cost ~0.8 ms
#: each on a pool hit (traced; the two were a fifth of a warm ``print(1)`` task). Bigger ones go to
#: a thread, so the loop never stalls on them.
INLINE_BYTES = 64 * 1024


def small_code(sub: TaskSubmission) -> bool:
    """Code or cells, nothing to read from disk or resolve, small enough to build on the loop."""
    if sub.path is not None or sub.notebook is not None or sub.cwd is not None or sub.parameters:
        return False
    sources = [sub.code] if sub.code is not None else list(sub.cells or [])
    return sum(len(src) for src in sources) <= INLINE_BYTES


def notebook_size_hint(result: JobResult) -> int:
    """About what ``encode_notebook`` will write: the output the runner counted plus the sources."""
    cells = result.notebook.get("cells") or []
    sources = sum(len(c.get("source") or "") for c in cells if isinstance(c, dict))
    return int(result.metrics.get("output_bytes") or 0) + sources + 256 * len(cells)


class Dispatcher:
    """The service's dispatch loop and its running tasks (``TaskRun.dispatcher``)."""

    def __init__(self, service: TaskRun):
        self.service = service
        self.recorder = service.recorder
        self.log = service.log
        #: dispatched tasks, by id, until their runner is done
        self.running: dict[str, RunningTask] = {}
        self._slots: asyncio.Semaphore | None = None
        self._dispatching = asyncio.Event()
        self._dispatching.set()

    # ----------------------------------------------------------------- control

    def pause(self) -> None:
        """Stop starting queued tasks (running ones go on); submissions still queue."""
        self._dispatching.clear()

    def resume(self) -> None:
        self._dispatching.set()

    @property
    def paused(self) -> bool:
        return not self._dispatching.is_set()

    def interrupt_all(self, reason: str) -> list[RunningTask]:
        """Server stop: kill every dispatched task's kernel; one not already stopping (a cancel or
        a timeout keeps its own outcome) is marked to end ``failed`` with ``reason``, unless the
        restart policy re-queues it (``recovery.py``: ``RunningTask.interrupted`` tells it apart)."""
        interrupted = list(self.running.values())  # taken first: a runner's cleanup removes itself
        for running in interrupted:
            if running.stop_status is None:
                running.stop_status = TaskStatus.FAILED
                running.stop_reason = reason
                running.interrupted = True
            self.service.executor_impl.kill(running.task.id)
        return interrupted

    def stop_running(self, task_id: str, status: TaskStatus, reason: str) -> None:
        """Stop a running task (cancel, timeout): interrupt, then kill; idempotent."""
        running = self.running.get(task_id)
        if running is None or running.stop_status is not None:
            return  # already stopping: cancel is idempotent
        running.stop_status = status
        running.stop_reason = reason
        self.service._spawn(self.service.executor_impl.interrupt_and_kill(task_id, self.service.interrupt_grace))
        self.service._spawn(self._end_if_wedged(running))

    async def _end_if_wedged(self, running: RunningTask) -> None:
        """A stop must end the task even if its runner never returns (a kernel that never gets
        ready, a hung executor): after the grace, the task is ended as asked and its runner cancelled."""
        wait = self.service.interrupt_grace + self.service.stop_grace
        await asyncio.sleep(wait)
        task = running.task
        if task.status.is_terminal:
            return
        self.log.warning("taskrun: task %s did not stop within %.1f s; ending it", task.id, wait)
        self.service.executor_impl.kill(task.id)
        self.end_stopped(running, TaskStatus.CANCELLED)
        if running.future is not None and not running.future.done():
            running.future.cancel()  # its cleanup (kill, reap, release the slot) still runs

    # ---------------------------------------------------------------- the loop

    async def run_forever(self) -> None:
        service = self.service
        slots = self._slots = asyncio.Semaphore(service.max_concurrent_tasks)
        while True:
            # wait for work first, then for permission and a slot; pop only when all three hold,
            # so a pause never strands a task outside the queue
            await service.queue.wait_not_empty()
            await self._dispatching.wait()
            await slots.acquire()
            task_id = None
            try:
                task_id = service.queue.pop_nowait() if self._dispatching.is_set() else None
                if task_id is None:
                    slots.release()
                    continue
                task = self.recorder.active.get(task_id)
                if task is None or task.status != TaskStatus.QUEUED:
                    slots.release()
                    continue
                running = RunningTask(task=task)
                self.running[task_id] = running
                fut = service._spawn(self._run_one(running))
                running.future = fut
                fut.add_done_callback(lambda _f: slots.release())
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the dispatcher must never die, nor keep a task it popped
                self.log.exception("taskrun: dispatching %s failed", task_id)
                slots.release()
                if task_id is not None:
                    self.running.pop(task_id, None)
                    self.fail_safely(task_id, f"internal error while dispatching: {type(e).__name__}: {e}")

    def end_stopped(self, running: RunningTask, status: TaskStatus = TaskStatus.FAILED, reason: str | None = None) -> None:
        """End a task as its stop asked (``status``/``reason`` if none was asked); one the server's
        stop interrupted goes to the restart policy, which may re-queue it (``recovery.py``)."""
        if running.interrupted:
            self.service.restart_policy.interrupted(running.task)
            return
        self.recorder.finish(running.task, running.stop_status or status, reason=running.stop_reason or reason)

    def fail_safely(self, task_id: str, reason: str) -> None:
        """End a task ``failed`` whatever state the service is in; never raises."""
        try:
            task = self.recorder.active.get(task_id) or self.service.store.get_task(task_id)
            if not task.status.is_terminal:
                self.recorder.finish(task, TaskStatus.FAILED, reason=reason)
        except Exception:
            self.log.exception("taskrun: could not record the failure of %s", task_id)

    # --------------------------------------------------------- one task's run

    async def _run_one(self, running: RunningTask) -> None:
        """Run one dispatched task. Whatever fails - building the notebook (a malformed file, deep
        parameters), the executor, the service itself - the task ends terminal with the reason."""
        task = running.task
        finish = self.recorder.finish
        try:
            await self._run_task(running)
        except asyncio.CancelledError:
            if not self.service.stopped and not task.status.is_terminal:  # stop() records its own reason
                finish(task, running.stop_status or TaskStatus.FAILED, reason=running.stop_reason or "the task's runner was cancelled")
            raise
        except Exception as e:
            self.log.exception("taskrun: task %s failed", task.id)
            when = "while running" if task.status == TaskStatus.RUNNING else "before it could start"
            reason = running.stop_reason or f"internal error {when}: {type(e).__name__}: {e}"
            if not task.status.is_terminal:
                try:
                    self.end_stopped(running, reason=reason[:2000])
                except Exception:
                    self.log.exception("taskrun: could not record the failure of %s", task.id)
        finally:
            self.running.pop(task.id, None)
            if not task.status.is_terminal and not self.service.stopped:
                self.fail_safely(task.id, "internal error: the task's runner ended without an outcome")

    async def _build(self, sub: TaskSubmission, kernel_name: str, language: str) -> tuple[Any, dict[str, Any]]:
        """``build_notebook`` in a thread, off the server's loop (files are read there too); a small
        code submission (``small_code``) right here, as a thread hop would cost more than building it.

        Note: a thread keeps the loop turning, but CPU-bound Python in it still competes for the
        GIL; building thousands of cells must stay cheap (no per-cell nbformat validation)."""
        if small_code(sub):
            return build_notebook(sub, self.service.root_dir, kernel_name, language)
        return await asyncio.to_thread(build_notebook, sub, self.service.root_dir, kernel_name, language)

    def _job(self, task: Task, sub: TaskSubmission, nb: Any, context: dict[str, Any]) -> TaskJob:
        s = self.service
        return TaskJob(
            task_id=task.id,
            kernel_name=task.kernel_name,
            notebook=dict(nb),
            context=context,
            env=dict(sub.env),
            cell_timeout=sub.cell_timeout or s.default_cell_timeout or None,
            memory_limit=sub.memory_limit or s.memory_limit or None,
            max_output_bytes=s.max_output_bytes,
            max_notebook_stream_bytes=s.max_notebook_stream_bytes,
            metrics_interval=s.metrics_interval,
            resources=dict(sub.resources),
            variables_in=s.variables.inputs_for(task),
            variables_out=list(sub.variables_out),
            max_variable_bytes=s.max_variable_bytes,
            max_task_variable_bytes=s.max_task_variable_bytes,
            **s.results.job_fields(sub, context),
        )

    async def _run_task(self, running: RunningTask) -> None:
        service, recorder, task = self.service, self.recorder, running.task
        executor = service.executor_impl
        try:
            try:
                sub = TaskSubmission.from_dict(task.submission)
                # {"$value": ...} / {"$result": ...}: the dependencies' values, now (workflows.py)
                sub.parameters = service.workflows.resolve_parameters(task, sub.parameters)
                language = service.kernel_language(task.kernel_name)
                # off the loop: reading files and building big notebooks must not stall the server
                nb, context = await self._build(sub, task.kernel_name, language)
                service.check_cell_count(sub, nb)
                if context.get("cwd") is None:
                    context["cwd"] = service.root_dir
            except TaskRunError as e:
                recorder.finish(task, TaskStatus.FAILED, reason=str(e))
                return
            now = time.time()
            task.started_at = now
            task.metrics["queue_wait"] = round(now - task.created_at, 6)
            recorder.set_status(task, TaskStatus.RUNNING)
            timeout = sub.timeout or service.default_timeout or None
            if timeout:
                running.timer = asyncio.get_running_loop().call_later(
                    timeout, self.stop_running, task.id, TaskStatus.TIMED_OUT, f"task exceeded its timeout of {timeout:g} s"
                )
            job = self._job(task, sub, nb, context)

            def emit(type: str, data: dict[str, Any]) -> None:
                recorder.emit(task, type, data)

            def on_kernel(pid: int | None) -> None:
                task.kernel_pid = pid
                recorder.mark_dirty(task)
                if running.stop_status is not None:
                    executor.kill(task.id)  # cancelled while its kernel was starting

            if running.stop_status is not None:
                self.end_stopped(running)
                return
            try:
                result = await executor.run(job, emit, on_kernel)
            except asyncio.CancelledError:
                raise
            except TaskRunError as e:
                self.end_stopped(running, reason=str(e))
                return
            except Exception as e:  # a broken task must never take the server down
                self.log.exception("taskrun: task %s failed in the executor", task.id)
                self.end_stopped(running, reason=f"{type(e).__name__}: {e}")
                return
            if notebook_size_hint(result) <= INLINE_BYTES:
                notebook_blob = encode_notebook(result.notebook)
            else:
                notebook_blob = await asyncio.to_thread(encode_notebook, result.notebook)
            self._complete(task, running, result, notebook_blob)
        finally:
            if running.timer:
                running.timer.cancel()
            self.running.pop(task.id, None)
            # the task is already reported finished; its slot frees once the kernel has exited
            await executor.release(task.id)

    def _complete(self, task: Task, running: RunningTask, result: JobResult, notebook_blob: bytes | None = None) -> None:
        recorder = self.recorder
        task.metrics.update(result.metrics)
        task.metrics["wall"] = round(time.time() - (task.started_at or time.time()), 6)
        if result.worker:
            task.worker = result.worker
            task.metrics["worker"] = result.worker
        try:
            blob = notebook_blob if notebook_blob is not None else encode_notebook(result.notebook)
            self.service.store.put_artifact(task.id, "notebook", blob)
        except TaskRunError as e:
            self.log.error("taskrun: could not store the notebook of %s: %s", task.id, e)
        try:
            self.service.variables.store_outputs(task, result.variables)
        except TaskRunError as e:
            self.log.error("taskrun: could not store the variables of %s: %s", task.id, e)
        try:
            self.service.results.keep_artifacts(task, result.artifacts)
        except TaskRunError as e:
            self.log.error("taskrun: could not store the output files of %s: %s", task.id, e)
        outcome = result.outcome
        if running.stop_status is not None:
            # the kill we sent made the kernel "die": report what the user (or the server's stop) asked for instead
            self.end_stopped(running)
            return
        task.exit_code = outcome.exit_code
        if outcome.result is not None:
            task.result = outcome.result
            recorder.emit(task, EventType.RESULT, outcome.result)
        if outcome.status == TaskStatus.COMPLETED:
            recorder.finish(task, TaskStatus.COMPLETED)
        else:
            error = outcome.error or {}
            recorder.finish(task, outcome.status, reason=error.get("reason"), error=error)
