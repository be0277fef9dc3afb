"""Issue 19: a task's outputs shown in the ``%%taskrun`` panel run no script in the viewer's Lab page.

A real ``jupyter lab`` and headless Chromium (fixtures in ``conftest.py``): a notebook runs a
``%%taskrun`` cell whose task displays hostile HTML (``<script>``, ``<img onerror>``,
``Javascript(...)``, raw HTML inside Markdown, ``<iframe srcdoc>``) next to harmless
outputs (text, a PNG, a plain HTML table). Once the panel shows the outputs, nothing may
have run (``window.__pwned`` stays undefined) and the harmless outputs must still show.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from test_widget_panel import run_cell, shown_panel  # same folder (no package)

pytestmark = pytest.mark.browser

PNG = "iVBORw0KGgoAAAANSUhEUgAAABgAAAAYCAIAAABvFaqvAAAAH0lEQVR4nGM4ISdHFcQwatCoQaMGjRo0atCoQQNvEADGtUkfvb3KfwAAAABJRU5ErkJggg=="

XSS_CODE = f"""%%taskrun --name widget-xss
import base64
from IPython.display import HTML, Javascript, Markdown, Image, display
print("plain text output line")
display(HTML("<script>window.__pwned=1</script><span class='xss-1'>script sent</span>"))
display(HTML('<img src=x onerror="window.__pwned=2"><span class="xss-2">onerror sent</span>'))
display(Javascript("window.__pwned=3"))
display(Markdown('**markdown bold** <img src=x onerror="window.__pwned=5"> <a href="javascript:window.__pwned=6">link</a>'))
display(HTML('<iframe srcdoc="<script>parent.__pwned=4</script>"></iframe><span class="xss-4">iframe sent</span>'))
display(HTML('<svg onload="window.__pwned=7"><circle r="3"/></svg><div style="background:url(javascript:window.__pwned=8)">styled</div>'))
display(Image(data=base64.b64decode("{PNG}"), format="png"))
display(HTML("<table class='harmless-table'><tr><th>metric</th><th>value</th></tr><tr><td>alpha</td><td>0.5</td></tr></table>"))
"last expression"
"""


def write_notebook(root: Path, name: str) -> None:
    cells = [
        {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": src}
        for src in ("%load_ext jupyter_taskrun", XSS_CODE)
    ]
    nb = {
        "cells": cells,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    (root / name).write_text(json.dumps(nb))


def test_task_outputs_run_no_script_in_the_panel(lab_page: Any, lab_server: Any, artifacts_dir: Path) -> None:
    page = lab_page
    name = f"widget-xss-{uuid.uuid4().hex[:6]}.ipynb"
    write_notebook(lab_server.root, name)
    page.goto(f"{lab_server.url}lab/tree/{name}?reset&token={lab_server.token}")
    page.wait_for_selector("#jupyterlab-splash", state="detached", timeout=60000)
    page.wait_for_selector(".jp-NotebookPanel:visible .jp-Notebook .jp-Cell", timeout=30000)
    page.wait_for_selector(".jp-NotebookPanel:visible .jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60000)
    run_cell(page, 0)
    page.wait_for_selector(".jp-NotebookPanel:visible .jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60000)
    time.sleep(2)
    run_cell(page, 1)

    panel = shown_panel(page, 1)
    panel.locator(".taskrun-badge [data-status='completed']").wait_for(timeout=90000)
    outputs = panel.locator(".taskrun-outputs")
    # every output rendered (the last one is the table, then the result)
    outputs.locator("table.harmless-table").wait_for(timeout=30000)
    page.wait_for_function("el => el.textContent.includes('last expression')", arg=outputs.element_handle(), timeout=30000)
    img = outputs.locator("img.taskrun-output-image")
    img.wait_for(timeout=30000)
    page.wait_for_function("el => el.complete && el.naturalWidth === 24", arg=img.element_handle(), timeout=30000)
    time.sleep(1.5)  # give any handler (onerror, iframe load) time to fire

    pwned = page.evaluate("() => [window.__pwned, document.querySelectorAll('.taskrun-panel iframe').length]")
    assert pwned == [None, 0], pwned

    # nothing executable reached the DOM of the panel
    dom = page.evaluate(
        """() => {
            const root = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .taskrun-panel .taskrun-outputs');
            const all = [...root.querySelectorAll('*')];
            return {
                scripts: root.querySelectorAll('script').length,
                handlers: all.filter(el => [...el.attributes].some(a => a.name.startsWith('on'))).length,
                jsLinks: [...root.querySelectorAll('a[href]')].filter(a => /^\\s*javascript:/i.test(a.getAttribute('href'))).length,
                svg: root.querySelectorAll('svg').length,
            };
        }"""
    )
    assert dom == {"scripts": 0, "handlers": 0, "jsLinks": 0, "svg": 0}, dom

    # the harmless outputs still show: the table, the PNG, the Markdown's bold text, the text of the
    # neutralised HTML outputs, and a note for the JavaScript that was not run
    text = outputs.inner_text()
    for expected in (
        "metric",
        "alpha",
        "0.5",
        "script sent",
        "onerror sent",
        "iframe sent",
        "markdown bold",
        "JavaScript output not run",
        "last expression",
    ):
        assert expected in text, (expected, text)
    assert outputs.locator("strong", has_text="markdown bold").count() == 1
    assert "plain text output line" in panel.locator(".taskrun-log").inner_text()
    panel.scroll_into_view_if_needed()
    panel.screenshot(path=str(artifacts_dir / "widget-xss-panel.png"))
    assert page.evaluate("() => window.__pwned") is None
