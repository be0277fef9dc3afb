"""REST handlers of a task's results: recorded values and output files (``server/results.py``).

Owner-only like every task route (``visible_task``: another user gets 404). A file is served
byte-identical as an attachment with its guessed type, ``nosniff`` and a sandboxing CSP, so a
task's HTML or SVG output never runs with the server's origin.
"""

from __future__ import annotations

import os

from jupyter_server.auth.decorator import authorized
from tornado import web

from .base import TaskRunHandler
from .tasks import content_disposition

#: a downloaded file that a browser shows anyway runs in an opaque origin, without scripts
SANDBOX_CSP = "sandbox"


class ValuesHandler(TaskRunHandler):
    """``GET /tasks/{id}/values``: latest per name and every recording (``TaskResults.values``)."""

    @web.authenticated
    @authorized
    async def get(self, task_id: str) -> None:
        await self.visible_task(task_id)
        self.write_json(self.taskrun.results.values(task_id))


class FilesHandler(TaskRunHandler):
    """``GET /tasks/{id}/files``: the collected ``outputs``, the refused ones and the patterns that matched nothing."""

    @web.authenticated
    @authorized
    async def get(self, task_id: str) -> None:
        await self.visible_task(task_id)
        self.write_json(self.taskrun.results.files(task_id))


class FileHandler(TaskRunHandler):
    """``GET /tasks/{id}/files/{path}``: one collected file, as it was on disk."""

    @web.authenticated
    @authorized
    async def get(self, task_id: str, path: str) -> None:
        await self.visible_task(task_id)
        data, entry = self.taskrun.results.file(task_id, path)
        stem, suffix = os.path.splitext(os.path.basename(path))
        self.set_header("Content-Disposition", content_disposition(stem or "file", suffix))
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Content-Security-Policy", SANDBOX_CSP)
        self.set_header("X-Checksum-Sha256", entry["sha256"])
        self.finish(data, set_content_type=entry["content_type"])
