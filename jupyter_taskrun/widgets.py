"""Compatibility path: ``from jupyter_taskrun.notebook.panel import TaskPanel`` (the panels live in ``notebook/``)."""

from .notebook.panel import *  # noqa: F401,F403
from .notebook.panel import TaskListPanel, TaskPanel  # noqa: F401
