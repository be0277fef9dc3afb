"""Everyday chores in the JupyterLab sidebar, end to end in real headless Chromium (issue 13).

One test per chore: the tag filter applies as you type; the Run-as-task dialog offers the
options of the magic and the API (and remembers them per file); "Open executed notebook"
saves once under the one name and opens it without a kernel; "Clear finished…" asks, then
deletes through ``DELETE /taskrun/api/tasks?status=…&before=…``. Server-side effects are
checked through the REST API, the UI by waiting for the DOM. Screenshots go to
tests/artifacts/chores-*.png. The clear-finished test runs last (it deletes finished tasks).
"""

from __future__ import annotations

import contextlib
import json
import re
import urllib.parse
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from jupyter_taskrun.formatting import executed_notebook_name
from tests.browser.labui import PANEL, clear_field, open_panel, row, toolbar_button, unique, wait_enabled, wait_until

pytestmark = pytest.mark.browser

DIALOG = ".jp-Dialog"


def visible_ids(page: Any) -> list[str]:
    return page.evaluate(f"() => [...document.querySelectorAll('{PANEL} .jp-TaskRun-row')].map(r => r.dataset.taskId)")


def cancel_quietly(api: Any, *ids: str) -> None:
    for task_id in ids:
        with contextlib.suppress(Exception):
            api.request("POST", f"taskrun/api/tasks/{task_id}/cancel", {})


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


def open_run_dialog(page: Any, file_name: str) -> Any:
    """Right-click a file at the server root → "Run as Task"; the dialog that opens."""
    if not page.locator("#filebrowser").is_visible():  # a click on the shown tab would close it
        page.locator('.lm-TabBar-tab[data-id="filebrowser"]').click()
    refresh = page.locator(".jp-FileBrowser [data-command='filebrowser:refresh']")
    if refresh.count():
        refresh.first.click()
    item = page.locator(f'.jp-DirListing-item[title*="{file_name}"]').first
    item.wait_for(timeout=15000)
    item.click(button="right")
    page.locator(".lm-Menu-item", has_text="Run as Task").first.click()
    dialog = page.locator(f"{DIALOG} .jp-TaskRun-submitDialog")
    dialog.wait_for(timeout=10000)
    return page.locator(DIALOG)


def url_path(url: str) -> str:
    """The path of a URL (Lab's requests carry a cache-busting query)."""
    return urllib.parse.urlsplit(url).path


def kernel_ids(api: Any) -> set[str]:
    return {k["id"] for k in api.get("api/kernels")}


def session_paths(api: Any) -> list[str]:
    return [s.get("path", "") for s in api.get("api/sessions")]


# ------------------------------------------------------------------------ tag filter


def test_tag_filter_applies_as_you_type(lab_page: Any, api: Any, artifacts_dir: Path) -> None:
    page = lab_page
    panel = open_panel(page)
    uid = uuid.uuid4().hex[:6]
    mine = api.submit(code="print(1)", name=f"weekly-training-loop-{uid}", tags=[f"chore{uid}-gpu"])
    other = api.submit(code="print(2)", name=f"weekly-report-{uid}", tags=[f"other{uid}"])
    for t in (mine, other):
        api.wait_status(t["id"], {"completed"}, timeout=60)
        row(page, t["id"]).wait_for(state="visible", timeout=15000)

    tag = panel.locator("input.jp-TaskRun-tagFilter")
    tag.click()
    # a prefix of the tag, typed key by key: no Enter, no blur
    tag.press_sequentially(f"chore{uid}", delay=40)
    wait_until(lambda: visible_ids(page) == [mine["id"]], 5, "tag prefix filters as you type")
    # the complete tag (which the server filters too) still shows it
    tag.press_sequentially("-gpu", delay=40)
    wait_until(lambda: visible_ids(page) == [mine["id"]], 5, "complete tag filters as you type")
    page.screenshot(path=str(artifacts_dir / "chores-01-tag-as-you-type.png"))
    # a tag no task has empties the list, without Enter (fill: one input event, as a paste)
    tag.fill(f"chore{uid}-gpux")
    wait_until(lambda: visible_ids(page) == [], 5, "a tag no task has")
    tag.fill(f"chore{uid}-gpu")
    wait_until(lambda: visible_ids(page) == [mine["id"]], 5, "back to the matching tag")
    # deleting the text brings everything back
    clear_field(tag)
    wait_until(lambda: {mine["id"], other["id"]} <= set(visible_ids(page)), 5, "tag filter cleared")
    # the name search matches anywhere in the name, still
    panel.locator("input.jp-TaskRun-search").fill(f"loop-{uid}")
    wait_until(lambda: visible_ids(page) == [mine["id"]], 5, "search by substring")
    clear_field(panel.locator("input.jp-TaskRun-search"))


