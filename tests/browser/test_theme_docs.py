"""Issue 16 in a real browser: the ``%%taskrun`` panel follows JupyterLab's theme and works from the
keyboard, and the API docs page (Swagger UI served by the package) renders and runs "Try it out".

A real ``jupyter lab`` and Debian's Chromium (fixtures in ``conftest.py``). The panel is shown in
JupyterLab Light, then the theme is switched from the Settings menu to JupyterLab Dark, as a person
would; in both its computed text colour must contrast with its computed background (WCAG ratio),
and the colours must differ between the themes. The theme setting is put back at the end.
Screenshots go to ``tests/artifacts/``.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from test_widget_panel import run_cell, shown_panel  # same folder (no package)

pytestmark = pytest.mark.browser

THEME_CODE = """%%taskrun --name themed --tag theme
import sys, time
for i in range(12):
    print(f"step {i}: everything fine", flush=True)
print("one warning on stderr", file=sys.stderr)
time.sleep(0.5)"""

#: computed colours of an element and its effective background (layers composited) -> WCAG contrast
CONTRAST_JS = """el => {
    const parse = c => {
        let m = c.match(/^rgba?\\(([^)]*)\\)/);
        if (m) {
            const p = m[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
            return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
        }
        m = c.match(/^color\\(srgb ([^)]*)\\)/);
        if (m) {
            const p = m[1].split(/[\\s\\/]+/).filter(Boolean).map(Number);
            return [p[0] * 255, p[1] * 255, p[2] * 255, p.length > 3 ? p[3] : 1];
        }
        throw new Error('unknown colour ' + c);
    };
    const over = (top, under) => under.map((v, i) => top[i] * top[3] + v * (1 - top[3]));
    const layers = [];
    for (let n = el; n; n = n.parentElement) {
        const c = parse(getComputedStyle(n).backgroundColor);
        if (c[3] > 0) { layers.push(c); if (c[3] >= 1) break; }
    }
    let bg = [255, 255, 255];
    for (const layer of layers.reverse()) bg = over(layer, bg);
    const fg = over(parse(getComputedStyle(el).color), bg);
    const lum = rgb => {
        const [r, g, b] = rgb.map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
        return 0.2126 * r + 0.7152 * g + 0.0722 * b;
    };
    const [hi, lo] = [lum(fg), lum(bg)].sort((a, b) => b - a);
    return {color: getComputedStyle(el).color, background: bg.map(Math.round), ratio: (hi + 0.05) / (lo + 0.05)};
}"""


def write_notebook(root: Path, name: str, code: str) -> None:
    cells = [
        {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": src}
        for src in ("%load_ext jupyter_taskrun", code)
    ]
    nb = {"cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}  # fmt: skip
    (root / name).write_text(json.dumps(nb))


def open_notebook(page: Any, lab_server: Any, name: str) -> None:
    page.goto(f"{lab_server.url}lab/tree/{name}?reset&token={lab_server.token}")
    page.wait_for_selector("#jupyterlab-splash", state="detached", timeout=60000)
    page.wait_for_function(
        """() => { const c = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell');
                   return !!c && c.textContent.includes('load_ext jupyter_taskrun'); }""",
        timeout=60000,
    )
    page.wait_for_selector(".jp-NotebookPanel:visible .jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60000)
    run_cell(page, 0)
    page.wait_for_function(
        r"""() => { const c = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell .jp-InputPrompt');
                   return !!c && /\[\d+\]/.test(c.textContent); }""",
        timeout=60000,
    )


def colours(panel: Any) -> dict[str, Any]:
    """Contrast of the panel's own text, its log text and its status badge (each on its background)."""
    return {
        "panel": panel.evaluate(CONTRAST_JS),
        "log": panel.locator(".taskrun-logbox pre").evaluate(CONTRAST_JS),
        "badge": panel.locator(".taskrun-badge .taskrun-status").evaluate(CONTRAST_JS),
    }


