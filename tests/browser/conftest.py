"""Fixtures for the JupyterLab sidebar tests: a real ``jupyter lab`` and headless Chromium.

The server runs as a subprocess on 127.0.0.1 with a token, its own root dir,
settings dir and task database, started by the suite's one launcher (``JupyterServer``
in ``tests/_server.py``); the browser is Debian's ``/usr/bin/chromium`` driven by
Playwright (never a downloaded browser). The installed extension's
shared data (``sys.prefix/share/jupyter``, ``etc/jupyter``) is used as is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests._server import JupyterServer  # the suite's one server launcher (this folder is no package)

CHROMIUM = os.environ.get("TASKRUN_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
SERVER_START_TIMEOUT = 90


def _need_browser() -> None:
    """Skip cleanly on a developer machine without Chromium; in CI these tests must run."""
    missing = []
    if not os.path.exists(CHROMIUM):
        missing.append(CHROMIUM)
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright Python package")
    if not missing:
        return
    msg = f"browser tests need {' and '.join(missing)}"
    if os.environ.get("CI"):
        pytest.fail(msg + " (CI must run them: install Debian's chromium and playwright)", pytrace=False)
    pytest.skip(msg)


class RestClient:
    """A tiny REST client for the API under test (urllib, token header)."""

    def __init__(self, base_url: str, token: str):
        self.base_url = base_url
        self.token = token

    def request(self, method: str, path: str, body: Any = None, timeout: float = 30) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base_url + path.lstrip("/"), data=data, method=method)
        req.add_header("Authorization", f"token {self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, raw, ctype = resp.status, resp.read(), resp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            status, raw, ctype = e.code, e.read(), e.headers.get("Content-Type", "")
        if "json" in ctype and raw:
            return status, json.loads(raw)
        return status, raw.decode("utf-8", "replace")

    def get(self, path: str) -> Any:
        status, body = self.request("GET", path)
        assert status == 200, f"GET {path}: {status} {body}"
        return body

    def submit(self, **submission: Any) -> dict[str, Any]:
        status, body = self.request("POST", "taskrun/api/tasks", submission)
        assert status == 201, f"submit: {status} {body}"
        return body

    def task(self, task_id: str) -> dict[str, Any]:
        return self.get(f"taskrun/api/tasks/{task_id}")

    def wait_status(self, task_id: str, statuses: set[str], timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        task = self.task(task_id)
        while task["status"] not in statuses:
            if time.monotonic() > deadline:
                raise AssertionError(f"task {task_id} is {task['status']}, expected one of {statuses}")
            time.sleep(0.2)
            task = self.task(task_id)
        return task


class LabServer(JupyterServer):
    """``jupyter lab`` through the suite's one launcher, with its own user settings (news and
    update checks off) and workspaces; ready once ``/taskrun/api/status`` answers."""

    def __init__(self, base: Path):
        settings = base / "settings"
        notif = settings / "@jupyterlab" / "apputils-extension"
        notif.mkdir(parents=True)
        (notif / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        workspaces = base / "workspaces"
        workspaces.mkdir()
        super().__init__(
            base,
            app="jupyterlab",
            ready_path="taskrun/api/status",
            start_timeout=SERVER_START_TIMEOUT,
            taskrun={"max_concurrent_tasks": 2},
            extra_args=(f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={workspaces}"),
        )
        self.api = RestClient(self.url, self.token)


@pytest.fixture
def jp_asyncio_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """pytest-jupyter's autouse loop fixture would pick up (and close) Playwright's running loop.

    These tests need no in-process server, so its cleanup gets a private loop instead.
    """
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture
def jp_server_cleanup() -> Iterator[None]:
    """No in-process ServerApp here to clean up (the server is a subprocess)."""
    yield


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for stale in ARTIFACTS.glob("FAILED-*.png"):  # failure shots of an earlier run
        stale.unlink(missing_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def lab_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    _need_browser()
    server = LabServer(tmp_path_factory.mktemp("lab"))
    try:
        yield server.start()
    finally:
        server.stop()
        # keep the server log next to the screenshots for humans
        with contextlib.suppress(OSError):
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            (ARTIFACTS / "jupyter-lab.log").write_text(server.log_path.read_text(errors="replace"))


@pytest.fixture(scope="module")
def browser(lab_server: LabServer) -> Iterator[Any]:
    # module scope, not session: while sync_playwright() is open its event loop counts as
    # running in the main thread, which breaks every asyncio test that runs after it
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def api(lab_server: LabServer) -> RestClient:
    return lab_server.api


@pytest.fixture
def lab_page(browser: Any, lab_server: LabServer, request: pytest.FixtureRequest, artifacts_dir: Path) -> Iterator[Any]:
    """A fresh JupyterLab page, loaded and ready; console errors are collected on ``page.errors``."""
    context = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(30000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    page.on("console", lambda msg: errors.append(f"console.{msg.type}: {msg.text}") if msg.type == "error" else None)
    page.errors = errors  # type: ignore[attr-defined]
    # ?reset: every test starts from a clean workspace (no tabs restored from the previous test)
    page.goto(f"{lab_server.url}lab?reset&token={lab_server.token}")
    page.wait_for_selector("#jupyterlab-splash", state="detached", timeout=60000)
    page.wait_for_selector('.lm-TabBar-tab[data-id="jupyter-taskrun-panel"]', timeout=30000)
    try:
        yield page
    finally:
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:
            with contextlib.suppress(Exception):
                page.screenshot(path=str(artifacts_dir / f"FAILED-{request.node.name}.png"))
        context.close()


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{rep.when}", rep)
