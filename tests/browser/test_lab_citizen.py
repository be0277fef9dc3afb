"""Issue 16 in a real browser: the extension is a good JupyterLab citizen.

A real ``jupyter lab`` (its own settings dir and task database) and Debian's Chromium (fixtures in
``conftest.py``). Checked as a person would see it: the settings are in the Settings Editor and a
change there applies without a reload; the declared notebook toolbar button and keyboard shortcut
submit real tasks (read back over REST); the Running panel lists a running task and cancels it; a
task submitted over REST (another client) raises a Lab notification whose *Open* opens its detail
view; sorting and the created-date range are the server's (the same order as ``GET /tasks?sort=``).
Screenshots go to ``tests/artifacts/``.
"""

from __future__ import annotations

import json
import re
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from labui import PANEL, open_panel, row, unique, wait_until
from test_widget_panel import accept_kernel_dialog  # same folder (no package)

pytestmark = pytest.mark.browser

PLUGIN = "jupyter-taskrun:plugin"
DIALOG = ".jp-Dialog"


def write_notebook(path: Path, sources: list[str]) -> None:
    nb = {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "cells": [
            {"cell_type": "code", "id": f"c{i}", "metadata": {}, "execution_count": None, "outputs": [], "source": src}
            for i, src in enumerate(sources)
        ],
    }
    path.write_text(json.dumps(nb))


def open_notebook(page: Any, lab_server: Any, name: str) -> None:
    page.goto(f"{lab_server.url}lab/tree/{name}?reset&token={lab_server.token}")
    page.wait_for_selector("#jupyterlab-splash", state="detached", timeout=60000)
    page.locator(".jp-NotebookPanel:visible .jp-Notebook .jp-Cell").first.wait_for(timeout=60000)
    accept_kernel_dialog(page)


def reset_settings(api: Any) -> None:
    status, body = api.request("PUT", f"lab/api/settings/{PLUGIN}", {"raw": "{}"})
    assert status == 204, (status, body)


def log_text(api: Any, task_id: str) -> str:
    status, body = api.request("GET", f"taskrun/api/tasks/{task_id}/logs")
    assert status == 200, (status, body)
    return str(body)


def tasks_tagged(api: Any, tag: str, timeout: float = 20) -> list[dict[str, Any]]:
    return wait_until(lambda: api.get(f"taskrun/api/tasks?tag={tag}")["tasks"], timeout, f"a task tagged {tag}")


def submit_dialog(page: Any, tag: str) -> None:
    dialog = page.locator(DIALOG)
    dialog.locator('input[name="tags"]').wait_for(timeout=15000)
    dialog.locator('input[name="tags"]').fill(tag)
    dialog.locator("button", has_text="Run").click()
    dialog.wait_for(state="detached", timeout=10000)


