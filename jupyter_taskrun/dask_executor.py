"""Compatibility path: ``dask worker ... --preload jupyter_taskrun.dask_executor`` and
``c.TaskRun.executor = "dask"`` users' imports; the executor lives in ``execution/``."""

from .execution.dask_executor import DaskExecutor, dask_setup  # noqa: F401
