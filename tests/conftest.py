"""Shared fixtures: a real in-process Jupyter server (pytest-jupyter) with jupyter_taskrun enabled,
and a factory of real ``jupyter server`` subprocesses (``tests/_server.py``).

Only fixtures live here; helpers are in ``tests/helpers.py``. The names re-exported below
(``Api``, ``TERMINAL``, ``kernel_processes``, ...) keep ``from .conftest import X`` working
for older test files; new code imports them from ``.helpers``.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from traitlets.config import Config

from ._server import JupyterServer
from .helpers import TERMINAL, Api, kernel_processes, parse_sse_frame, sse_stream

__all__ = ["TERMINAL", "Api", "kernel_processes", "parse_sse_frame", "sse_stream"]

pytest_plugins = ["pytest_jupyter.jupyter_server"]


def pytest_collection_modifyitems(config, items):
    """Browser tests last: they are the slowest, and Playwright's sync API owns the main thread's loop."""
    items.sort(key=lambda item: "browser" in item.nodeid.split("::")[0].split("/"))


@pytest.fixture
def taskrun_config(request) -> dict[str, Any]:
    """``c.TaskRun`` settings of the in-process server: ``{}``, or the value of an (indirect)
    ``parametrize("taskrun_config", [...])``; a test module may also override this fixture."""
    return getattr(request, "param", {})


@pytest.fixture
def db_path(tmp_path) -> str:
    return str(tmp_path / "state" / "tasks.sqlite3")


@pytest.fixture
def jp_server_config(taskrun_config, db_path):
    # the pool is off by default in tests: fewer kernels on a 2-core CI, deterministic counts
    settings = {"db_path": db_path, "kernel_pool_size": 0, **taskrun_config}
    return Config({"ServerApp": {"jpserver_extensions": {"jupyter_taskrun": True}}, "TaskRun": settings})


@pytest.fixture
def taskrun(jp_serverapp, jp_asyncio_loop):
    """The live TaskRun service of the test server; stopped at teardown, then no kernel may remain."""
    service = jp_serverapp.web_app.settings["taskrun"]
    yield service
    jp_asyncio_loop.run_until_complete(service.stop())
    deadline = time.monotonic() + 10
    while kernel_processes() and time.monotonic() < deadline:
        time.sleep(0.05)
    leaked = kernel_processes()
    for p in leaked:
        p.kill()
    assert not leaked, f"kernels leaked: {[p.pid for p in leaked]}"


@pytest.fixture
def api(jp_fetch, jp_base_url, jp_http_port, jp_auth_header, taskrun) -> Api:
    return Api(jp_fetch, jp_base_url, jp_http_port, dict(jp_auth_header))


@pytest.fixture
def server_factory(tmp_path) -> Iterator[Callable[..., JupyterServer]]:
    """Start real ``jupyter server`` subprocesses: ``server_factory(taskrun={...}, extra_args=(...))``.

    Each starts in ``base`` (default: the test's ``tmp_path``, so two servers started one after
    the other share a database) and every one still running is stopped at teardown.
    """
    started: list[JupyterServer] = []

    def start(base=None, **options: Any) -> JupyterServer:
        server = JupyterServer(base if base is not None else tmp_path, **options)
        started.append(server)
        return server.start()

    yield start
    for server in reversed(started):
        server.stop()


@pytest.fixture
def small_fs_size() -> str:
    """Size of the ``small_fs`` tmpfs (a test module overrides it to fill it sooner or later)."""
    return "8m"


@pytest.fixture
def small_fs(tmp_path, small_fs_size):
    """A tiny tmpfs (root only) to put a store on, so that it can fill up: the disk-full tests."""
    mnt = tmp_path / "smallfs"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={small_fs_size}", "tmpfs", str(mnt)], check=False, capture_output=True, text=True
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (mount -t tmpfs not permitted): {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False, capture_output=True)
