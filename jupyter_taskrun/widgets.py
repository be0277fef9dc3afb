"""Compatibility path: ``from jupyter_taskrun.widgets import TaskPanel, TaskListPanel`` keeps working;
the panels live in ``jupyter_taskrun.notebook`` (``panel``, ``tasklist``)."""

from .notebook.panel import *
from .notebook.panel import TaskListPanel, TaskPanel  # noqa: F401