def test_settings_in_the_editor_apply_live(lab_page: Any, api: Any, lab_server: Any, artifacts_dir: Path) -> None:
    page = lab_page
    reset_settings(api)
    try:
        page.locator(".lm-MenuBar-item", has_text="Settings").click()
        page.locator(".lm-Menu-item", has_text="Settings Editor").first.click()
        page.get_by_text("Tasks (jupyter_taskrun)").first.click()
        form = page.locator(".jp-SettingsPanel")
        for field in ("notifications", "notifyOtherClients", "refreshInterval", "standby", "defaultKernel",
                      "defaultTimeout", "defaultPriority", "columns", "confirmDelete"):  # fmt: skip
            form.locator(f'[id="jp-SettingsEditor-{PLUGIN}_{field}"]').wait_for(timeout=15000)
        page.screenshot(path=str(artifacts_dir / "citizen-01-settings-editor.png"))

        # a finished task to delete
        name = unique("delete-me")
        task = api.submit(code="x = 1", name=name)
        api.wait_status(task["id"], {"completed"}, timeout=60)

        # "Confirm before deleting" off, in the form: no reload afterwards
        box = form.locator(f'[id="jp-SettingsEditor-{PLUGIN}_confirmDelete"]')
        assert box.is_checked()
        box.uncheck()
        wait_until(
            lambda: json.loads(api.get(f"lab/api/settings/{PLUGIN}")["raw"] or "{}").get("confirmDelete") is False,
            15,
            "confirmDelete saved",
        )
        # the columns setting too: no age column
        columns = form.locator(f'[id="jp-SettingsEditor-{PLUGIN}_columns"]')
        columns.select_option(label=["Duration", "End time", "Owner", "Tags", "Progress bar"])
        wait_until(
            lambda: "age" not in json.loads(api.get(f"lab/api/settings/{PLUGIN}")["raw"] or "{}").get("columns", ["age"]),
            15,
            "columns saved",
        )

        open_panel(page)
        r = row(page, task["id"])
        r.wait_for(timeout=30000)
        assert r.locator(".jp-TaskRun-age").is_hidden()
        assert r.locator(".jp-TaskRun-ended").is_visible()
        assert "ended" in r.locator(".jp-TaskRun-ended").inner_text()
        r.click(button="right")
        page.locator(".lm-Menu-item", has_text="Delete").first.click()
        # deleted at once: no confirmation dialog
        r.wait_for(state="detached", timeout=15000)
        assert page.locator(DIALOG).count() == 0
        status, _ = api.request("GET", f"taskrun/api/tasks/{task['id']}")
        assert status == 404
    finally:
        reset_settings(api)


def test_toolbar_button_submits_the_notebook(lab_page: Any, api: Any, lab_server: Any, artifacts_dir: Path) -> None:
    page = lab_page
    nb_name = f"{unique('toolbar')}.ipynb"
    write_notebook(lab_server.root / nb_name, ["print('from the toolbar', 6 * 7)"])
    open_notebook(page, lab_server, nb_name)
    button = page.locator('.jp-NotebookPanel-toolbar .jp-Toolbar-item[data-jp-item-name="taskrun-run"] jp-button')
    button.wait_for(timeout=30000)
    assert "background task" in (button.get_attribute("title") or "")
    page.screenshot(path=str(artifacts_dir / "citizen-02-toolbar-button.png"))
    button.click()
    tag = unique("toolbar")
    submit_dialog(page, tag)
    (task,) = tasks_tagged(api, tag)
    # the saved file by path, or (when Lab marked it changed on opening) its content
    assert task["source_kind"] in ("path", "notebook") and task["name"] == nb_name[: -len(".ipynb")], task
    done = api.wait_status(task["id"], {"completed", "failed"}, timeout=90)
    assert done["status"] == "completed", done
    assert "from the toolbar 42" in log_text(api, task["id"])


def test_shortcut_runs_a_cell_as_a_task(lab_page: Any, api: Any, lab_server: Any) -> None:
    page = lab_page
    nb_name = f"{unique('shortcut')}.ipynb"
    write_notebook(lab_server.root / nb_name, ["print('first cell')", "print('second', 2 ** 5)"])
    open_notebook(page, lab_server, nb_name)
    cell = page.locator(".jp-NotebookPanel:visible .jp-Notebook .jp-Cell").nth(1)
    cell.locator(".jp-InputPrompt").click()  # select the second cell (command mode)
    page.keyboard.press("Alt+Shift+Enter")
    tag = unique("shortcut")
    submit_dialog(page, tag)
    (task,) = tasks_tagged(api, tag)
    assert task["source_kind"] == "cells", task
    done = api.wait_status(task["id"], {"completed", "failed"}, timeout=90)
    assert done["status"] == "completed", done
    text = log_text(api, task["id"])
    assert "second 32" in text and "first cell" not in text


