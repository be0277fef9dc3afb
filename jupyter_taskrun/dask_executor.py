"""Compatibility path for ``dask worker|scheduler ... --preload jupyter_taskrun.dask_executor``.

Dask looks for ``dask_setup`` here: it is the worker side's (``execution/dask_worker.py``).
``DaskExecutor`` (server side, ``execution/dask_executor.py``) is still importable from here,
but only loaded when asked for, so a worker's preload imports no server-side code.
"""

from __future__ import annotations

from typing import Any

from .execution.dask_worker import dask_setup

__all__ = ["DaskExecutor", "dask_setup"]  # noqa: F822 - DaskExecutor comes from __getattr__


def __getattr__(name: str) -> Any:
    if name == "DaskExecutor":
        from .execution.dask_executor import DaskExecutor

        return DaskExecutor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
