"""Schedules in JupyterLab, end to end in real headless Chromium against a real ``jupyter lab`` (issue 14).

The "Schedule…" dialog opens from the file browser's context menu (and a notebook's toolbar),
shows the server's reading of the cron as it is typed (the cron in words and the next run
times, from ``GET /taskrun/api/schedules/preview``) and, for a cron or time zone the server
refuses, its message under that field with Save disabled. A schedule made there
(``* * * * *``) fires at the next minute: the Schedules view of the sidebar shows the run
appear in its history and complete, live; the switch pauses it (the REST API says
``enabled: false`` and no next runs; the card says "Paused"); Delete asks, then deletes.
Server-side effects are checked through the REST API; screenshots go to
tests/artifacts/schedules-*.png.
"""

from __future__ import annotations

import contextlib
import json
import re
import urllib.parse
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.browser.labui import PANEL, open_panel, unique, wait_until

pytestmark = pytest.mark.browser

DIALOG = ".jp-Dialog"
#: a `* * * * *` schedule fires at the next minute boundary: at most 60 s, plus the run itself
#: (a kernel start on a loaded machine); generous, never tuned to this machine
FIRE_TIMEOUT = 150


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


def open_schedule_dialog(page: Any, file_name: str) -> Any:
    """Right-click a file at the server root → "Schedule…"; the dialog that opens."""
    if not page.locator("#filebrowser").is_visible():  # a click on the shown tab would close it
        page.locator('.lm-TabBar-tab[data-id="filebrowser"]').click()
    refresh = page.locator(".jp-FileBrowser [data-command='filebrowser:refresh']")
    if refresh.count():
        refresh.first.click()
    item = page.locator(f'.jp-DirListing-item[title*="{file_name}"]').first
    item.wait_for(timeout=15000)
    item.click(button="right")
    page.locator(".lm-Menu-item", has_text="Schedule…").first.click()
    page.locator(f"{DIALOG} .jp-TaskRun-scheduleDialog").wait_for(timeout=10000)
    return page.locator(DIALOG)


def field_error(dialog: Any, field: str) -> Any:
    return dialog.locator(f'.jp-TaskRun-formField[data-field="{field}"] .jp-TaskRun-fieldError')


def show_schedules(page: Any) -> Any:
    open_panel(page)
    page.locator(f'{PANEL} .jp-TaskRun-viewTab[data-view="schedules"]').click()
    view = page.locator("#jupyter-taskrun-schedules")
    view.wait_for(state="visible", timeout=10000)
    return view


def preview(api: Any, cron: str, tz: str) -> dict[str, Any]:
    query = urllib.parse.urlencode({"cron": cron, "timezone": tz})
    return api.get(f"taskrun/api/schedules/preview?{query}")


def schedules_named(api: Any, name: str) -> list[dict[str, Any]]:
    return [s for s in api.get("taskrun/api/schedules")["schedules"] if s["name"] == name]


@pytest.fixture
def delete_afterwards(api: Any) -> Iterator[list[str]]:
    """Schedule ids to delete at the end even when the test fails (a `* * * * *` one fires every minute)."""
    ids: list[str] = []
    yield ids
    for schedule_id in ids:
        with contextlib.suppress(Exception):
            api.request("DELETE", f"taskrun/api/schedules/{schedule_id}")


