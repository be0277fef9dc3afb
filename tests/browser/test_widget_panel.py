"""The ``%%taskrun`` panel (ipywidgets) rendered in real headless Chromium inside JupyterLab.

A notebook is opened in a real ``jupyter lab`` (fixtures in ``conftest.py``), its
``%%taskrun`` cells are run from the keyboard, and the panel is watched in the DOM
until the task has completed (and a second one failed). Screenshots land in
``tests/artifacts/`` for humans.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.browser

TASK_CODE = """%%taskrun --name widget-demo --tag screenshot
import sys, time
from jupyter_taskrun import progress
from tqdm import tqdm
from IPython.display import HTML, display
print("loading the data set...")
for i in range(8):
    progress(i + 1, 8, f"batch {i + 1}/8")
    print(f"batch {i + 1}: loss={1.0 / (i + 1):.3f}")
    time.sleep(0.4)
print("1 batch had missing values; skipped", file=sys.stderr)
for _ in tqdm(range(20), desc="evaluating"):
    time.sleep(0.05)
display(HTML("<h4 style='margin:4px 0'>Report</h4><table><tr><th>metric</th><th>value</th></tr>"
             "<tr><td>accuracy</td><td>0.93</td></tr><tr><td>f1</td><td>0.91</td></tr></table>"))
{"accuracy": 0.93, "f1": 0.91}"""

FAILING_CODE = """%%taskrun --name widget-failure
values = {"a": 1}
print("about to look up b")
values["b"]"""


def write_notebook(root: Path, name: str) -> None:
    cells = [
        {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": src}
        for src in ("%load_ext jupyter_taskrun", TASK_CODE, FAILING_CODE)
    ]
    nb = {
        "cells": cells,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    (root / name).write_text(json.dumps(nb))


def accept_kernel_dialog(page: Any) -> bool:
    """Lab asks "Select Kernel" when a run races the session start-up: keep the default kernel."""
    dialog = page.locator(".jp-Dialog")
    if dialog.count() and dialog.first.is_visible():
        dialog.first.locator("button.jp-mod-accept").click()
        dialog.first.wait_for(state="detached", timeout=10000)
        return True
    return False


def run_cell(page: Any, index: int, attempts: int = 5) -> None:
    """Run one cell (Ctrl+Enter) and make sure the kernel took it.

    Right after a notebook opens, Lab may still be connecting the kernel: a run can then
    raise a kernel dialog or be lost in a reconnect. Retry until the prompt shows it ran.
    """
    cell = page.locator(".jp-NotebookPanel:visible .jp-Notebook .jp-Cell").nth(index)
    prompt = cell.locator(".jp-InputPrompt")
    ran = "el => /\\[(\\d+|\\*)\\]/.test(el.textContent)"
    for _ in range(attempts):
        accept_kernel_dialog(page)
        cell.locator(".jp-InputArea-editor").click()
        page.keyboard.press("Control+Enter")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if page.evaluate(ran, prompt.element_handle()):
                return
            if accept_kernel_dialog(page):
                deadline = time.monotonic() + 10  # Lab may run it once the kernel is chosen
            time.sleep(0.2)
    raise AssertionError(f"cell {index} never ran")


def panel_for(page: Any, cell_index: int) -> Any:
    cell = page.locator(".jp-NotebookPanel:visible .jp-Notebook .jp-Cell").nth(cell_index)
    return cell.locator(".taskrun-panel").first


def shown_panel(page: Any, index: int) -> Any:
    """The panel under cell ``index`` once rendered.

    A widget view created while Lab's widget manager resets (a kernel reconnect at start-up)
    stays "Loading widget..." for good: then the cell is run once more.
    """
    panel = panel_for(page, index)
    try:
        panel.wait_for(state="visible", timeout=30000)
    except Exception:  # noqa: BLE001
        print(f"panel of cell {index} not rendered; page errors: {page.errors}")
        run_cell(page, index)
        panel.wait_for(state="visible", timeout=60000)
    return panel


def test_taskrun_panel_renders_and_follows_a_task(lab_page: Any, lab_server: Any, artifacts_dir: Path) -> None:
    page = lab_page
    name = f"widget-panel-{uuid.uuid4().hex[:6]}.ipynb"
    write_notebook(lab_server.root, name)
    page.goto(f"{lab_server.url}lab/tree/{name}?reset&token={lab_server.token}")
    page.wait_for_selector("#jupyterlab-splash", state="detached", timeout=60000)
    page.wait_for_selector(".jp-NotebookPanel:visible .jp-Notebook .jp-Cell", timeout=30000)
    # wait for the kernel before running, so keyboard input is not lost in a dialog
    page.wait_for_selector(".jp-NotebookPanel:visible .jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60000)

    run_cell(page, 0)
    # let the kernel connection settle (Lab may still swap its websocket right after start-up,
    # and the widget manager resets its models when it does)
    page.wait_for_selector(".jp-NotebookPanel:visible .jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60000)
    time.sleep(2)
    for index in (1, 2):
        run_cell(page, index)

    panel = shown_panel(page, 1)
    # live: running, the progress bar moving, log lines streaming in
    panel.locator(".taskrun-badge [data-status='running']").wait_for(timeout=60000)
    panel.locator(".taskrun-progress-text").wait_for(timeout=30000)
    page.wait_for_function("el => el.textContent.includes('batch 3')", arg=panel.locator(".taskrun-log").element_handle(), timeout=30000)
    panel.scroll_into_view_if_needed()
    panel.screenshot(path=str(artifacts_dir / "widget-panel-running.png"))

    panel.locator(".taskrun-badge [data-status='completed']").wait_for(timeout=90000)
    # the final state as the user sees it
    log_text = panel.locator(".taskrun-log").inner_text()
    assert "loading the data set" in log_text and "batch 8: loss=0.125" in log_text
    stderr = panel.locator(".taskrun-log .taskrun-stderr")
    assert stderr.count() >= 1 and "missing values" in stderr.first.inner_text()
    assert "20/20" in panel.locator(".taskrun-progress-text").inner_text()
    assert "accuracy" in panel.locator(".taskrun-outputs").inner_text()
    assert panel.locator(".taskrun-metrics svg.taskrun-sparkline").count() == 1
    metrics = panel.locator(".taskrun-metrics").inner_text()
    assert "peak mem" in metrics and "MiB" in metrics and "kernel start" in metrics
    cancel = panel.get_by_role("button", name="Cancel")
    assert cancel.is_disabled()

    # "Open executed notebook" saves it next to this notebook and shows a link
    panel.get_by_role("button", name="Open executed notebook").click()
    link = panel.locator("a.taskrun-notebook-link")
    link.wait_for(timeout=30000)
    saved = link.inner_text().strip()
    assert saved.endswith(".executed.ipynb") and (lab_server.root / saved).is_file()
    panel.scroll_into_view_if_needed()
    panel.screenshot(path=str(artifacts_dir / "widget-panel-completed.png"))
    # the link opens it as the Tasks detail view does (one behaviour): in Lab, without a kernel
    link.click()
    tab = page.locator(".lm-TabBar-tab", has_text=saved[:20])
    tab.first.wait_for(timeout=30000)
    page.locator(".jp-NotebookPanel:visible .jp-KernelName", has_text="No Kernel").first.wait_for(timeout=30000)
    sessions = lab_server.api.get("api/sessions")
    assert not [x for x in sessions if x.get("path", "").endswith(saved)], sessions
    assert len(page.context.pages) == 1  # no new browser tab: Lab's command handled the click
    page.screenshot(path=str(artifacts_dir / "widget-panel-executed-notebook.png"))
    # back to the notebook that ran the task
    page.locator(".lm-TabBar-tab", has_text="widget-panel-").first.click()

    # the failing task: error head and the task's traceback
    failed = shown_panel(page, 2)
    failed.locator(".taskrun-badge [data-status='failed']").wait_for(timeout=90000)
    error = failed.locator(".taskrun-error")
    error.wait_for(state="visible")
    assert "KeyError" in error.inner_text()
    failed.scroll_into_view_if_needed()
    failed.screenshot(path=str(artifacts_dir / "widget-panel-failed.png"))
    page.screenshot(path=str(artifacts_dir / "widget-panel-notebook.png"))

    # the server agrees
    tasks = lab_server.api.get("taskrun/api/tasks?name=widget-demo")["tasks"]
    assert tasks and tasks[0]["status"] == "completed"
    assert not [e for e in page.errors if "taskrun" in e.lower() or "widget" in e.lower()], page.errors


FOLLOW_CODE = """%%taskrun --name widget-follow
import time
for i in range(80):
    print(f"follow line {i:03d}", flush=True)
    time.sleep(0.1)"""


def test_follow_keeps_the_log_scrolled_to_the_newest_line(lab_page: Any, lab_server: Any, artifacts_dir: Path) -> None:
    """Issue 13: with Follow on, the newest log line stays in view while lines arrive."""
    page = lab_page
    name = f"widget-follow-{uuid.uuid4().hex[:6]}.ipynb"
    cells = [
        {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": src}
        for src in ("%load_ext jupyter_taskrun", FOLLOW_CODE)
    ]
    nb = {
        "cells": cells,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    (lab_server.root / name).write_text(json.dumps(nb))
    page.goto(f"{lab_server.url}lab/tree/{name}?reset&token={lab_server.token}")
    page.wait_for_selector("#jupyterlab-splash", state="detached", timeout=60000)
    # the workspace may restore an earlier test's notebook first: wait until ours is the one shown
    page.wait_for_function(
        """() => { const c = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell');
                   return !!c && c.textContent.includes('load_ext jupyter_taskrun'); }""",
        timeout=60000,
    )
    page.wait_for_selector(".jp-NotebookPanel:visible .jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60000)
    run_cell(page, 0)
    # the magic is loaded once cell 0 has its execution count (not "*")
    page.wait_for_function(
        r"""() => { const c = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell .jp-InputPrompt');
                   return !!c && /\[\d+\]/.test(c.textContent); }""",
        timeout=60000,
    )
    run_cell(page, 1)
    panel = shown_panel(page, 1)
    log = panel.locator(".taskrun-log")
    page.wait_for_function("el => el.textContent.includes('follow line 030')", arg=log.element_handle(), timeout=60000)
    panel.scroll_into_view_if_needed()
    # the newest line shown is inside the visible part of the scroll box, several times while lines arrive
    check = """el => {
        const box = el.querySelector('.taskrun-logbox');
        const lines = box.querySelectorAll('pre > span');
        const last = lines[lines.length - 1];
        const b = box.getBoundingClientRect(), l = last.getBoundingClientRect();
        return {overflows: box.scrollHeight > box.clientHeight + 4, visible: l.bottom <= b.bottom + 2 && l.top >= b.top - 2,
                last: last.textContent};
    }"""
    seen = []
    for _ in range(4):
        state = page.evaluate(check, log.element_handle())
        seen.append(state)
        time.sleep(0.7)
    assert all(s["overflows"] for s in seen), seen
    assert all(s["visible"] for s in seen), seen
    assert len({s["last"] for s in seen}) > 1, seen  # lines really were arriving
    panel.screenshot(path=str(artifacts_dir / "widget-panel-follow.png"))
    panel.locator(".taskrun-badge [data-status='completed']").wait_for(timeout=60000)
    # a finished log: the Follow toggle and "● live" are gone
    assert panel.get_by_role("button", name="Follow").count() == 0 or not panel.get_by_role("button", name="Follow").is_visible()
    assert "live" not in panel.inner_text()


TRAINING_CODE = """%%taskrun --name training-loop
import time
import matplotlib.pyplot as plt
from IPython.display import clear_output, display
from tqdm.auto import tqdm

