"""REST handlers of a task's variables (``variables_out``): parse → ``TaskVariables`` → serialise.

Owner only: another user (an admin too) gets the same 404 as for a task that does not exist,
since loading someone else's pickle would run their code in your kernel.
"""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from tornado import web

from ...errors import TaskNotFound
from ...models import Task
from .base import TaskRunHandler
from .tasks import content_disposition


class _OwnerOnly(TaskRunHandler):
    async def owned_task(self, task_id: str) -> Task:
        task = self.taskrun.get(task_id)
        if task.owner and task.owner != self.username:
            raise TaskNotFound(f"no task with id {task_id!r}")
        return task


class VariablesHandler(_OwnerOnly):
    """``GET …/tasks/{id}/variables``: names, sizes, types and errors."""

    @web.authenticated
    @authorized
    async def get(self, task_id: str) -> None:
        task = await self.owned_task(task_id)
        self.write_json(self.taskrun.variables.listing(task))


class VariableHandler(_OwnerOnly):
    """``GET …/tasks/{id}/variables/{name}``: the pickle's bytes (``application/octet-stream``)."""

    @web.authenticated
    @authorized
    async def get(self, task_id: str, name: str) -> None:
        task = await self.owned_task(task_id)
        data = self.taskrun.variables.data(task, name)
        self.set_header("Content-Disposition", content_disposition(name.lstrip("@") or "variable", ".pickle"))
        self.set_header("X-Content-Type-Options", "nosniff")
        self.finish(data, set_content_type="application/octet-stream")
