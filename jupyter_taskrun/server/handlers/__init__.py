"""HTTP routes of the extension (all under ``{base_url}taskrun/api``)."""

from __future__ import annotations

from typing import Any

from .streams import ChangesHandler, TaskEventsHandler, TaskWebSocketHandler
from .tasks import (
    BatchHandler,
    CancelHandler,
    LogsHandler,
    MetricsHandler,
    NotebookHandler,
    NotFoundHandler,
    OpenAPIHandler,
    OutputsHandler,
    RerunHandler,
    StatusHandler,
    TaskHandler,
    TasksHandler,
)

_ID = r"(?P<task_id>[0-9a-f]{32})"
API = r"/taskrun/api"


def handler_routes() -> list[tuple[str, Any]]:
    return [
        (rf"{API}/tasks", TasksHandler),
        (rf"{API}/tasks/batch", BatchHandler),
        (rf"{API}/tasks/{_ID}", TaskHandler),
        (rf"{API}/tasks/{_ID}/cancel", CancelHandler),
        (rf"{API}/tasks/{_ID}/rerun", RerunHandler),
        (rf"{API}/tasks/{_ID}/logs", LogsHandler),
        (rf"{API}/tasks/{_ID}/outputs", OutputsHandler),
        (rf"{API}/tasks/{_ID}/notebook", NotebookHandler),
        (rf"{API}/tasks/{_ID}/metrics", MetricsHandler),
        (rf"{API}/tasks/{_ID}/events", TaskEventsHandler),
        (rf"{API}/tasks/{_ID}/ws", TaskWebSocketHandler),
        (rf"{API}/events", ChangesHandler),
        (rf"{API}/status", StatusHandler),
        (rf"{API}/openapi.json", OpenAPIHandler),
        (rf"{API}/(.*)", NotFoundHandler),
    ]
