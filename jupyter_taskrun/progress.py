"""Progress reporting from inside a task: ``from jupyter_taskrun import progress``.

It sends a display message with a private mimetype that the executor turns into
a ``progress`` event and drops from the outputs, so nothing shows in the logs.
Outside a task kernel it does nothing.
"""

from __future__ import annotations

import os

PROGRESS_MIME = "application/vnd.jupyter.taskrun.progress+json"
#: set in every task kernel by the server's kernel launcher (value: ``<store hash>:<uuid>``): this kernel is a task
TASK_KERNEL_ENV = "JUPYTER_TASKRUN_KERNEL"


def progress(value: float, total: float | None = None, message: str = "") -> None:
    """Report how far the task is: ``progress(3, 10, "loading")``."""
    if not os.environ.get(TASK_KERNEL_ENV):
        return
    try:
        from IPython.display import display
    except ImportError:  # not in an IPython kernel
        return
    display({PROGRESS_MIME: {"value": value, "total": total, "message": str(message)}}, raw=True)