def test_dialog_previews_as_you_type_and_shows_field_errors(lab_page: Any, api: Any, lab_server: Any, artifacts_dir: Path) -> None:
    page = lab_page
    nb_name = f"{unique('preview')}.ipynb"
    write_notebook(lab_server.root / nb_name, ["print('never run')"])
    dialog = open_schedule_dialog(page, nb_name)
    browser_zone = page.evaluate("() => Intl.DateTimeFormat().resolvedOptions().timeZone")
    zone = dialog.locator('input[name="timezone"]')
    assert zone.input_value() == browser_zone  # the default: the browser's time zone
    assert dialog.locator('input[name="name"]').input_value() == nb_name[: -len(".ipynb")]
    save = dialog.locator("button.jp-mod-accept")

    # next runs and the words, as typed (debounced): what the server says for this cron
    cron = dialog.locator('input[name="cron"]')
    cron.fill("30 4 * * 1-5")
    expected = preview(api, "30 4 * * 1-5", browser_zone)
    runs = dialog.locator(".jp-TaskRun-schedPreviewRuns li")
    wait_until(lambda: runs.count() == len(expected["next_runs"]), 15, "the next runs in the preview")
    assert [runs.nth(i).get_attribute("data-time") for i in range(runs.count())] == expected["next_runs"]
    assert dialog.locator(".jp-TaskRun-schedPreviewDescription").inner_text() == expected["description"]
    assert save.is_enabled()
    page.screenshot(path=str(artifacts_dir / "schedules-03-dialog-preview.png"))

    # a cron the server refuses: its message under the cron field, Save disabled
    cron.fill("61 * * * *")
    error = field_error(dialog, "cron")
    error.wait_for(state="visible", timeout=15000)
    status, body = api.request("GET", "taskrun/api/schedules/preview?" + urllib.parse.urlencode({"cron": "61 * * * *"}))
    assert status == 400, body
    assert error.inner_text() == body["message"] and "cron" in body["message"]
    assert dialog.locator('input[name="cron"].jp-mod-error').count() == 1
    wait_until(lambda: not save.is_enabled(), 5, "Save disabled while the cron is refused")
    assert dialog.locator(".jp-TaskRun-schedPreviewRuns li").count() == 0
    page.screenshot(path=str(artifacts_dir / "schedules-04-dialog-cron-error.png"))

    # fixed: the error goes, Save comes back; then a time zone the server does not know
    cron.fill("@daily")
    error.wait_for(state="hidden", timeout=15000)
    wait_until(lambda: save.is_enabled(), 5, "Save enabled again")
    zone.fill("Mars/Olympus_Mons")
    zone_error = field_error(dialog, "timezone")
    zone_error.wait_for(state="visible", timeout=15000)
    assert "timezone" in zone_error.inner_text()
    wait_until(lambda: not save.is_enabled(), 5, "Save disabled while the time zone is refused")
    assert field_error(dialog, "cron").is_hidden()

    # parameters are checked as the Run-as-task dialog checks them
    zone.fill(browser_zone)
    zone_error.wait_for(state="hidden", timeout=15000)
    dialog.locator('textarea[name="parameters"]').fill("[1, 2]")
    field_error(dialog, "parameters").wait_for(state="visible", timeout=5000)
    wait_until(lambda: not save.is_enabled(), 5, "Save disabled while the parameters are not an object")
    dialog.locator("button.jp-mod-reject").click()
    page.locator(DIALOG).wait_for(state="detached", timeout=10000)
    assert schedules_named(api, nb_name[: -len(".ipynb")]) == []  # cancelled: nothing stored

    # the notebook toolbar has the same dialog
    page.goto(f"{lab_server.url}lab/tree/{nb_name}?reset&token={lab_server.token}")
    page.wait_for_selector("#jupyterlab-splash", state="detached", timeout=60000)
    button = page.locator('.jp-NotebookPanel-toolbar .jp-Toolbar-item[data-jp-item-name="taskrun-schedule"]')
    button.wait_for(timeout=30000)
    button.locator("jp-button, button").first.click()
    page.locator(f"{DIALOG} .jp-TaskRun-scheduleDialog").wait_for(timeout=10000)
    assert page.locator(f'{DIALOG} input[name="name"]').input_value() == nb_name[: -len(".ipynb")]
    assert nb_name in page.locator(f"{DIALOG} .jp-TaskRun-submitDescription").inner_text()
    page.locator(f"{DIALOG} button.jp-mod-reject").click()


