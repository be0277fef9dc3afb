"""The JupyterLab "Tasks" sidebar in real headless Chromium against a real ``jupyter lab``.

Every check that something happened on the server goes through the REST API;
every check of the UI waits for the DOM to change without reloading the page.
Screenshots land in tests/artifacts/ for humans.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.browser.labui import PANEL, PANEL_TAB, clear_field, open_panel, row, toolbar_button, unique, wait_enabled

pytestmark = pytest.mark.browser


def wait_row_status(page: Any, task_id: str, status: str, timeout: float = 60000) -> None:
    page.wait_for_selector(f'{PANEL} .jp-TaskRun-row[data-task-id="{task_id}"][data-status="{status}"]', timeout=timeout)


def open_detail(page: Any, task_id: str) -> Any:
    row(page, task_id).click()
    detail = page.locator(f"#jupyter-taskrun-task-{task_id}")
    detail.wait_for(state="visible")
    return detail


def run_from_palette(page: Any, command_id: str, query: str) -> None:
    """Run a command through the command palette (retrying while the palette re-renders)."""
    item = page.locator(f'.lm-CommandPalette-item[data-command="{command_id}"]').first
    for _ in range(5):
        try:
            search_palette(page, query)
            item.wait_for(timeout=5000)
            item.click(timeout=5000)
        except Exception:  # closed or re-rendered meanwhile: try again
            continue
        return
    raise AssertionError(f"could not run {command_id} from the command palette")


def search_palette(page: Any, query: str) -> None:
    """Open the modal command palette and type a query.

    Right after Lab loads, restoring the layout can move the focus, which closes
    the modal palette again; so open, then check it stayed open, a few times.
    """
    palette = page.locator(".lm-CommandPalette-input")
    for attempt in range(6):
        if not palette.is_visible():
            if attempt % 2 == 0:
                page.keyboard.press("Control+Shift+C")
            else:
                page.locator(".lm-MenuBar-itemLabel", has_text="View").click()
                page.locator(".lm-Menu-itemLabel", has_text="Command Palette").first.click()
        try:
            palette.wait_for(state="visible", timeout=3000)
            page.wait_for_timeout(300)
            palette.fill(query, timeout=2000)
            return
        except Exception:
            continue
    raise AssertionError("the command palette did not stay open")


def no_reload_marker(page: Any) -> None:
    page.evaluate("window.__taskrunNoReload = true")


def assert_not_reloaded(page: Any) -> None:
    assert page.evaluate("window.__taskrunNoReload === true"), "the page was reloaded"


def test_panel_appears(lab_page: Any, api: Any, artifacts_dir: Path) -> None:
    page = lab_page
    panel = open_panel(page)
    assert panel.locator(".jp-TaskRun-title").inner_text().strip().lower() == "tasks"
    counts = panel.locator(".jp-TaskRun-counts").inner_text()
    assert "running" in counts and "queued" in counts
    # filters and the status-bar item are there too
    assert panel.locator("select.jp-TaskRun-statusFilter").count() == 1
    assert panel.locator("input.jp-TaskRun-search").count() == 1
    status_item = page.locator(".jp-TaskRun-statusItem")
    status_item.wait_for(state="visible")
    assert re.search(r"\d+ running · \d+ queued", status_item.inner_text())
    # the commands are in the palette
    # under load the layout restore can still move the focus and close the palette after the query
    # is typed (CI saw it): open it again rather than fail
    item = page.locator('.lm-CommandPalette-item[data-command="taskrun:open-panel"]')
    commands = ("taskrun:run-notebook", "taskrun:run-cells", "taskrun:refresh")
    for attempt in range(3):
        search_palette(page, "task")
        try:
            item.wait_for(timeout=10000)
            # without an open notebook the notebook commands are there but disabled (Lab hides those)
            counts = {c: page.locator(f'.lm-CommandPalette-item[data-command="{c}"]').count() for c in commands}
            assert counts == dict.fromkeys(commands, 1), counts
            break
        except Exception:
            if attempt == 2:
                raise
            page.keyboard.press("Escape")
    page.keyboard.press("Escape")
    page.screenshot(path=str(artifacts_dir / "01-panel.png"))
    assert not [e for e in page.errors if "taskrun" in e.lower()], page.errors


def test_rest_task_appears_and_completes_live(lab_page: Any, api: Any, artifacts_dir: Path) -> None:
    page = lab_page
    open_panel(page)
    no_reload_marker(page)
    name = unique("rest-live")
    code = (
        "import time\n"
        "from jupyter_taskrun import progress\n"
        "for i in range(4):\n"
        "    progress(i + 1, 4, f'step {i + 1}')\n"
        "    print('step', i, flush=True)\n"
        "    time.sleep(0.7)\n"
    )
    task = api.submit(code=code, name=name, tags=["browser", "live"])
    # appears without a reload, then runs, then completes
    row(page, task["id"]).wait_for(state="visible", timeout=15000)
    assert name in row(page, task["id"]).inner_text()
    page.wait_for_selector(
        f'{PANEL} .jp-TaskRun-row[data-task-id="{task["id"]}"]:is([data-status="running"], [data-status="completed"])',
        timeout=30000,
    )
    if api.task(task["id"])["status"] == "running":
        page.screenshot(path=str(artifacts_dir / "02-task-running.png"))
    wait_row_status(page, task["id"], "completed", timeout=60000)
    assert api.task(task["id"])["status"] == "completed"
    assert_not_reloaded(page)
    text = row(page, task["id"]).inner_text()
    assert "#browser" in text
    page.screenshot(path=str(artifacts_dir / "02-task-completed.png"))


def test_filters_and_search(lab_page: Any, api: Any, artifacts_dir: Path) -> None:
    page = lab_page
    panel = open_panel(page)
    tag = unique("tag")
    ok = api.submit(code="print('fine')", name=unique("filter-ok"), tags=[tag])
    bad = api.submit(code="1/0", name=unique("filter-bad"), tags=[tag])
    api.wait_status(ok["id"], {"completed"})
    api.wait_status(bad["id"], {"failed"})
    wait_row_status(page, bad["id"], "failed")
    panel.locator("input.jp-TaskRun-tagFilter").fill(tag)
    panel.locator("input.jp-TaskRun-tagFilter").press("Enter")
    panel.locator("select.jp-TaskRun-statusFilter").select_option("failed")
    page.wait_for_function(
        """([okId, badId]) => {
            const rows = [...document.querySelectorAll('#jupyter-taskrun-panel .jp-TaskRun-row')].map(r => r.dataset.taskId);
            return rows.length === 1 && rows[0] === badId && !rows.includes(okId);
        }""",
        arg=[ok["id"], bad["id"]],
        timeout=15000,
    )
    page.screenshot(path=str(artifacts_dir / "03-filters.png"))
    panel.locator("select.jp-TaskRun-statusFilter").select_option("")
    panel.locator("input.jp-TaskRun-search").fill(ok["name"])
    page.wait_for_function(
        """(okId) => {
            const rows = [...document.querySelectorAll('#jupyter-taskrun-panel .jp-TaskRun-row')].map(r => r.dataset.taskId);
            return rows.length === 1 && rows[0] === okId;
        }""",
        arg=ok["id"],
        timeout=15000,
    )
    # the failed task's detail shows the error with its traceback
    clear_field(panel.locator("input.jp-TaskRun-search"))
    clear_field(panel.locator("input.jp-TaskRun-tagFilter"))
    panel.locator("input.jp-TaskRun-tagFilter").press("Enter")
    row(page, bad["id"]).wait_for(state="visible", timeout=15000)
    detail = open_detail(page, bad["id"])
    error = detail.locator(".jp-TaskRun-errorSection")
    error.wait_for(state="visible", timeout=15000)
    assert "ZeroDivisionError" in error.inner_text()
    page.wait_for_function(
        "() => (document.querySelector('.jp-TaskRun-traceback') || {}).textContent?.includes('ZeroDivisionError')",
        timeout=15000,
    )
    page.screenshot(path=str(artifacts_dir / "04-failed-detail.png"))


def test_logs_stream_in_detail_view(lab_page: Any, api: Any, artifacts_dir: Path) -> None:
    page = lab_page
    open_panel(page)
    name = unique("logs")
    code = (
        "import time, sys\n"
        "from IPython.display import HTML, display\n"
        "display(HTML('<b class=\"taskrun-rich\">rich output</b>'))\n"
        "x = 0\n"
        "for i in range(40):\n"
        "    print(f'tick {i}', flush=True)\n"
        "    if i == 3:\n"
        "        print('a warning', file=sys.stderr, flush=True)\n"
        "    for _ in range(200000):\n"
        "        x += 1\n"
        "    time.sleep(0.25)\n"
    )
    task = api.submit(code=code, name=name)
    row(page, task["id"]).wait_for(state="visible", timeout=15000)
    detail = open_detail(page, task["id"])
    log = detail.locator(".jp-TaskRun-log")
    # the first lines arrive while the task is still running
    page.wait_for_function(
        "(id) => (document.querySelector(`#jupyter-taskrun-task-${id} .jp-TaskRun-log`) || {}).textContent?.includes('tick 2')",
        arg=task["id"],
        timeout=30000,
    )
    assert api.task(task["id"])["status"] == "running", "the log should stream before the task ends"
    assert "tick 39" not in log.inner_text()
    detail.locator(".jp-TaskRun-stderr", has_text="a warning").wait_for(timeout=15000)
    detail.locator(".jp-TaskRun-outputs .taskrun-rich").wait_for(timeout=15000)
    page.screenshot(path=str(artifacts_dir / "05-logs-streaming.png"))

    # pause freezes the view; resume shows what arrived meanwhile
    detail.locator("button.jp-mod-pause").click()
    frozen = log.inner_text()
    time.sleep(1.2)
    assert log.inner_text() == frozen
    detail.locator("button.jp-mod-pause").click()

    api.wait_status(task["id"], {"completed"}, timeout=90)
    page.wait_for_function(
        "(id) => (document.querySelector(`#jupyter-taskrun-task-${id} .jp-TaskRun-log`) || {}).textContent?.includes('tick 39')",
        arg=task["id"],
        timeout=30000,
    )
    text = log.inner_text()
    # every line exactly once, in order
    ticks = [int(m) for m in re.findall(r"tick (\d+)", text)]
    assert ticks == list(range(40)), ticks
    detail.locator('.jp-TaskRun-badge[data-status="completed"]').wait_for(timeout=15000)
    # metrics with the CPU/memory chart
    # (a flat line has an empty box, so "attached", not "visible")
    detail.locator(".jp-TaskRun-chart.jp-mod-cpu svg polyline").wait_for(state="attached", timeout=15000)
    detail.locator(".jp-TaskRun-chart.jp-mod-memory svg polyline").wait_for(state="attached", timeout=15000)
    page.screenshot(path=str(artifacts_dir / "06-logs-completed.png"), full_page=True)

    # download the full log
    with page.expect_download() as dl:
        detail.locator("button.jp-mod-download").click()
    content = Path(dl.value.path()).read_text()
    assert "tick 0" in content and "tick 39" in content


def test_cancel_from_ui(lab_page: Any, api: Any, artifacts_dir: Path) -> None:
    page = lab_page
    open_panel(page)
    name = unique("cancel-me")
    task = api.submit(code="import time\nprint('started', flush=True)\ntime.sleep(120)\nprint('never')", name=name)
    row(page, task["id"]).wait_for(state="visible", timeout=15000)
    api.wait_status(task["id"], {"running"}, timeout=60)
    detail = open_detail(page, task["id"])
    page.wait_for_function(
        "(id) => (document.querySelector(`#jupyter-taskrun-task-${id} .jp-TaskRun-log`) || {}).textContent?.includes('started')",
        arg=task["id"],
        timeout=30000,
    )
    wait_enabled(page, task["id"], "cancel")
    page.screenshot(path=str(artifacts_dir / "07-before-cancel.png"))
    toolbar_button(page, task["id"], "cancel").click()
    final = api.wait_status(task["id"], {"cancelled", "failed", "completed", "timed_out"}, timeout=30)
    assert final["status"] == "cancelled", final
    wait_row_status(page, task["id"], "cancelled", timeout=15000)
    detail.locator('.jp-TaskRun-badge[data-status="cancelled"]').wait_for(timeout=15000)
    page.screenshot(path=str(artifacts_dir / "08-cancelled.png"))

    # a finished task can be deleted from the UI (confirm dialog)
    wait_enabled(page, task["id"], "delete")
    toolbar_button(page, task["id"], "delete").click()
    page.locator(".jp-Dialog button", has_text="Delete").click()
    deadline = time.monotonic() + 15
    while api.request("GET", f"taskrun/api/tasks/{task['id']}")[0] != 404:
        assert time.monotonic() < deadline, "the task was not deleted"
        time.sleep(0.2)
    row(page, task["id"]).wait_for(state="detached", timeout=15000)


def _write_notebook(path: Path, sources: list[str]) -> None:
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


def test_run_as_task_on_notebook_file(lab_page: Any, api: Any, lab_server: Any, artifacts_dir: Path) -> None:
    page = lab_page
    nb_name = f"{unique('analysis')}.ipynb"
    _write_notebook(lab_server.root / nb_name, ["x = 6 * 7", "print('answer', x)"])
    open_panel(page)
    # show the file browser and find the notebook
    page.locator('.lm-TabBar-tab[data-id="filebrowser"]').click()
    refresh = page.locator(".jp-FileBrowser [data-command='filebrowser:refresh']")
    if refresh.count():
        refresh.first.click()
    item = page.locator(f'.jp-DirListing-item[title*="{nb_name}"]').first
    item.wait_for(timeout=15000)
    item.click(button="right")
    menu_item = page.locator(".lm-Menu-item", has_text="Run as Task").first
    menu_item.wait_for(timeout=10000)
    page.screenshot(path=str(artifacts_dir / "09-context-menu.png"))
    menu_item.click()
    dialog = page.locator(".jp-Dialog")
    dialog.wait_for(timeout=10000)
    tag = unique("from-ui")
    dialog.locator('input[name="tags"]').fill(tag)
    dialog.locator('textarea[name="parameters"]').fill('{"alpha": 0.5}')
    page.screenshot(path=str(artifacts_dir / "10-run-dialog.png"))
    dialog.locator("button", has_text="Run").click()
    dialog.wait_for(state="detached", timeout=10000)

    deadline = time.monotonic() + 20
    tasks: list[dict[str, Any]] = []
    while not tasks:
        assert time.monotonic() < deadline, "no task was created by 'Run as Task'"
        tasks = api.get(f"taskrun/api/tasks?tag={tag}")["tasks"]
        time.sleep(0.2)
    assert len(tasks) == 1
    task = tasks[0]
    assert task["source_kind"] == "path" and task["path"] == nb_name, task
    done = api.wait_status(task["id"], {"completed", "failed"}, timeout=90)
    assert done["status"] == "completed", done
    page.locator('.lm-TabBar-tab[data-id="jupyter-taskrun-panel"]').click()
    wait_row_status(page, task["id"], "completed", timeout=30000)
    # a task started from this Lab notifies when it finishes
    page.locator(".jp-toast-message, .Toastify__toast", has_text="completed").first.wait_for(timeout=30000)
    page.screenshot(path=str(artifacts_dir / "11-run-file-done.png"))

    # open the executed notebook in Lab
    open_detail(page, task["id"])
    wait_enabled(page, task["id"], "open-notebook")
    toolbar_button(page, task["id"], "open-notebook").click()
    page.locator(".jp-NotebookPanel .jp-OutputArea-output", has_text="answer 42").first.wait_for(timeout=30000)
    saved = [p.name for p in lab_server.root.glob("*.executed.ipynb")]
    assert any(p.startswith(nb_name[: -len(".ipynb")]) for p in saved), saved
    page.screenshot(path=str(artifacts_dir / "12-executed-notebook.png"))


def test_run_notebook_command_on_open_notebook(lab_page: Any, api: Any, lab_server: Any, artifacts_dir: Path) -> None:
    page = lab_page
    nb_name = f"{unique('open')}.ipynb"
    _write_notebook(lab_server.root / nb_name, ["print('from the open notebook')"])
    page.goto(f"{lab_server.url}lab/tree/{nb_name}?reset&token={lab_server.token}")
    page.wait_for_selector("#jupyterlab-splash", state="detached", timeout=60000)
    page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for(timeout=30000)
    page.locator(".jp-NotebookPanel .jp-Cell").first.click()
    tag = unique("cmd")
    run_from_palette(page, "taskrun:run-notebook", "Run Notebook as Task")
    dialog = page.locator(".jp-Dialog")
    dialog.wait_for(timeout=10000)
    dialog.locator('input[name="tags"]').fill(tag)
    dialog.locator("button", has_text="Run").click()
    deadline = time.monotonic() + 20
    tasks: list[dict[str, Any]] = []
    while not tasks:
        assert time.monotonic() < deadline, "no task was created by 'Run Notebook as Task'"
        tasks = api.get(f"taskrun/api/tasks?tag={tag}")["tasks"]
        time.sleep(0.2)
    task = tasks[0]
    assert task["source_kind"] in ("path", "notebook"), task
    done = api.wait_status(task["id"], {"completed", "failed"}, timeout=90)
    assert done["status"] == "completed", done
    assert "from the open notebook" in api.get(f"taskrun/api/tasks/{task['id']}/logs")

    # the selected cells only, as one task
    page.locator(".jp-NotebookPanel .jp-Cell").first.click()
    cells_tag = unique("cells")
    run_from_palette(page, "taskrun:run-cells", "Run Selected Cells as Task")
    dialog = page.locator(".jp-Dialog")
    dialog.wait_for(timeout=10000)
    dialog.locator('input[name="tags"]').fill(cells_tag)
    dialog.locator("button", has_text="Run").click()
    deadline = time.monotonic() + 20
    tasks = []
    while not tasks:
        assert time.monotonic() < deadline, "no task was created by 'Run Selected Cells as Task'"
        tasks = api.get(f"taskrun/api/tasks?tag={cells_tag}")["tasks"]
        time.sleep(0.2)
    assert tasks[0]["source_kind"] == "cells", tasks[0]
    done = api.wait_status(tasks[0]["id"], {"completed", "failed"}, timeout=90)
    assert done["status"] == "completed", done
    page.screenshot(path=str(artifacts_dir / "14-notebook-commands.png"))


def test_polling_fallback_and_standby(browser: Any, lab_server: Any, api: Any, artifacts_dir: Path) -> None:
    """When the SSE routes fail (e.g. a proxy that breaks streaming), the list and the detail view poll."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30000)
    try:
        # every event stream answers 503: EventSource gives up at once
        page.route(
            re.compile(r".*/taskrun/api/(events|tasks/[0-9a-f]+/events)(\?.*)?$"),
            lambda route: route.fulfill(status=503, content_type="application/json", body='{"message": "no streams"}'),
        )
        page.goto(f"{lab_server.url}lab?reset&token={lab_server.token}")
        page.wait_for_selector("#jupyterlab-splash", state="detached", timeout=60000)
        page.wait_for_selector(PANEL_TAB)
        if not page.locator(PANEL).is_visible():
            page.locator(PANEL_TAB).click()
        page.wait_for_selector(f'{PANEL} .jp-TaskRun-live[data-mode="polling"]', timeout=15000)
        name = unique("polled")
        task = api.submit(code="import time\nfor i in range(6):\n    print('poll', i, flush=True)\n    time.sleep(0.5)", name=name)
        row(page, task["id"]).wait_for(state="visible", timeout=15000)
        detail = open_detail(page, task["id"])
        page.wait_for_selector(f'#jupyter-taskrun-task-{task["id"]} .jp-TaskRun-logState[data-state="polling"]', timeout=15000)
        wait_row_status(page, task["id"], "completed", timeout=60000)
        page.wait_for_function(
            "(id) => (document.querySelector(`#jupyter-taskrun-task-${id} .jp-TaskRun-log`) || {}).textContent?.includes('poll 5')",
            arg=task["id"],
            timeout=30000,
        )
        ticks = [int(m) for m in re.findall(r"poll (\d+)", detail.locator(".jp-TaskRun-log").inner_text())]
        assert ticks == list(range(6)), ticks
        page.screenshot(path=str(artifacts_dir / "13-polling-fallback.png"))

        # streams work again; hidden, the panel's model keeps following the server
        # (no standby: the status bar follows the change feed); showing the panel
        # retries the live stream at once
        page.unroute_all()
        page.locator('.lm-TabBar-tab[data-id="filebrowser"]').click()
        page.wait_for_selector(PANEL, state="hidden", timeout=15000)
        later = api.submit(code="print('while hidden')", name=unique("hidden"))
        api.wait_status(later["id"], {"completed"}, timeout=60)
        page.locator(PANEL_TAB).click()
        page.wait_for_selector(f'{PANEL} .jp-TaskRun-live[data-mode="stream"]', timeout=15000)
        wait_row_status(page, later["id"], "completed", timeout=15000)
    finally:
        context.close()
