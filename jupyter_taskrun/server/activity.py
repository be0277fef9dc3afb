"""JupyterHub awareness: work in flight counts as server activity.

A task kernel is not one of the server's kernels (``KernelLauncher`` starts it outside the
``MultiKernelManager``), so nothing else tells the server that it is busy: a user who submits a
two-hour job and closes the browser would see JupyterHub's idle culler (which reads the server's
last activity, forwarded by the single-user server every ``JUPYTERHUB_ACTIVITY_INTERVAL``) stop
the server, and the job with it. jupyter_server's own ``shutdown_no_activity_timeout`` reads the
same time.

``ActivityReporter`` fixes that through the hook jupyter_server offers extensions: every value of
``web_app.settings["last_activity_times"]`` counts in ``ServerApp.last_activity()`` (what
``/api/status`` answers as ``last_activity``). Guarantees:

* every ``c.TaskRun.activity_interval`` seconds, while a task runs or waits in a queue that is
  dispatching, ``last_activity_times["jupyter_taskrun"]`` is set to now;
* once the last task has ended, one more report marks the end (at most one interval late),
  then nothing: an idle server's last activity stops moving, so it can be culled;
* a queue that is paused does not count (it waits for a person; its tasks are re-queued when the
  server starts again), neither does reading the task API (jupyter_server already counts requests);
* ``c.TaskRun.report_activity = False``: nothing is ever written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from jupyter_server._tz import utcnow

#: the key in ``last_activity_times`` (one per source: kernels, terminals, extensions)
ACTIVITY_KEY = "jupyter_taskrun"


class ActivityReporter:
    """Reports ``taskrun``'s work in flight into ``activity_times`` (the server's ``last_activity_times``)."""

    def __init__(self, taskrun: Any, activity_times: dict[str, Any], log: logging.Logger | None = None):
        self.taskrun = taskrun
        self.activity_times = activity_times
        self.enabled: bool = bool(taskrun.report_activity)
        self.interval: float = float(taskrun.activity_interval)
        self.log = log or logging.getLogger("jupyter_taskrun")
        self._was_busy = False
        self._task: asyncio.Task[None] | None = None

    def busy(self) -> bool:
        """A task runs (its kernel starting counts), or one waits and the dispatcher is not paused."""
        if self.taskrun.stopped:
            return False
        return bool(self.taskrun.dispatcher.running) or (len(self.taskrun.queue) > 0 and not self.taskrun.paused)

    def report(self) -> bool:
        """One look: write now as the last activity if work is (or just was) in flight; True if written."""
        busy = self.busy()
        write = self.enabled and (busy or self._was_busy)
        self._was_busy = busy
        if write:
            self.activity_times[ACTIVITY_KEY] = utcnow()
        return write

    async def run_forever(self) -> None:
        while True:
            try:
                self.report()
            except Exception as e:  # noqa: BLE001 - a reporting bug must not end the reporting
                self.log.warning("taskrun: could not report activity: %s", e)
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        """Start reporting on the running loop (idempotent; nothing when disabled)."""
        if not self.enabled or self._task is not None:
            return
        self._task = asyncio.get_running_loop().create_task(self.run_forever())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