def switch_theme(page: Any, theme: str) -> None:
    """Settings ▸ Theme ▸ <theme>, from the menu bar, then wait until Lab has applied it."""
    page.locator(".lm-MenuBar-item", has_text="Settings").click()
    page.locator(".lm-Menu-item", has_text="Theme").first.hover()
    page.locator(".lm-Menu-item", has_text=theme).filter(has_not_text="High Contrast").first.click()
    page.wait_for_function("t => document.body.dataset.jpThemeName === t", arg=theme, timeout=30000)
    # the theme's stylesheet is loaded once its variables are in force
    light = "true" if "Light" in theme else "false"
    page.wait_for_function(
        """light => document.body.dataset.jpThemeLight === light &&
                    (getComputedStyle(document.body).getPropertyValue('--jp-layout-color1').trim() === 'white') === (light === 'true')""",
        arg=light,
        timeout=30000,
    )
    time.sleep(0.5)  # the repaint after the variables change


def focus_walk(page: Any, panel: Any, limit: int = 20) -> list[dict[str, str]]:
    """Press Tab from the panel's first focusable control until focus leaves the panel; what got focus."""
    panel.evaluate(
        """root => [...root.querySelectorAll("button, a[href], select, [tabindex='0']")]
                      .find(el => el.checkVisibility() && !el.disabled).focus()"""
    )
    seen = []
    for _ in range(limit):
        info = page.evaluate(
            """root => { const el = document.activeElement;
                         if (!root.contains(el)) return null;
                         const name = (el.getAttribute('aria-label') || el.textContent || el.getAttribute('title') || '').trim();
                         return {tag: el.tagName.toLowerCase(), name: name.slice(0, 60), title: el.getAttribute('title') || ''}; }""",
            panel.element_handle(),
        )
        if info is None:
            break
        seen.append(info)
        page.keyboard.press("Tab")
    return seen


def test_panel_follows_the_theme_and_works_from_the_keyboard(lab_page: Any, lab_server: Any, artifacts_dir: Path) -> None:
    page = lab_page
    name = f"theme-{uuid.uuid4().hex[:6]}.ipynb"
    write_notebook(lab_server.root, name, THEME_CODE)
    try:
        open_notebook(page, lab_server, name)
        assert page.evaluate("() => document.body.dataset.jpThemeLight") == "true"
        run_cell(page, 1)
        panel = shown_panel(page, 1)
        panel.locator(".taskrun-badge [data-status='completed']").wait_for(timeout=90000)
        page.wait_for_function(
            "el => el.textContent.includes('step 11')", arg=panel.locator(".taskrun-log").element_handle(), timeout=30000
        )
        panel.scroll_into_view_if_needed()
        panel.screenshot(path=str(artifacts_dir / "widget-panel-light.png"))
        light = colours(panel)

        switch_theme(page, "JupyterLab Dark")
        panel.scroll_into_view_if_needed()
        panel.screenshot(path=str(artifacts_dir / "widget-panel-dark.png"))
        dark = colours(panel)

        for part in ("panel", "log", "badge"):
            assert light[part]["color"] != dark[part]["color"], (part, light[part], dark[part])
        assert light["panel"]["background"] != dark["panel"]["background"], (light, dark)
        assert sum(dark["panel"]["background"]) < sum(light["panel"]["background"]), (light, dark)  # dark is dark
        for theme, seen in (("light", light), ("dark", dark)):
            assert seen["panel"]["ratio"] >= 4.5, (theme, seen)  # WCAG AA for text
            assert seen["log"]["ratio"] >= 4.5, (theme, seen)
            assert seen["badge"]["ratio"] >= 4.5, (theme, seen)

        # the keyboard: Tab reaches every enabled control of the finished panel, each named
        walk = focus_walk(page, panel)
        names = [f["name"] for f in walk]
        assert all(names), walk
        for expected in ("Task log", "Rerun", "Open executed notebook"):
            assert any(expected in n for n in names), (expected, walk)
        buttons = [f for f in walk if f["tag"] == "button"]
        assert buttons and all(f["title"] for f in buttons), walk  # each button also says what it does
        # ... and Enter works them: Rerun starts a new task, shown below, which completes
        rerun = panel.get_by_role("button", name="Rerun").first
        rerun.focus()
        page.keyboard.press("Enter")
        child = panel.locator(".taskrun-panel").first
        child.locator(".taskrun-badge [data-status='completed']").wait_for(timeout=90000)
        child.scroll_into_view_if_needed()
        page.screenshot(path=str(artifacts_dir / "widget-panel-dark-rerun.png"))
        tasks = lab_server.api.get("taskrun/api/tasks?name=themed")["tasks"]
        assert len(tasks) == 2 and {t["status"] for t in tasks} == {"completed"}, tasks
        assert not [e for e in page.errors if "taskrun" in e.lower() or "widget" in e.lower()], page.errors
    finally:
        # the theme is a user setting of the shared server: back to Light for the other tests
        code, body = lab_server.api.request(
            "PUT", "lab/api/settings/@jupyterlab/apputils-extension:themes", {"raw": json.dumps({"theme": "JupyterLab Light"})}
        )
        assert code in (200, 204), (code, body)


