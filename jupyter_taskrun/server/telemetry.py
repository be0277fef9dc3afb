"""Task telemetry through the tools the Jupyter server already has.

- Prometheus metrics on the server's ``/metrics`` endpoint (jupyter_server
  exposes prometheus_client's default registry there).
- jupyter_events structured events (schema ``event_schemas/task/v1.yaml``) on the
  server's ``event_logger``, for audit logs and monitoring pipelines.

Privacy: the structured events identify a task's work (id, name, owner, kernel, failure
reason), and jupyter_server relays everything on its event bus to *any* user allowed to open
``/api/events/subscribe``, whoever's task it is. So they are **off by default**; a server whose
event bus only reaches its operators turns them on with ``c.TaskRun.emit_task_events = True``
(``TaskRun`` then hands its ``event_logger`` to ``TaskTelemetry``; without it nothing is emitted).
The Prometheus figures are aggregates (counts and durations by status, no id, name or owner).
"""

from __future__ import annotations

import logging
from importlib.resources import files
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from ..models import Task, TaskStatus

TASK_SCHEMA_ID = "https://events.jupyter.org/jupyter_taskrun/task/v1"

SUBMITTED = Counter("jupyter_taskrun_tasks_submitted_total", "Tasks submitted.")
FINISHED = Counter("jupyter_taskrun_tasks_finished_total", "Tasks finished, by final status.", ["status"])
RUNNING = Gauge("jupyter_taskrun_tasks_running", "Tasks running now.")
QUEUED = Gauge("jupyter_taskrun_tasks_queued", "Tasks waiting in the queue now.")
QUEUE_WAIT = Histogram(
    "jupyter_taskrun_queue_wait_seconds", "Seconds from submission to start.",
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 1800, float("inf")),
)  # fmt: skip
WALL = Histogram(
    "jupyter_taskrun_task_wall_seconds", "Seconds from start to end of finished tasks.",
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 1800, 7200, float("inf")),
)  # fmt: skip


class TaskTelemetry:
    """Records status changes; never lets a telemetry failure touch a task."""

    def __init__(self, event_logger: Any = None, log: logging.Logger | None = None):
        self.event_logger = event_logger
        self.log = log or logging.getLogger(__name__)
        if event_logger is not None:
            try:
                event_logger.register_event_schema(files("jupyter_taskrun").joinpath("event_schemas/task/v1.yaml"))
            except Exception as e:  # an older jupyter_events, or registered twice
                self.log.debug("taskrun: task event schema not registered: %s", e)

    def gauges(self, running: int, queued: int) -> None:
        RUNNING.set(running)
        QUEUED.set(queued)

    def status(self, task: Task) -> None:
        try:
            if task.status == TaskStatus.QUEUED:
                SUBMITTED.inc()
            elif task.status == TaskStatus.RUNNING:
                if "queue_wait" in task.metrics:
                    QUEUE_WAIT.observe(task.metrics["queue_wait"])
            elif task.status.is_terminal:
                FINISHED.labels(task.status.value).inc()
                if task.started_at and task.finished_at:
                    WALL.observe(task.finished_at - task.started_at)
            if self.event_logger is not None:
                self.event_logger.emit(
                    schema_id=TASK_SCHEMA_ID,
                    data={
                        "task_id": task.id,
                        "status": task.status.value,
                        "name": task.name,
                        "owner": task.owner,
                        "kernel_name": task.kernel_name,
                        "reason": (task.error or {}).get("reason"),
                        "wall": (task.finished_at - task.started_at) if task.started_at and task.finished_at else None,
                    },
                )
        except Exception:
            self.log.exception("taskrun: telemetry failed")