# ------------------------------------------------------------------ run-as-task dialog

PROBE = """\
import os, sys
print("ARGV", sys.argv[1:])
print("ENV", repr(os.environ.get("CHORE_VAR")))
print("CWD", os.getcwd())
print("ALPHA", alpha)
"""


def test_run_dialog_options_hints_and_memory(lab_page: Any, api: Any, lab_server: Any, artifacts_dir: Path) -> None:
    page = lab_page
    uid = uuid.uuid4().hex[:6]
    script = f"probe-{uid}.py"
    (lab_server.root / script).write_text(PROBE)
    folder = f"chores-work-{uid}"
    (lab_server.root / folder).mkdir()
    nb_name = f"chores-nb-{uid}.ipynb"
    write_notebook(lab_server.root / nb_name, ["print('nb')"])
    open_panel(page)

    dialog = open_run_dialog(page, script)
    body = dialog.locator(".jp-TaskRun-submitDialog")
    assert body.get_attribute("data-kind") == "script"
    hints = body.inner_text()
    # for a script, parameters are variables set before it runs, not a tagged cell
    assert "tagged" not in hints, hints
    assert "variable" in hints and "before the first line of the script" in hints, hints
    tag = f"chores-{uid}"
    values = {
        "args": '--n 3 "two words" it\\\'s',
        "parameters": '{"alpha": 0.5}',
        "timeout": "120",
        "cell_timeout": "90",
        "env": "CHORE_VAR=hello = world\n# a comment\nOTHER_VAR=1",
        "cwd": folder,
        "priority": "5",
        "memory_limit": "2 GiB",
        "tags": tag,
    }
    for field, value in values.items():
        selector = f'textarea[name="{field}"]' if field in ("parameters", "env") else f'input[name="{field}"]'
        dialog.locator(selector).fill(value)
    dialog.locator(".jp-Dialog-body").evaluate("node => { node.scrollTop = 0; }")  # the script's own fields
    page.screenshot(path=str(artifacts_dir / "chores-02-run-dialog-script.png"))
    with page.expect_request(lambda r: r.method == "POST" and url_path(r.url).endswith("/taskrun/api/tasks")) as req:
        dialog.locator("button", has_text="Run").click()
    sent = req.value.post_data_json
    # the API's field names (docs/API_CONTRACT.md, models.TaskSubmission), parsed
    assert sent["path"] == script, sent
    assert sent["args"] == ["--n", "3", "two words", "it's"], sent
    assert sent["parameters"] == {"alpha": 0.5}, sent
    assert sent["timeout"] == 120 and sent["cell_timeout"] == 90, sent
    assert sent["env"] == {"CHORE_VAR": "hello = world", "OTHER_VAR": "1"}, sent
    assert sent["cwd"] == folder and sent["priority"] == 5, sent
    assert sent["memory_limit"] == 2 * 1024**3, sent
    assert sent["tags"] == [tag], sent

    tasks = wait_until(lambda: api.get(f"taskrun/api/tasks?tag={tag}")["tasks"], 20, "the task from the dialog")
    task = api.wait_status(tasks[0]["id"], {"completed", "failed"}, timeout=90)
    logs = api.get(f"taskrun/api/tasks/{task['id']}/logs")
    assert task["status"] == "completed", (task, logs)
    assert task["priority"] == 5
    assert "ARGV ['--n', '3', 'two words', \"it's\"]" in logs, logs
    assert "ENV 'hello = world'" in logs, logs
    assert f"CWD {lab_server.root / folder}" in logs or re.search(rf"CWD .*/{folder}\b", logs), logs
    assert "ALPHA 0.5" in logs, logs

    # the same file again: the dialog remembers every value it was given
    dialog = open_run_dialog(page, script)
    for field, value in values.items():
        selector = f'textarea[name="{field}"]' if field in ("parameters", "env") else f'input[name="{field}"]'
        assert dialog.locator(selector).input_value() == value, field
    page.screenshot(path=str(artifacts_dir / "chores-03-run-dialog-remembered.png"))
    dialog.locator("button", has_text="Cancel").click()
    dialog.wait_for(state="detached", timeout=10000)

    # a notebook: no arguments, the "parameters"-cell hint, and not the script's values
    dialog = open_run_dialog(page, nb_name)
    body = dialog.locator(".jp-TaskRun-submitDialog")
    assert body.get_attribute("data-kind") == "notebook"
    assert dialog.locator('input[name="args"]').count() == 0
    assert "cell tagged “parameters”" in body.inner_text()
    assert dialog.locator('textarea[name="env"]').input_value() == ""
    assert dialog.locator('input[name="cwd"]').input_value() == ""
    page.screenshot(path=str(artifacts_dir / "chores-04-run-dialog-notebook.png"))

    # invalid input says which field is wrong and reopens with the values kept
    dialog.locator('input[name="memory_limit"]').fill("lots")
    dialog.locator("button", has_text="Run").click()
    error = page.locator(DIALOG, has_text="Memory limit must be")
    error.wait_for(timeout=10000)
    error.locator("button").last.click()
    dialog = page.locator(DIALOG).filter(has=page.locator(".jp-TaskRun-submitDialog"))
    dialog.wait_for(timeout=10000)
    assert dialog.locator('input[name="memory_limit"]').input_value() == "lots"
    dialog.locator("button", has_text="Cancel").click()