def test_api_docs_page_renders_and_runs_try_it_out(browser: Any, lab_server: Any, artifacts_dir: Path) -> None:
    docs = f"{lab_server.url}taskrun/api/docs"
    # without credentials: refused like every route
    anonymous = browser.new_context()
    try:
        response = anonymous.new_page().goto(docs)
        assert response is not None and response.status == 403
    finally:
        anonymous.close()

    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    page.on("console", lambda msg: errors.append(f"console.{msg.type}: {msg.text}") if msg.type == "error" else None)
    outside: list[str] = []
    page.on("request", lambda req: None if req.url.startswith(lab_server.url) else outside.append(req.url))
    sent: list[dict[str, str]] = []
    page.on("request", lambda req: sent.append(req.headers) if req.url.split("?")[0].endswith("/taskrun/api/status") else None)
    try:
        # the token logs the browser in (cookie); the page itself keeps it out of its requests
        response = page.goto(f"{docs}?token={lab_server.token}")
        assert response is not None and response.status == 200
        page.locator(".swagger-ui .info .title", has_text="jupyter_taskrun").wait_for()
        operations = page.locator(".opblock")
        operations.first.wait_for()
        paths = operations.locator(".opblock-summary-path").all_inner_texts()
        for path in ("/taskrun/api/tasks", "/taskrun/api/status", "/taskrun/api/tasks/{task_id}/cancel"):
            assert any(p.replace("\u200b", "") == path for p in paths), (path, paths)
        page.screenshot(path=str(artifacts_dir / "api-docs.png"))

        status_op = page.locator(".opblock.opblock-get", has=page.locator(".opblock-summary-path", has_text="/taskrun/api/status")).first
        status_op.locator(".opblock-summary").click()
        status_op.get_by_role("button", name="Try it out").click()
        status_op.get_by_role("button", name="Execute").click()
        live = status_op.locator(".live-responses-table .response .response-col_status")
        live.first.wait_for(timeout=30000)
        assert live.first.inner_text().strip() == "200"
        body = status_op.locator(".live-responses-table .response-col_description pre.microlight").first.inner_text()
        data = json.loads(body)
        assert data["started"] is True and "capacity" in data and "running" in data, data
        status_op.scroll_into_view_if_needed()
        page.screenshot(path=str(artifacts_dir / "api-docs-try-it-out.png"))
        # the request carried the server's XSRF token (the _xsrf cookie's value), as a POST needs
        cookies = {c["name"]: c["value"] for c in context.cookies()}
        assert sent and sent[-1].get("x-xsrftoken") == cookies.get("_xsrf"), (sent, sorted(cookies))
        # ... and with it a state-changing call passes jupyter_server's XSRF check: submit a task
        submit_op = page.locator(
            ".opblock.opblock-post", has=page.locator(".opblock-summary-path", has_text=re.compile(r"^/taskrun/api/tasks$"))
        )
        submit_op = submit_op.first
        submit_op.locator(".opblock-summary").click()
        submit_op.get_by_role("button", name="Try it out").click()
        submit_op.locator("textarea.body-param__text").fill(json.dumps({"code": "print('from swagger')", "name": "swagger-try"}))
        submit_op.get_by_role("button", name="Execute").click()
        code = submit_op.locator(".live-responses-table .response .response-col_status").first
        code.wait_for(timeout=30000)
        assert code.inner_text().strip() == "201", submit_op.locator(".live-responses-table").inner_text()
        created = lab_server.api.get("taskrun/api/tasks?name=swagger-try")["tasks"]
        assert len(created) == 1, created
        lab_server.api.wait_status(created[0]["id"], {"completed"})
        assert not outside, outside  # nothing loaded from anywhere but this server
        assert not errors, errors  # no CSP refusal, no script error
    finally:
        context.close()
