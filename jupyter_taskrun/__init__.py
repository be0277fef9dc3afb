"""jupyter_taskrun: run code, scripts and notebooks as tracked background tasks from Jupyter.

Importing this package must stay cheap: task kernels import it for ``progress()`` and ``record()``.
Heavy parts (server extension, client, widgets) load on first use.
"""

from __future__ import annotations

from typing import Any

from ._version import __version__
from .progress import progress
from .values import record

__all__ = ["__version__", "progress", "record", "TaskRunClient", "AsyncTaskRunClient", "load_ipython_extension"]


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .server.app import TaskRunApp

    return [{"module": "jupyter_taskrun", "app": TaskRunApp}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "jupyter-taskrun"}]


def load_ipython_extension(ipython: Any) -> None:
    from .notebook.magics import load_ipython_extension as _load

    _load(ipython)


def __getattr__(name: str) -> Any:
    if name in ("TaskRunClient", "AsyncTaskRunClient", "TaskRunHTTPError"):
        from . import client

        return getattr(client, name)
    raise AttributeError(name)
