"""HTTP routes of the extension (all under ``{base_url}taskrun/api``)."""

from __future__ import annotations

from typing import Any

from .docs import docs_routes
from .results import FileHandler, FilesHandler, ValuesHandler
from .schedules import ScheduleHandler, SchedulePreviewHandler, ScheduleRunHandler, SchedulesHandler
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
from .variables import VariableHandler, VariablesHandler
from .workflows import AttemptsHandler, DependenciesHandler

_ID = r"(?P<task_id>[0-9a-f]{32})"
_SID = r"(?P<schedule_id>[0-9a-f]{32})"
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
        (rf"{API}/tasks/{_ID}/values", ValuesHandler),
        (rf"{API}/tasks/{_ID}/files", FilesHandler),
        (rf"{API}/tasks/{_ID}/files/(?P<path>.+)", FileHandler),
        (rf"{API}/tasks/{_ID}/attempts", AttemptsHandler),
        (rf"{API}/tasks/{_ID}/dependencies", DependenciesHandler),
        (rf"{API}/tasks/{_ID}/variables", VariablesHandler),
        (rf"{API}/tasks/{_ID}/variables/(?P<name>[^/]+)", VariableHandler),
        (rf"{API}/schedules", SchedulesHandler),
        (rf"{API}/schedules/preview", SchedulePreviewHandler),
        (rf"{API}/schedules/{_SID}", ScheduleHandler),
        (rf"{API}/schedules/{_SID}/run", ScheduleRunHandler),
        (rf"{API}/events", ChangesHandler),
        (rf"{API}/status", StatusHandler),
        (rf"{API}/openapi.json", OpenAPIHandler),
        *docs_routes(API),
        (rf"{API}/(.*)", NotFoundHandler),
    ]