def test_running_panel_lists_and_cancels_a_task(lab_page: Any, api: Any, artifacts_dir: Path) -> None:
    page = lab_page
    name = unique("long-runner")
    task = api.submit(code="import time\nfor i in range(600):\n    time.sleep(0.1)", name=name)
    api.wait_status(task["id"], {"running"}, timeout=60)
    page.locator('.lm-TabBar-tab[data-id="jp-running-sessions"]').click()
    item = page.locator(".jp-RunningSessions-item.jp-TaskRun-runningItem", has_text=name)
    item.wait_for(timeout=30000)
    page.screenshot(path=str(artifacts_dir / "citizen-03-running-panel.png"))
    # open: the detail view
    item.locator(".jp-RunningSessions-itemLabel").click()
    page.locator(f"#jupyter-taskrun-detail-{task['id']}").wait_for(timeout=30000)
    # shut down: cancels the task
    item.hover()
    item.locator(".jp-RunningSessions-itemShutdown").click()
    done = api.wait_status(task["id"], {"cancelled", "completed", "failed"}, timeout=60)
    assert done["status"] == "cancelled", done
    item.wait_for(state="detached", timeout=30000)


def test_rest_task_raises_a_notification_that_opens_it(lab_page: Any, api: Any, artifacts_dir: Path) -> None:
    page = lab_page
    open_panel(page)
    name = unique("from-rest")
    task = api.submit(code="import time\ntime.sleep(1)\nprint('done')", name=name)
    toast = page.locator(".jp-toast-message, .Toastify__toast", has_text=name).first
    toast.wait_for(timeout=60000)
    assert "completed" in toast.inner_text()
    page.screenshot(path=str(artifacts_dir / "citizen-04-notification.png"))
    page.locator(".Toastify__toast", has_text=name).locator("button", has_text="Open").first.click()
    page.locator(f"#jupyter-taskrun-detail-{task['id']}").wait_for(timeout=30000)


def _shown_ids(page: Any, ids: set[str]) -> list[str]:
    shown = page.eval_on_selector_all(f"{PANEL} .jp-TaskRun-row", "rows => rows.map(r => r.dataset.taskId)")
    return [i for i in shown if i in ids]


def test_sort_and_created_date_range(lab_page: Any, api: Any, artifacts_dir: Path) -> None:
    page = lab_page
    prefix = unique("sorted")
    made = [api.submit(code=f"import time\ntime.sleep({s})", name=f"{prefix}-{n}") for n, s in (("b", 1.5), ("a", 0.2), ("c", 0.8))]
    for t in made:
        api.wait_status(t["id"], {"completed"}, timeout=90)
    ids = {t["id"] for t in made}
    panel = open_panel(page)
    panel.locator(".jp-TaskRun-search").fill(prefix)
    wait_until(lambda: len(_shown_ids(page, ids)) == 3, 20, "the three tasks listed")

    def order_by(sort: str) -> list[str]:
        return [t["id"] for t in api.get(f"taskrun/api/tasks?sort={sort}&limit=500")["tasks"] if t["id"] in ids]

    by_name = order_by("name")
    assert [t["name"][-1] for t in sorted(made, key=lambda t: by_name.index(t["id"]))] == ["a", "b", "c"]
    for sort in ("name", "-name", "-duration", "duration", "created"):
        panel.locator(".jp-TaskRun-sort").select_option(sort)
        expected = order_by(sort)
        wait_until(lambda e=expected: _shown_ids(page, ids) == e, 15, f"rows in the server's {sort} order")
    page.screenshot(path=str(artifacts_dir / "citizen-05-sorted.png"))

    # the created-date range: from tomorrow hides them, today shows them
    today = date.today()
    panel.locator(".jp-TaskRun-date.jp-mod-from").fill((today + timedelta(days=1)).isoformat())
    wait_until(lambda: _shown_ids(page, ids) == [], 15, "no rows created from tomorrow on")
    assert "match" in panel.locator(".jp-TaskRun-empty").inner_text()
    panel.locator(".jp-TaskRun-date.jp-mod-from").fill(today.isoformat())
    panel.locator(".jp-TaskRun-date.jp-mod-to").fill(today.isoformat())
    wait_until(lambda: len(_shown_ids(page, ids)) == 3, 15, "the rows created today")
    panel.locator(".jp-TaskRun-date.jp-mod-to").fill((today - timedelta(days=1)).isoformat())
    wait_until(lambda: _shown_ids(page, ids) == [], 15, "no rows created until yesterday")
    panel.locator(".jp-TaskRun-date.jp-mod-from").fill("")
    panel.locator(".jp-TaskRun-date.jp-mod-to").fill("")
    panel.locator(".jp-TaskRun-sort").select_option("")

    # the server's validation names the parameter
    for query, param in (("sort=bogus", "sort"), ("created_after=yesterday", "created_after"), ("created_before=1x", "created_before")):
        status, body = api.request("GET", f"taskrun/api/tasks?{query}")
        assert status == 400 and param in json.dumps(body), (query, status, body)
    # and the range is the server's: created_after <= created_at < created_before
    first = min(made, key=lambda t: t["created_at"])
    listed = api.get(f"taskrun/api/tasks?created_after={quote(first['created_at'])}&limit=500")["tasks"]
    assert ids <= {t["id"] for t in listed}
    listed = api.get(f"taskrun/api/tasks?created_before={quote(first['created_at'])}&limit=500")["tasks"]
    assert not ids & {t["id"] for t in listed}