losses = []
for step in tqdm(range(20), desc="train"):
    losses.append(1 / (step + 1))
    fig, ax = plt.subplots(figsize=(4, 2.5))
    ax.plot(losses)
    ax.set_title(f"loss at step {step}")
    clear_output(wait=True)
    display(fig)
    plt.close(fig)
    time.sleep(0.4)
print("trained")"""


def test_training_loop_shows_one_figure_live_progress_and_no_stand_in_text(lab_page: Any, lab_server: Any, artifacts_dir: Path) -> None:
    """Issue 13 (+ issue 11's clear_output): the everyday training loop — tqdm.auto plus one figure
    redrawn each step with ``clear_output(wait=True)`` — shows, live and at the end, one figure, a
    moving progress bar and no frozen ``0%| 0/20`` stand-in line; the stored outputs hold one figure."""
    page = lab_page
    name = f"training-{uuid.uuid4().hex[:6]}.ipynb"
    cells = [
        {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": src}
        for src in ("%load_ext jupyter_taskrun", TRAINING_CODE)
    ]
    nb = {"cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}  # fmt: skip
    (lab_server.root / name).write_text(json.dumps(nb))
    page.goto(f"{lab_server.url}lab/tree/{name}?reset&token={lab_server.token}")
    page.wait_for_selector("#jupyterlab-splash", state="detached", timeout=60000)
    page.wait_for_selector(".jp-NotebookPanel:visible .jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60000)
    run_cell(page, 0)
    page.wait_for_function(
        """() => { const c = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell .jp-InputPrompt');
                   return !!c && /\\[\\d+\\]/.test(c.textContent); }""",
        timeout=60000,
    )
    run_cell(page, 1)
    panel = shown_panel(page, 1)
    panel.locator(".taskrun-badge [data-status='running']").wait_for(timeout=60000)
    try:
        panel.locator(".taskrun-output-image").first.wait_for(timeout=60000)
    except Exception:
        print("PANEL TEXT:", panel.inner_text()[-2000:])
        raise
    # live: while it runs, one figure at a time, the bar moving, no tqdm stand-in text
    samples = []
    for _ in range(6):
        samples.append(
            {
                "images": panel.locator(".taskrun-output-image").count(),
                "progress": panel.locator(".taskrun-progress-text").inner_text() if panel.locator(".taskrun-progress-text").count() else "",
                "text": panel.inner_text(),
            }
        )
        time.sleep(0.5)
    panel.scroll_into_view_if_needed()
    panel.screenshot(path=str(artifacts_dir / "widget-panel-training-loop-live.png"))
    assert all(s["images"] == 1 for s in samples), [s["images"] for s in samples]
    assert len({s["progress"] for s in samples}) > 1, [s["progress"] for s in samples]  # the bar moves
    assert not any("0%|" in s["text"] or "0/20 [" in s["text"] for s in samples), [s["text"][-300:] for s in samples]
    panel.locator(".taskrun-badge [data-status='completed']").wait_for(timeout=90000)
    assert panel.locator(".taskrun-output-image").count() == 1
    assert "trained" in panel.inner_text() and "0%|" not in panel.inner_text()
    panel.screenshot(path=str(artifacts_dir / "widget-panel-training-loop-done.png"))
    # what the server stores is what is visible: one figure (plus the final print), not 20
    code, tasks = lab_server.api.request("GET", "taskrun/api/tasks?limit=20")
    assert code == 200
    task = next(t for t in tasks["tasks"] if t["name"] == "training-loop")
    code, outputs = lab_server.api.request("GET", f"taskrun/api/tasks/{task['id']}/outputs")
    assert code == 200
    images = [o for o in outputs["outputs"] if "image/png" in (o.get("data") or {})]
    assert len(images) == 1, [sorted(o.get("data") or {}) for o in outputs["outputs"]]
