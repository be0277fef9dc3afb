"""Issue 16 in a real browser: the Tasks sidebar, a task's detail view and the ``%%taskrun`` panel in
JupyterLab Light and JupyterLab Dark, and the README's picture of the sidebar.

Its own ``jupyter lab`` (a fresh task database, so the sidebar shows only the tasks made here) and
Debian's Chromium. The tasks are real: completed, failed, cancelled, running with progress and
queued behind them (two run at a time). In each theme the sidebar's text must contrast with its
background (WCAG ratio ≥ 4.5) and the colours must differ between the themes. Screenshots go to
``tests/artifacts/``; the light sidebar also to ``docs/images/sidebar.png`` (for the README).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ARTIFACTS, LabServer, _need_browser
from labui import PANEL, open_panel, row, wait_until
from test_theme_docs import CONTRAST_JS, THEME_CODE, open_notebook, switch_theme, write_notebook
from test_widget_panel import run_cell, shown_panel

pytestmark = pytest.mark.browser

DOCS_IMAGE = Path(__file__).resolve().parents[2] / "docs" / "images" / "sidebar.png"

PROGRESS = """from jupyter_taskrun import progress, record
import time
for i in range(400):
    progress(i, 400, f"epoch {i // 40 + 1}/10")
    time.sleep(0.25)"""


@pytest.fixture(scope="module")
def lab_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    """A Lab of this module's own: the sidebar shows only the tasks made here."""
    _need_browser()
    server = LabServer(tmp_path_factory.mktemp("lab-themes"))
    try:
        yield server.start()
    finally:
        server.stop()
        (ARTIFACTS / "jupyter-lab-themes.log").write_text(server.log_path.read_text(errors="replace"))


def make_tasks(api: Any) -> dict[str, dict[str, Any]]:
    made: dict[str, dict[str, Any]] = {}
    made["report"] = api.submit(
        code="from jupyter_taskrun import record\nrecord('rows', 1204)\nprint('ok')", name="nightly-report", tags=["reports"]
    )
    made["etl"] = api.submit(code="raise ValueError('bad row 17')", name="etl-load", tags=["etl"])
    made["clean"] = api.submit(code="import time\ntime.sleep(60)", name="clean-cache")
    for key in ("report", "etl"):
        api.wait_status(made[key]["id"], {"completed", "failed"}, timeout=90)
    api.wait_status(made["clean"]["id"], {"running"}, timeout=60)
    status, body = api.request("POST", f"taskrun/api/tasks/{made['clean']['id']}/cancel", {})
    assert status == 202, (status, body)
    api.wait_status(made["clean"]["id"], {"cancelled"}, timeout=60)
    made["train"] = api.submit(code=PROGRESS, name="train-resnet", tags=["gpu", "training"])
    made["fetch"] = api.submit(code="import time\ntime.sleep(120)", name="fetch-prices", tags=["etl"])
    made["score"] = api.submit(code="print('scored')", name="score-batch")  # queued: two run at a time
    api.wait_status(made["train"]["id"], {"running"}, timeout=60)
    api.wait_status(made["fetch"]["id"], {"running"}, timeout=60)
    return made


def widen_sidebar(page: Any, by: int) -> None:
    """Drag the splitter right of the left sidebar, as a person would."""
    handle = page.locator("#jp-main-split-panel > .lm-SplitPanel-handle").first
    box = handle.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + by, y, steps=5)
    page.mouse.up()
    page.wait_for_timeout(300)


def sidebar_colours(panel: Any) -> dict[str, Any]:
    return {
        "panel": panel.evaluate(CONTRAST_JS),
        "name": panel.locator(".jp-TaskRun-name").first.evaluate(CONTRAST_JS),
    }


def test_sidebar_detail_and_panel_in_light_and_dark(lab_page: Any, lab_server: Any, api: Any, artifacts_dir: Path) -> None:
    page = lab_page
    made = make_tasks(api)
    try:
        panel = open_panel(page)
        for task in made.values():
            row(page, task["id"]).wait_for(timeout=30000)
        wait_until(
            lambda: row(page, made["train"]["id"]).locator(".jp-TaskRun-progressLabel").inner_text().startswith(("1", "2", "3", "4", "5")),
            60,
            "train-resnet shows progress",
        )
        assert page.evaluate("() => document.body.dataset.jpThemeLight") == "true"
        widen_sidebar(page, 160)
        panel.screenshot(path=str(artifacts_dir / "citizen-sidebar-light.png"))
        DOCS_IMAGE.parent.mkdir(parents=True, exist_ok=True)
        # the README's picture: the sidebar down to its last row
        stack = page.locator("#jp-left-stack").bounding_box()
        rows_box = panel.locator(".jp-TaskRun-list").bounding_box()
        height = rows_box["y"] + rows_box["height"] - stack["y"] + 8
        page.screenshot(path=str(DOCS_IMAGE), clip={**stack, "height": min(stack["height"], height)})
        assert DOCS_IMAGE.stat().st_size < 200_000
        light = sidebar_colours(panel)

        # the detail view of the failed task
        row(page, made["etl"]["id"]).click()
        detail = page.locator(f"#jupyter-taskrun-detail-{made['etl']['id']}")
        detail.wait_for(timeout=30000)
        detail.get_by_text("ValueError").first.wait_for(timeout=30000)
        page.locator("#jp-main-dock-panel").screenshot(path=str(artifacts_dir / "citizen-detail-light.png"))

        switch_theme(page, "JupyterLab Dark")
        panel.screenshot(path=str(artifacts_dir / "citizen-sidebar-dark.png"))
        page.locator("#jp-main-dock-panel").screenshot(path=str(artifacts_dir / "citizen-detail-dark.png"))
        dark = sidebar_colours(panel)
        for part in ("panel", "name"):
            assert light[part]["color"] != dark[part]["color"], (part, light, dark)
            for theme, seen in (("light", light), ("dark", dark)):
                assert seen[part]["ratio"] >= 4.5, (theme, part, seen)
        assert sum(dark["panel"]["background"]) < sum(light["panel"]["background"])

        # the %%taskrun panel, dark then light (the long tasks make room: two run at a time)
        for key in ("train", "fetch"):
            api.request("POST", f"taskrun/api/tasks/{made[key]['id']}/cancel", {})
        name = f"citizen-theme-{uuid.uuid4().hex[:6]}.ipynb"
        write_notebook(lab_server.root, name, THEME_CODE)
        open_notebook(page, lab_server, name)
        run_cell(page, 1)
        widget = shown_panel(page, 1)
        widget.locator(".taskrun-badge [data-status='completed']").wait_for(timeout=90000)
        widget.scroll_into_view_if_needed()
        assert page.evaluate("() => document.body.dataset.jpThemeLight") == "false"
        widget.screenshot(path=str(artifacts_dir / "citizen-widget-dark.png"))
        switch_theme(page, "JupyterLab Light")
        widget.scroll_into_view_if_needed()
        widget.screenshot(path=str(artifacts_dir / "citizen-widget-light.png"))
        assert page.locator(f"{PANEL} .jp-TaskRun-row").count() >= len(made)
    finally:
        code, body = api.request(
            "PUT", "lab/api/settings/@jupyterlab/apputils-extension:themes", {"raw": json.dumps({"theme": "JupyterLab Light"})}
        )
        assert code in (200, 204), (code, body)
        for task in made.values():
            api.request("POST", f"taskrun/api/tasks/{task['id']}/cancel", {})
