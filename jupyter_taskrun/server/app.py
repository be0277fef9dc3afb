"""The Jupyter server extension: wires the ``TaskRun`` service and the HTTP handlers into the server."""

from __future__ import annotations

import asyncio
import gc

from jupyter_server.extension.application import ExtensionApp

from ..execution.dask_executor import DaskExecutor
from .activity import ActivityReporter
from .auth import warn_if_not_isolated
from .handlers import handler_routes
from .service import TaskRun

_frozen = False


def freeze_startup_objects() -> None:
    """Move what the started server holds (modules, classes, settings: ~180,000 objects after its
    imports) out of the garbage collector's sight, once per process (``gc.freeze``). A full
    collection walks every tracked object (~30 ms for those alone, idle): with 1,000 live streams
    allocating, one ran every ~1.5 s and stopped the loop for 120-150 ms on a loaded machine,
    which was every stream's p99 (20-50 ms after the freeze). These objects live as long as the
    server; only what is allocated later is collected, as before."""
    global _frozen
    if not _frozen:
        _frozen = True
        gc.collect()
        gc.freeze()


class TaskRunApp(ExtensionApp):
    """Run code, scripts and notebooks as tracked tasks in fresh kernels.

    Settings live on the ``TaskRun`` class: ``c.TaskRun.max_concurrent_tasks = 4``; the Dask
    executor's on ``DaskExecutor`` (``c.DaskExecutor.scheduler_address``).
    """

    name = "jupyter_taskrun"
    load_other_extensions = True
    classes = [TaskRun, DaskExecutor]

    def initialize_settings(self) -> None:
        serverapp = self.serverapp
        assert serverapp is not None
        self.taskrun = TaskRun(
            parent=self,
            config=serverapp.config,
            log=self.log,
            root_dir=serverapp.root_dir,
            kernel_spec_manager=serverapp.kernel_spec_manager,
            default_kernel=getattr(serverapp.kernel_manager, "default_kernel_name", "python3") or "python3",
            event_logger=getattr(serverapp, "event_logger", None),
        )
        self.settings.update({"taskrun": self.taskrun})
        # work in flight counts as server activity (JupyterHub's idle culler reads it)
        self.activity = ActivityReporter(self.taskrun, serverapp.web_app.settings["last_activity_times"], self.log)
        self._derive_public_url = not self.taskrun.public_url
        self._set_public_url()
        # multi-user identities with an allow-all authorizer: every user controls every task
        self.taskrun.isolation_warning = warn_if_not_isolated(serverapp, self.log)
        # Inside an already running loop (tests, embedding) start now; a normal server
        # starts it from _start_jupyter_server_extension once its loop runs.
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._start_task = loop.create_task(self.taskrun.start())
        self._start_task.add_done_callback(self._start_done)
        self.activity.start()

    def _start_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.log.error("taskrun: could not start: %s", task.exception(), exc_info=task.exception())

    def initialize_handlers(self) -> None:
        self.handlers.extend(handler_routes())

    def _set_public_url(self) -> None:
        """Webhook payloads link to c.TaskRun.public_url; unset, to the server's own URL (base_url
        included). Set again at start: with port 0 the port is known only once the server listens."""
        if self._derive_public_url and self.serverapp is not None:
            self.taskrun.public_url = self.serverapp.connection_url

    async def _start_jupyter_server_extension(self, serverapp) -> None:  # noqa: ARG002
        self._set_public_url()
        await self.taskrun.start()
        self.activity.start()
        freeze_startup_objects()

    async def stop_extension(self) -> None:
        await self.activity.stop()
        await self.taskrun.stop()