def test_schedule_fires_live_then_pauses_and_deletes(
    lab_page: Any, api: Any, lab_server: Any, artifacts_dir: Path, delete_afterwards: list[str]
) -> None:
    page = lab_page
    nb_name = f"{unique('every-minute')}.ipynb"
    write_notebook(lab_server.root / nb_name, ["print('scheduled', 6 * 7)"])
    name = unique("minutely")
    dialog = open_schedule_dialog(page, nb_name)
    dialog.locator('input[name="name"]').fill(name)
    dialog.locator('input[name="cron"]').fill("* * * * *")
    dialog.locator('textarea[name="parameters"]').fill('{"alpha": 0.5}')
    dialog.locator(".jp-TaskRun-schedPreviewRuns li").first.wait_for(timeout=15000)
    dialog.locator("button.jp-mod-accept").click()
    page.locator(DIALOG).wait_for(state="detached", timeout=10000)

    found = wait_until(lambda: schedules_named(api, name), 15, "the schedule saved by the dialog")
    assert len(found) == 1
    schedule = found[0]
    delete_afterwards.append(schedule["id"])
    browser_zone = page.evaluate("() => Intl.DateTimeFormat().resolvedOptions().timeZone")
    assert schedule["cron"] == "* * * * *" and schedule["timezone"] == browser_zone, schedule
    assert schedule["task"]["path"] == nb_name and schedule["task"]["parameters"] == {"alpha": 0.5}, schedule
    assert schedule["enabled"] is True and schedule["overlap"] == "skip" and schedule["catch_up"] == "skip"
    assert len(schedule["next_runs"]) == 5

    # the Schedules view: name, the cron in words, the next run; its history, empty so far
    view = show_schedules(page)
    card = view.locator(f'.jp-TaskRun-schedule[data-schedule-id="{schedule["id"]}"]')
    card.wait_for(timeout=15000)
    assert card.locator(".jp-TaskRun-schedName").inner_text() == name
    assert card.locator(".jp-TaskRun-schedDescription").inner_text() == schedule["description"]
    assert card.locator('.jp-TaskRun-schedNext[data-state="scheduled"]').inner_text().startswith("Next:")
    assert card.locator(".jp-TaskRun-schedToggle input").is_checked()
    page.evaluate("window.__taskrunNoReload = true")
    card.locator(".jp-TaskRun-schedHistoryToggle").click()
    card.locator(".jp-TaskRun-schedHistoryNote", has_text="No runs yet").wait_for(timeout=15000)

    # it fires at the next minute: the run appears in the history and completes, live
    run = card.locator(".jp-TaskRun-schedRun").first
    run.wait_for(timeout=FIRE_TIMEOUT * 1000)
    task_id = run.get_attribute("data-task-id")
    assert task_id
    card.locator(f'.jp-TaskRun-schedRun[data-task-id="{task_id}"][data-status="completed"]').wait_for(timeout=FIRE_TIMEOUT * 1000)
    page.wait_for_selector(
        f'#jupyter-taskrun-schedules .jp-TaskRun-schedule[data-schedule-id="{schedule["id"]}"][data-last-status="completed"]',
        timeout=30000,
    )
    assert page.evaluate("window.__taskrunNoReload === true"), "the page was reloaded"
    task = api.task(task_id)
    assert task["status"] == "completed" and task["schedule_id"] == schedule["id"] and task["scheduled_for"], task
    history = api.get(f"taskrun/api/tasks?schedule={schedule['id']}")["tasks"]
    assert task_id in [t["id"] for t in history]
    assert "scheduled 42" in api.get(f"taskrun/api/tasks/{task_id}/logs")
    # the next run moved on past the firing
    next_run = datetime.fromisoformat(api.get(f"taskrun/api/schedules/{schedule['id']}")["next_runs"][0])
    assert next_run > datetime.fromisoformat(task["scheduled_for"])
    page.screenshot(path=str(artifacts_dir / "schedules-01-fired.png"))

    # a run opens the task's detail view
    card.locator(f'.jp-TaskRun-schedRun[data-task-id="{task_id}"]').click()
    page.locator(f"#jupyter-taskrun-task-{task_id}").wait_for(state="visible", timeout=15000)
    page.locator(f'#jupyter-taskrun-task-{task_id} .jp-TaskRun-badge[data-status="completed"]').wait_for(timeout=15000)

    # pause with the switch: the server says enabled false and no next runs; the card says Paused
    card.locator(".jp-TaskRun-schedToggle input").click()
    paused = wait_until(
        lambda: (s := api.get(f"taskrun/api/schedules/{schedule['id']}")) and not s["enabled"] and s,
        15,
        "the schedule paused",
    )
    assert paused["next_runs"] == [], paused
    next_label = card.locator('.jp-TaskRun-schedNext[data-state="paused"]')
    next_label.wait_for(timeout=15000)
    assert next_label.inner_text() == "Paused"
    assert card.get_attribute("data-enabled") == "false"
    assert not card.locator(".jp-TaskRun-schedToggle input").is_checked()
    page.screenshot(path=str(artifacts_dir / "schedules-02-paused.png"))

    # run now still runs a paused schedule; the run shows as such in the history
    card.locator("button.jp-mod-runNow").click()
    manual = card.locator(".jp-TaskRun-schedRun", has=page.locator(".jp-TaskRun-schedRunManual"))
    manual.first.wait_for(timeout=15000)
    manual_id = manual.first.get_attribute("data-task-id")
    assert manual_id and manual_id != task_id
    assert api.task(manual_id)["schedule_id"] == schedule["id"]
    api.wait_status(manual_id, {"completed", "failed"}, timeout=90)

    # delete asks first; the schedule goes, its tasks stay
    card.locator("button.jp-mod-delete").click()
    page.locator(f"{DIALOG} button", has_text="Delete").click()
    card.wait_for(state="detached", timeout=15000)
    status, _ = api.request("GET", f"taskrun/api/schedules/{schedule['id']}")
    assert status == 404
    assert api.task(task_id)["status"] == "completed"
    assert not [e for e in page.errors if "taskrun" in e.lower() and not re.search(r"Failed to load resource", e)], page.errors
