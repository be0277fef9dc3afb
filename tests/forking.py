"""Run kernel tests with spawned and with forked kernels (``c.TaskRun.kernel_start``).

A test module imports ``kernel_start`` (an autouse fixture): each of its tests then runs twice,
``[spawn]`` and ``[fork]``. The mode is set through ``JUPYTER_TASKRUN_KERNEL_START`` (the
default of ``c.TaskRun.kernel_start`` and of ``KernelLauncher``) before the test's server is
built; afterwards the test checks that every kernel it started was started that way.
"""

from __future__ import annotations

import pytest

from jupyter_taskrun.execution.kernels import KERNEL_START_ENV, STARTS


@pytest.fixture(autouse=True, params=["spawn", "fork"])
def kernel_start(request, monkeypatch):
    monkeypatch.setenv(KERNEL_START_ENV, request.param)
    before = dict(STARTS)
    yield request.param
    # a fork-mode launcher spawns only what it cannot fork ("fallback": a custom kernel spec)
    for other in ("spawn",) if request.param == "fork" else ("fork", "fallback"):
        assert STARTS[other] == before[other], f"{STARTS[other] - before[other]} kernel(s) started by {other}, not {request.param}"
