"""REST handlers for schedules: parse → call the Scheduler (``server/scheduler.py``) → serialise.

Owned like tasks: a user sees and changes only their own schedules (another user's answer 404,
as if they did not exist); an admin (``taskrun:all``) sees everyone's.
"""

from __future__ import annotations

from typing import Any

from jupyter_server.auth.decorator import authorized
from tornado import web

from ...errors import ScheduleNotFound
from ...schedule import Schedule
from .base import TaskRunHandler


class ScheduleBase(TaskRunHandler):
    @property
    def scheduler(self) -> Any:
        return self.taskrun.scheduler

    async def visible_schedule(self, schedule_id: str) -> Schedule:
        s = self.scheduler.get(schedule_id)
        if s.owner and s.owner != self.username and not await self.sees_all():
            raise ScheduleNotFound(f"no schedule with id {schedule_id!r}")
        return s

    def schedule_location(self, s: Schedule) -> None:
        self.set_header("Location", f"{self.base_url.rstrip('/')}/taskrun/api/schedules/{s.id}")


class SchedulesHandler(ScheduleBase):
    """``/taskrun/api/schedules``: list and create."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        owner = self.query("owner")
        if not await self.sees_all():
            owner = self.username
        schedules = self.scheduler.owned_by(owner or None)
        self.write_json({"schedules": [self.scheduler.to_json(s) for s in schedules]})

    @web.authenticated
    @authorized
    async def post(self) -> None:
        s = self.scheduler.create(self.json_body(), owner=self.username)
        self.schedule_location(s)
        self.write_json(self.scheduler.to_json(s), 201)


class ScheduleHandler(ScheduleBase):
    """``/taskrun/api/schedules/{id}``: read, change (``enabled`` false/true: pause/resume), delete."""

    @web.authenticated
    @authorized
    async def get(self, schedule_id: str) -> None:
        s = await self.visible_schedule(schedule_id)
        self.write_json(self.scheduler.to_json(s))

    @web.authenticated
    @authorized
    async def patch(self, schedule_id: str) -> None:
        await self.visible_schedule(schedule_id)
        s = self.scheduler.update(schedule_id, self.json_body())
        self.write_json(self.scheduler.to_json(s))

    @web.authenticated
    @authorized
    async def delete(self, schedule_id: str) -> None:
        await self.visible_schedule(schedule_id)
        self.scheduler.delete(schedule_id)
        self.set_status(204)
        self.finish()


class ScheduleRunHandler(ScheduleBase):
    """``/taskrun/api/schedules/{id}/run``: run it now (201 with the task)."""

    @web.authenticated
    @authorized
    async def post(self, schedule_id: str) -> None:
        await self.visible_schedule(schedule_id)
        task = await self.scheduler.run_now(schedule_id)
        self.set_header("Location", f"{self.base_url.rstrip('/')}/taskrun/api/tasks/{task.id}")
        self.write_json(self.task_json(task), 201)


class SchedulePreviewHandler(ScheduleBase):
    """``/taskrun/api/schedules/preview?cron=&timezone=``: the next times and the words, as you type."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.write_json(self.scheduler.preview(self.query("cron"), self.query("timezone")))