# ------------------------------------------------------------- open executed notebook


def test_open_executed_notebook_once_without_kernel(lab_page: Any, api: Any, lab_server: Any, artifacts_dir: Path) -> None:
    page = lab_page
    uid = uuid.uuid4().hex[:6]
    folder = f"chores-nb-{uid}"
    (lab_server.root / folder).mkdir()
    write_notebook(lab_server.root / folder / "report.ipynb", ["x = 6 * 7", "print('answer', x)"])
    task = api.submit(path=f"{folder}/report.ipynb", name=f"report-{uid}")
    task = api.wait_status(task["id"], {"completed", "failed"}, timeout=90)
    assert task["status"] == "completed", task
    expected = f"{folder}/{executed_notebook_name(task['name'] or task['path'], task['id'])}"
    kernels_before = kernel_ids(api)

    open_panel(page)
    row(page, task["id"]).wait_for(state="visible", timeout=15000)
    row(page, task["id"]).click()
    page.locator(f"#jupyter-taskrun-task-{task['id']}").wait_for(state="visible")
    wait_enabled(page, task["id"], "open-notebook")
    with page.expect_response(lambda r: r.request.method == "POST" and url_path(r.url).endswith("/notebook")) as first:
        toolbar_button(page, task["id"], "open-notebook").click()
    assert first.value.status == 201, first.value.text()
    assert json.loads(first.value.request.post_data or "{}") == {"path": expected, "overwrite": False}
    notebook = page.locator(".jp-NotebookPanel:visible")
    notebook.locator(".jp-OutputArea-output", has_text="answer 42").first.wait_for(timeout=30000)
    assert (lab_server.root / expected).is_file()
    # no kernel was started for it (give a kernel start a moment to show)
    page.wait_for_timeout(2000)
    assert kernel_ids(api) == kernels_before, "opening the executed notebook started a kernel"
    assert expected not in session_paths(api), session_paths(api)
    assert "No Kernel" in notebook.locator(".jp-KernelName").first.inner_text()
    page.screenshot(path=str(artifacts_dir / "chores-05-executed-notebook-no-kernel.png"))

    # close it; a second click finds the saved copy (409) and just opens it again
    tab = page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", has_text=Path(expected).name)
    # opened unchanged, it closes without asking to save
    assert "jp-mod-dirty" not in (tab.get_attribute("class") or ""), tab.get_attribute("class")
    tab.locator(".lm-TabBar-tabCloseIcon").click()
    tab.wait_for(state="detached", timeout=10000)
    page.locator(f"#jupyter-taskrun-task-{task['id']}").wait_for(state="visible")
    with page.expect_response(lambda r: r.request.method == "POST" and url_path(r.url).endswith("/notebook")) as second:
        toolbar_button(page, task["id"], "open-notebook").click()
    assert second.value.status == 409, second.value.text()
    page.locator(".jp-NotebookPanel:visible .jp-OutputArea-output", has_text="answer 42").first.wait_for(timeout=30000)
    saved = sorted(p.name for p in (lab_server.root / folder).glob("*.executed.ipynb"))
    assert saved == [Path(expected).name], saved
    page.wait_for_timeout(1000)
    assert kernel_ids(api) == kernels_before, "the second open started a kernel"
    assert not [e for e in page.errors if "taskrun" in e.lower()], page.errors


