"""The ``%%taskrun`` panel's results in real headless Chromium inside JupyterLab (issue 15).

A task records values (``record("accuracy", ...)`` once, ``record("loss", ..., step=n)`` as a
series) and sends variables back (``--out model scores``, no ``--wait``). In the browser the panel
shows a card per value, a line chart for the series, and "results ready: model, scores"; clicking
*Load into notebook* assigns them in the notebook's kernel, which the next cell proves by printing
them. A screenshot lands in ``tests/artifacts/``.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.browser.test_widget_panel import run_cell, shown_panel

pytestmark = pytest.mark.browser

STEPS = 12

TASK_CODE = f"""%%taskrun --name results-demo --out model scores
import time
from jupyter_taskrun import record
record("accuracy", 0.93)
for step in range({STEPS}):
    record("loss", 1.0 / (step + 1), step=step)
    time.sleep(0.1)
model = {{"kind": "linear", "coef": [1.5, -2.0]}}
scores = [0.9, 0.8, 0.95]"""


def prompt_number(page: Any, index: int) -> str:
    cell = page.locator(".jp-NotebookPanel:visible .jp-Notebook .jp-Cell").nth(index)
    return cell.locator(".jp-InputPrompt").inner_text()


def wait_ran(page: Any, index: int) -> None:
    page.wait_for_function(
        """i => { const c = document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell')[i];
                  return !!c && /\\[\\d+\\]/.test(c.querySelector('.jp-InputPrompt').textContent); }""",
        arg=index,
        timeout=60000,
    )


def cell_output(page: Any, index: int) -> str:
    cell = page.locator(".jp-NotebookPanel:visible .jp-Notebook .jp-Cell").nth(index)
    return cell.locator(".jp-OutputArea").inner_text()


def test_panel_shows_values_and_loads_results_into_the_notebook(lab_page: Any, lab_server: Any, artifacts_dir: Path) -> None:
    page = lab_page
    name = f"widget-results-{uuid.uuid4().hex[:6]}.ipynb"
    sources = (
        "%load_ext jupyter_taskrun",
        TASK_CODE,
        "print('BEFORE', 'model' in dir(), 'scores' in dir())",
        "print('LOADED', model, scores)",
    )
    cells = [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": s} for s in sources]
    nb = {"cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}  # fmt: skip
    (lab_server.root / name).write_text(json.dumps(nb))
    page.goto(f"{lab_server.url}lab/tree/{name}?reset&token={lab_server.token}")
    page.wait_for_selector("#jupyterlab-splash", state="detached", timeout=60000)
    page.wait_for_function(
        """() => { const c = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell');
                   return !!c && c.textContent.includes('load_ext jupyter_taskrun'); }""",
        timeout=60000,
    )
    page.wait_for_selector(".jp-NotebookPanel:visible .jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60000)
    run_cell(page, 0)
    wait_ran(page, 0)
    time.sleep(1)  # let Lab's kernel connection settle before the widget appears (see test_widget_panel)
    run_cell(page, 1)
    panel = shown_panel(page, 1)

    # while it runs: the loss card's chart grows with the series
    loss = panel.locator(".taskrun-value-card[data-name='loss']")
    loss.wait_for(timeout=60000)
    panel.locator(".taskrun-badge [data-status='completed']").wait_for(timeout=90000)
    ready = panel.locator(".taskrun-results-ready")
    ready.wait_for(timeout=30000)
    assert ready.inner_text().strip() == "results ready: model, scores"

    # one card per recorded name: the latest value; the series has its chart, the single value none
    accuracy = panel.locator(".taskrun-value-card[data-name='accuracy']")
    assert accuracy.locator(".taskrun-value-latest").inner_text() == "0.93"
    assert accuracy.locator("svg").count() == 0
    assert loss.locator(".taskrun-value-latest").inner_text() == f"{1.0 / STEPS:.4g}"
    assert loss.locator(".taskrun-value-step").inner_text() == f"step {STEPS - 1}"
    chart = loss.locator("svg.taskrun-series")
    assert chart.get_attribute("data-points") == str(STEPS)
    box = chart.bounding_box()
    assert box and box["width"] > 100 and box["height"] > 20, box
    points = chart.locator("polyline").get_attribute("points").split()
    ys = [float(p.split(",")[1]) for p in points]
    assert len(ys) == STEPS and ys == sorted(ys), ys  # a falling loss: each point lower (larger y) than the last
    # themed: the card's border is the theme's --jp-border-color2, the line the brand colour
    colours = page.evaluate(
        """([card, line]) => {
            const probe = document.createElement('div');
            probe.style.color = 'var(--jp-border-color2)'; document.body.appendChild(probe);
            const border = getComputedStyle(probe).color;
            probe.style.color = 'var(--jp-brand-color1)';
            const brand = getComputedStyle(probe).color; probe.remove();
            return {card: getComputedStyle(card).borderTopColor, border, line: getComputedStyle(line).stroke, brand};
        }""",
        [loss.element_handle(), chart.locator("polyline").element_handle()],
    )
    assert colours["card"] == colours["border"] and colours["line"] == colours["brand"], colours

    # not in the notebook before the click
    run_cell(page, 2)
    wait_ran(page, 2)
    assert "BEFORE False False" in cell_output(page, 2)

    load = panel.get_by_role("button", name="Load into notebook")
    assert load.is_visible() and not load.is_disabled()
    panel.scroll_into_view_if_needed()
    panel.screenshot(path=str(artifacts_dir / "widget-panel-results-ready.png"))
    load.click()
    panel.locator(".taskrun-results-ready", has_text="results loaded into the notebook: model, scores").wait_for(timeout=30000)

    # the kernel has them now, as the task computed them
    run_cell(page, 3)
    wait_ran(page, 3)
    assert "LOADED {'kind': 'linear', 'coef': [1.5, -2.0]} [0.9, 0.8, 0.95]" in cell_output(page, 3)
    panel.scroll_into_view_if_needed()
    panel.screenshot(path=str(artifacts_dir / "widget-panel-results-loaded.png"))

    # the server agrees: the same values and variables
    tasks = lab_server.api.get("taskrun/api/tasks?name=results-demo")["tasks"]
    assert tasks and tasks[0]["values"]["accuracy"] == 0.93
    listing = lab_server.api.get(f"taskrun/api/tasks/{tasks[0]['id']}/variables")
    assert [v["name"] for v in listing["variables"] if not v["error"]] == ["model", "scores", "@result"]
    assert not [e for e in page.errors if "taskrun" in e.lower() or "widget" in e.lower()], page.errors
