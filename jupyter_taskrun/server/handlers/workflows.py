"""REST handlers of workflows (``server/workflows.py``): a task's tries, and its dependency graph.

Owner-scoped like every task route: the task must be visible to the caller; what is linked to it
(tries, dependencies, dependents) is shown only where the caller could see it too."""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from tornado import web

from ...models import Task
from .base import TaskRunHandler


class _LinkedHandler(TaskRunHandler):
    async def _visible(self, tasks: list[Task]) -> list[Task]:
        sees_all = None
        out = []
        for task in tasks:
            if task.owner and task.owner != self.username:
                if sees_all is None:
                    sees_all = await self.sees_all()
                if not sees_all:
                    continue
            out.append(task)
        return out


class AttemptsHandler(_LinkedHandler):
    """``GET /tasks/{id}/attempts``: every try of the task's retry chain, the first first."""

    @web.authenticated
    @authorized
    async def get(self, task_id: str) -> None:
        task = await self.visible_task(task_id)
        tries = await self._visible(self.taskrun.workflows.attempts(task))
        self.write_json({"task_id": task.id, "attempts": [self.task_json(t) for t in tries]})


class DependenciesHandler(_LinkedHandler):
    """``GET /tasks/{id}/dependencies``: the last tries of what it waits for and of what waits for it,
    and the ids a cascading cancel would cancel with it."""

    @web.authenticated
    @authorized
    async def get(self, task_id: str) -> None:
        task = await self.visible_task(task_id)
        graph = self.taskrun.workflows.graph(task)
        self.write_json(
            {
                "task_id": task.id,
                "waiting_for": list(task.waiting_for),
                "depends_on": [self.task_json(t) for t in await self._visible(graph["depends_on"])],
                "dependents": [self.task_json(t) for t in await self._visible(graph["dependents"])],
                # what ``POST …/cancel?cascade=1`` would cancel too: the waiting dependents, direct or not
                "cascade": [t.id for t in await self._visible(self.taskrun.workflows.cascade(task))],
            }
        )