def test_launcher_item_opens_the_tasks_view(lab_page: Any) -> None:
    page = lab_page
    page.locator('.lm-TabBar-tab[data-id="filebrowser"]').click()  # the Tasks view hidden first
    assert page.locator(PANEL).is_hidden()
    label = page.locator(".jp-LauncherCard-label", has_text=re.compile(r"^\s*Tasks\s*$"))
    card = page.locator(".jp-LauncherCard").filter(has=label)
    card.wait_for(timeout=30000)
    assert "background tasks" in (card.get_attribute("title") or "")
    card.click()
    page.locator(PANEL).wait_for(state="visible", timeout=15000)


def test_notification_setting_failed_only(lab_page: Any, api: Any) -> None:
    """With "failed only" (set over the settings REST API, read at page load), a completed task from
    another client stays quiet while a failed one is announced."""
    page = lab_page
    status, body = api.request("PUT", f"lab/api/settings/{PLUGIN}", {"raw": json.dumps({"notifications": "failed"})})
    assert status == 204, (status, body)
    try:
        page.reload()
        page.wait_for_selector("#jupyterlab-splash", state="detached", timeout=60000)
        open_panel(page)
        ok, bad = unique("quiet-ok"), unique("loud-fail")
        done = api.submit(code="print('fine')", name=ok)
        failed = api.submit(code="raise RuntimeError('boom')", name=bad)
        toast = page.locator(".Toastify__toast", has_text=bad).first
        toast.wait_for(timeout=60000)
        assert "failed" in toast.inner_text()
        api.wait_status(done["id"], {"completed"}, timeout=60)
        row(page, done["id"]).locator(".jp-TaskRun-ended").wait_for(timeout=15000)
        assert page.locator(".Toastify__toast", has_text=ok).count() == 0
        assert api.task(failed["id"])["status"] == "failed"
    finally:
        reset_settings(api)


def test_default_submission_options_fill_the_run_dialog(lab_page: Any, api: Any, lab_server: Any) -> None:
    page = lab_page
    defaults = {"defaultTags": ["nightly", "gpu"], "defaultTimeout": 120, "defaultPriority": 3}
    status, body = api.request("PUT", f"lab/api/settings/{PLUGIN}", {"raw": json.dumps(defaults)})
    assert status == 204, (status, body)
    try:
        nb_name = f"{unique('defaults')}.ipynb"  # never run: no remembered options of its own
        write_notebook(lab_server.root / nb_name, ["print('defaults')"])
        open_notebook(page, lab_server, nb_name)
        page.locator('.jp-NotebookPanel-toolbar .jp-Toolbar-item[data-jp-item-name="taskrun-run"] jp-button').click()
        dialog = page.locator(DIALOG)
        dialog.locator('input[name="tags"]').wait_for(timeout=15000)
        assert dialog.locator('input[name="tags"]').input_value() == "nightly, gpu"
        assert dialog.locator('input[name="timeout"]').input_value() == "120"
        assert dialog.locator('input[name="priority"]').input_value() == "3"
        dialog.locator("button.jp-mod-reject").click()
        dialog.wait_for(state="detached", timeout=10000)
    finally:
        reset_settings(api)
