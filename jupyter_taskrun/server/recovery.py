"""The restart policy: what becomes of the tasks a server stop interrupts.

At start-up (``TaskRun.start``) ``recover`` kills the orphan kernels of a server that died
without cleaning up (found by their marker), then takes the tasks the store still has as queued
or running, oldest first, and puts them back in the queue in that order (priority, then FIFO,
as before the stop); *waiting* ones (``workflows.py``) wait again for what they waited for:

* a *queued* task is queued again as it was;
* a *running* task was interrupted. By default it ends ``failed``, "interrupted: ..." (part of
  its code ran; running it again is the user's call). A task that opted in (submission field
  ``requeue_on_restart: true``), or any task when ``c.TaskRun.requeue_interrupted`` is set, is
  re-queued instead: at-least-once execution, like Celery's ``acks_late``. It runs again from
  the start as run number ``attempt`` (on the task), announced by a ``status`` event
  ``queued``, "re-queued after the server stopped (attempt 2)", and a server log line. Once
  re-queued ``c.TaskRun.max_requeue_attempts`` times, the next interruption fails it
  "interrupted" as without the policy.

A clean stop (``TaskRun.stop``) applies the same rule to the tasks it interrupts (``on_stop``),
so the store tells the truth while the server is down; the running tasks of a killed server
are found at the next start. A task being cancelled or timed out when the server stops keeps
that outcome.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ..execution.kernels import kill_marked_processes
from ..models import Task, TaskStatus
from .store import task_attempt

if TYPE_CHECKING:
    from .dispatch import RunningTask
    from .service import TaskRun

#: why a task the server stopped under ends failed
INTERRUPTED = "interrupted: server stopped while the task was running"


def requeued_reason(attempt: int) -> str:
    return f"re-queued after the server stopped (attempt {attempt})"


class RestartPolicy:
    """Recovery at start-up and the fate of interrupted tasks (``TaskRun.restart_policy``)."""

    def __init__(self, service: TaskRun):
        self.service = service

    def wants_requeue(self, task: Task) -> bool:
        """Did the task (``requeue_on_restart``) or the server (``requeue_interrupted``) opt in?"""
        return bool(self.service.requeue_interrupted or (task.submission or {}).get("requeue_on_restart") is True)

    def interrupted(self, task: Task) -> None:
        """A task the server stopped under: back in the queue, or ended ``failed``. One still
        queued (taken from the queue, not started yet) stays queued if it opted in."""
        service = self.service
        if task.status.is_terminal or (task.status == TaskStatus.QUEUED and self.wants_requeue(task)):
            return  # already decided (its runner got there first), or it never ran: the store has it queued
        attempt = task_attempt(task)
        reason = INTERRUPTED
        if task.status == TaskStatus.RUNNING and self.wants_requeue(task):
            limit = service.max_requeue_attempts
            if attempt <= limit:
                service.recorder.requeue(task, attempt + 1, requeued_reason(attempt + 1))
                service.queue.put(task.id, task.priority, force=True)
                service.log.info("taskrun: task %s %s", task.id, requeued_reason(attempt + 1))
                return
            reason = f"{INTERRUPTED} (attempt {attempt}; re-queued {attempt - 1} times, c.TaskRun.max_requeue_attempts = {limit})"
        service.recorder.finish(task, TaskStatus.FAILED, reason=reason)

    async def recover(self) -> None:
        """Start-up: kill the previous server's orphan kernels, then queue its queued and
        interrupted tasks again (``interrupted`` decides for the running ones)."""
        service = self.service
        killed = await asyncio.to_thread(kill_marked_processes, prefix=service.server_marker + ":")
        if service.stopped:
            return  # the store is closed
        if killed:
            service.log.warning("taskrun: killed %d orphan kernel process(es) of a previous server", len(killed))
        # oldest first, one pass: a re-queued task keeps its place among the queued ones
        tasks = service.store.tasks_with_status(TaskStatus.RUNNING, TaskStatus.QUEUED, TaskStatus.WAITING)
        for task in tasks:  # all active first: an interrupted task's end moves its waiting dependents
            service.recorder.active[task.id] = task
        service.workflows.recover(tasks)
        for task in tasks:
            if task.status == TaskStatus.RUNNING:
                self.interrupted(task)
            elif task.status == TaskStatus.QUEUED:
                service.queue.put(task.id, task.priority, force=True)
        service.workflows.settle()  # waiting tasks whose dependencies ended: queued, cancelled or timed
        service.recorder.flush()

    def on_stop(self, stopped: list[RunningTask]) -> None:
        """A clean stop: end (or re-queue) the tasks whose runners did not record an outcome."""
        for running in stopped:
            if not running.task.status.is_terminal:
                # a cancel or a timeout under way keeps its outcome; the others: ``interrupted``
                self.service.dispatcher.end_stopped(running)
