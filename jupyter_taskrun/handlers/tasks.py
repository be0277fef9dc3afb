"""REST handlers for tasks: parse → call the TaskRun service → serialise."""

from __future__ import annotations

import json
import os
from typing import Any

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..errors import InvalidSubmission, TaskStateConflict
from ..models import TaskStatus
from ..notebook import resolve_path
from .base import TaskRunHandler, TaskRunHTTPError

_STATUSES = {s.value for s in TaskStatus}
MAX_WAIT = 3600.0


class TasksHandler(TaskRunHandler):
    """``/taskrun/api/tasks``: list and submit."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        status = self.query("status")
        statuses = None
        if status:
            statuses = [s for s in status.split(",") if s]
            bad = [s for s in statuses if s not in _STATUSES]
            if bad:
                raise TaskRunHTTPError(400, f"unknown status {bad[0]!r}; use one of {', '.join(sorted(_STATUSES))}", "invalid")
        owner = self.query("owner")
        if not await self.sees_all():
            owner = self.username
        tasks, cursor = self.taskrun.list(
            status=statuses,
            tag=self.query("tag") or None,
            owner=owner or None,
            name=self.query("name") or None,
            limit=int(self.query_number("limit", 50, minimum=1, maximum=500, integer=True)),
            cursor=self.query("cursor") or None,
        )
        self.write_json({"tasks": [self.task_json(t) for t in tasks], "next_cursor": cursor})

    @web.authenticated
    @authorized
    async def post(self) -> None:
        wait = self.query_number("wait", None, maximum=MAX_WAIT)
        task = await self.taskrun.submit(self.json_body(), owner=self.username)
        await self._reply_created(task, wait)

    async def _reply_created(self, task: Any, wait: float | None) -> None:
        base = self.base_url.rstrip("/")
        self.set_header("Location", f"{base}/taskrun/api/tasks/{task.id}")
        if wait:
            task = await self.taskrun.wait(task.id, wait)
            self.write_json(self.task_json(task), 200 if task.status.is_terminal else 202)
            return
        self.write_json(self.task_json(task), 201)


class BatchHandler(TaskRunHandler):
    """``/taskrun/api/tasks/batch``: several submissions, all validated before any is queued."""

    @web.authenticated
    @authorized
    async def post(self) -> None:
        body = self.json_body()
        items = body.get("tasks") if isinstance(body, dict) else body
        if isinstance(body, dict) and set(body) - {"tasks"}:
            raise InvalidSubmission(f"unknown field(s): {', '.join(sorted(set(body) - {'tasks'}))}")
        if not isinstance(items, list):
            raise InvalidSubmission("the body must be {\"tasks\": [submission, ...]}")
        tasks = await self.taskrun.submit_batch(items, owner=self.username)
        self.write_json({"tasks": [self.task_json(t) for t in tasks]}, 201)


class TaskHandler(TaskRunHandler):
    """``/taskrun/api/tasks/{id}``: read and delete."""

    @web.authenticated
    @authorized
    async def get(self, task_id: str) -> None:
        task = await self.visible_task(task_id)
        wait = self.query_number("wait", None, maximum=MAX_WAIT)
        if wait:  # long poll: answer as soon as the task ends
            task = await self.taskrun.wait(task_id, wait)
        self.write_json(self.task_json(task))

    @web.authenticated
    @authorized
    async def delete(self, task_id: str) -> None:
        await self.visible_task(task_id)
        await self.taskrun.delete(task_id)
        self.set_status(204)
        self.finish()


class CancelHandler(TaskRunHandler):
    @web.authenticated
    @authorized
    async def post(self, task_id: str) -> None:
        await self.visible_task(task_id)
        task = await self.taskrun.cancel(task_id)
        self.write_json(self.task_json(task), 202)


class RerunHandler(TaskRunHandler):
    @web.authenticated
    @authorized
    async def post(self, task_id: str) -> None:
        await self.visible_task(task_id)
        task = await self.taskrun.rerun(task_id, owner=self.username)
        self.set_header("Location", f"{self.base_url.rstrip('/')}/taskrun/api/tasks/{task.id}")
        self.write_json(self.task_json(task), 201)


class LogsHandler(TaskRunHandler):
    @web.authenticated
    @authorized
    async def get(self, task_id: str) -> None:
        await self.visible_task(task_id)
        stream = self.query("stream")
        if stream not in (None, "stdout", "stderr"):
            raise TaskRunHTTPError(400, "'stream' must be stdout or stderr", "invalid")
        offset = int(self.query_number("offset", 0, integer=True))
        data = self.taskrun.logs(task_id, stream, offset)
        self.set_header("X-Log-Offset", str(offset + len(data)))
        self.finish(data, set_content_type="text/plain; charset=utf-8")


class OutputsHandler(TaskRunHandler):
    @web.authenticated
    @authorized
    async def get(self, task_id: str) -> None:
        await self.visible_task(task_id)
        self.write_json({"outputs": self.taskrun.outputs(task_id)})


class NotebookHandler(TaskRunHandler):
    """The executed notebook: download it, or ``?save=path`` to write it into the server's contents."""

    @web.authenticated
    @authorized
    async def get(self, task_id: str) -> None:
        task = await self.visible_task(task_id)
        nb = self.taskrun.executed_notebook(task_id)
        if nb is None:
            raise TaskStateConflict(f"task {task_id} has no executed notebook yet ({task.status.value})")
        save = self.query("save")
        if save is not None:
            await self._save(nb, save)
            return
        name = (os.path.splitext(os.path.basename(task.name))[0] or "task").replace('"', "")
        self.set_header("Content-Disposition", f'attachment; filename="{name}-{task.id[:8]}.ipynb"')
        self.finish(json.dumps(nb), set_content_type="application/x-ipynb+json")

    async def _save(self, nb: dict[str, Any], path: str) -> None:
        if not path.endswith(".ipynb"):
            raise InvalidSubmission("'save' must name a .ipynb path")
        # same root rule as task paths: nothing outside the server root, symlinks included
        resolve_path(self.taskrun.root_dir, path, must_exist=False)
        parent = os.path.dirname(path)
        if parent:
            resolve_path(self.taskrun.root_dir, parent, want_dir=True)
        model = {"type": "notebook", "format": "json", "content": nb}
        saved = await self.contents_manager.save(model, path) if _is_async(self.contents_manager.save) else self.contents_manager.save(model, path)
        self.write_json({"path": saved.get("path", path)}, 201)


def _is_async(fn: Any) -> bool:
    import inspect

    return inspect.iscoroutinefunction(fn)


class MetricsHandler(TaskRunHandler):
    @web.authenticated
    @authorized
    async def get(self, task_id: str) -> None:
        await self.visible_task(task_id)
        self.write_json(self.taskrun.metrics(task_id))


class StatusHandler(TaskRunHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.write_json(self.taskrun.status(None if await self.sees_all() else self.username))


class OpenAPIHandler(TaskRunHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        from .openapi import load_spec

        self.write_json(load_spec())


class NotFoundHandler(TaskRunHandler):
    """Unknown paths under the API: a JSON 404 (tornado's default is an HTML page)."""

    async def prepare(self) -> None:
        await super().prepare()  # refuses unauthenticated requests with 403 first
        raise TaskRunHTTPError(404, f"no such endpoint: {self.request.path}", "not-found")