# --------------------------------------------------------------------- clear finished


def _clear_dialog(page: Any) -> Any:
    page.locator(f"{PANEL} button.jp-mod-clearFinished").click()
    dialog = page.locator(DIALOG).filter(has=page.locator(".jp-TaskRun-clearDialog"))
    dialog.wait_for(timeout=10000)
    return dialog


def _is_clear_request(r: Any) -> bool:
    return r.method == "DELETE" and url_path(r.url).endswith("/taskrun/api/tasks")


def _query(url: str) -> dict[str, list[str]]:
    return urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)


def test_clear_finished_asks_then_deletes(lab_page: Any, api: Any, artifacts_dir: Path) -> None:
    """Needs the server route ``DELETE /taskrun/api/tasks?status=…&before=…`` (200 {"deleted", "ids"})."""
    page = lab_page
    open_panel(page)
    done = [api.submit(code="print('ok')", name=unique("clear-done")) for _ in range(2)]
    bad = api.submit(code="1/0", name=unique("clear-bad"))
    sleeper = api.submit(code="import time\ntime.sleep(90)", name=unique("clear-running"))
    try:
        for t in done:
            api.wait_status(t["id"], {"completed"}, timeout=60)
        api.wait_status(bad["id"], {"failed"}, timeout=60)
        api.wait_status(sleeper["id"], {"running"}, timeout=60)
        for t in (*done, bad, sleeper):
            row(page, t["id"]).wait_for(state="visible", timeout=15000)

        # it asks first: the statuses, and how old; cancelling deletes nothing
        dialog = _clear_dialog(page)
        labels = dialog.locator('select[name="status"] option').all_inner_texts()
        assert labels[:4] == ["All finished", "Completed", "Failed", "Cancelled"], labels
        assert dialog.locator('input[name="scope"][value="older"]').is_checked()
        assert dialog.locator('input[name="days"]').input_value() == "7"
        page.screenshot(path=str(artifacts_dir / "chores-06-clear-dialog.png"))
        dialog.locator("button", has_text="Cancel").click()
        dialog.wait_for(state="detached", timeout=10000)
        assert api.request("GET", f"taskrun/api/tasks/{done[0]['id']}")[0] == 200

        # a refusal shows the server's message
        def refuse(route: Any) -> None:
            if route.request.method == "DELETE":
                route.fulfill(status=500, content_type="application/json", body='{"message": "the disk is on fire"}')
            else:
                route.continue_()

        page.route(re.compile(r".*/taskrun/api/tasks\?.*"), refuse)
        dialog = _clear_dialog(page)
        dialog.locator("button", has_text="Delete").click()
        error = page.locator(DIALOG, has_text="the disk is on fire")
        error.wait_for(timeout=10000)
        page.screenshot(path=str(artifacts_dir / "chores-07-clear-refused.png"))
        error.locator("button").last.click()
        error.wait_for(state="detached", timeout=10000)
        page.unroute_all()
        assert api.request("GET", f"taskrun/api/tasks/{done[0]['id']}")[0] == 200

        # completed ones, of any age
        dialog = _clear_dialog(page)
        dialog.locator('select[name="status"]').select_option("completed")
        dialog.locator('input[name="scope"][value="all"]').check()
        with page.expect_response(lambda r: _is_clear_request(r.request)) as answer:
            dialog.locator("button", has_text="Delete").click()
        query = _query(answer.value.url)
        assert query.get("status") == ["completed"] and "before" not in query, answer.value.url
        assert answer.value.status == 200, f"{answer.value.status} {answer.value.text()}"
        body = answer.value.json()
        assert {t["id"] for t in done} <= set(body["ids"]) and body["deleted"] == len(body["ids"]), body
        assert bad["id"] not in body["ids"] and sleeper["id"] not in body["ids"], body
        for t in done:
            row(page, t["id"]).wait_for(state="detached", timeout=10000)
            assert api.request("GET", f"taskrun/api/tasks/{t['id']}")[0] == 404
        assert row(page, bad["id"]).is_visible() and row(page, sleeper["id"]).is_visible()
        page.locator(".jp-toast-message, .Toastify__toast", has_text="Deleted").first.wait_for(timeout=10000)

        # failed ones older than 0 days: `before` is now, in UTC
        dialog = _clear_dialog(page)
        dialog.locator('select[name="status"]').select_option("failed")
        dialog.locator('input[name="days"]').fill("0")
        with page.expect_response(lambda r: _is_clear_request(r.request)) as answer:
            dialog.locator("button", has_text="Delete").click()
        query = _query(answer.value.url)
        assert query.get("status") == ["failed"], answer.value.url
        before = datetime.fromisoformat(query["before"][0].replace("Z", "+00:00"))
        assert before.tzinfo is not None and abs(datetime.now(timezone.utc) - before) < timedelta(minutes=2), before
        assert answer.value.status == 200 and bad["id"] in answer.value.json()["ids"], answer.value.text()
        row(page, bad["id"]).wait_for(state="detached", timeout=10000)

        # "older than 30 days" on a fresh server: nothing that old, nothing deleted
        dialog = _clear_dialog(page)
        dialog.locator('input[name="days"]').fill("30")
        with page.expect_response(lambda r: _is_clear_request(r.request)) as answer:
            dialog.locator("button", has_text="Delete").click()
        assert _query(answer.value.url).get("status") == ["completed,failed,cancelled,timed_out"], answer.value.url
        assert answer.value.json()["deleted"] == 0, answer.value.text()
        assert row(page, sleeper["id"]).is_visible() and api.task(sleeper["id"])["status"] == "running"

        # deleted elsewhere (another window, the CLI): the list follows the change feed
        page.evaluate("window.__taskrunNoReload = true")
        later = api.submit(code="print('later')", name=unique("clear-later"))
        api.wait_status(later["id"], {"completed"}, timeout=60)
        row(page, later["id"]).wait_for(state="visible", timeout=15000)
        status, body = api.request("DELETE", "taskrun/api/tasks?status=completed")
        assert status == 200 and later["id"] in body["ids"], (status, body)
        row(page, later["id"]).wait_for(state="detached", timeout=10000)
        assert page.evaluate("window.__taskrunNoReload === true"), "the page was reloaded"
        page.screenshot(path=str(artifacts_dir / "chores-08-cleared.png"))
    finally:
        page.unroute_all()
        cancel_quietly(api, sleeper["id"])
