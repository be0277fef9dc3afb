"""Workflows (issue 17) in real headless Chromium against a real ``jupyter lab``: a batch folded
into one sidebar row that expands, the detail view's dependency view with live statuses that open
the tasks they show, a retried task's attempt history, and a cancel that offers to cancel the
waiting dependents too (``?cascade=1``). Real kernels run every task; every server-side outcome is
checked through the REST API. Screenshots: tests/artifacts/workflows-*.png."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.browser.labui import PANEL, open_panel, row, toolbar_button, unique, wait_enabled, wait_until

pytestmark = pytest.mark.browser

TERMINAL = {"completed", "failed", "cancelled", "timed_out"}


def submit_batch(api: Any, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    status, body = api.request("POST", "taskrun/api/tasks/batch", {"tasks": tasks})
    assert status == 201, body
    return body["tasks"]


def group_row(page: Any, batch_id: str) -> Any:
    return page.locator(f'{PANEL} .jp-TaskRun-batchRow[data-batch-id="{batch_id}"]')


def detail(page: Any, task_id: str) -> Any:
    view = page.locator(f"#jupyter-taskrun-task-{task_id}")
    view.wait_for(state="visible")
    return view


def dep_row(page: Any, in_task: str, task_id: str) -> Any:
    return page.locator(f'#jupyter-taskrun-task-{in_task} .jp-TaskRun-depRow[data-task-id="{task_id}"]')


def section(page: Any, in_task: str, title: str) -> Any:
    return page.locator(f"#jupyter-taskrun-task-{in_task} .jp-TaskRun-depSection").filter(
        has=page.locator(".jp-TaskRun-depTitle", has_text=title)
    )


def wait_dep_status(page: Any, in_task: str, task_id: str, statuses: str, timeout: float = 60000) -> str:
    """Wait until the dependency view's row for ``task_id`` shows one of ``statuses`` (|-separated)."""
    sel = ", ".join(
        f'#jupyter-taskrun-task-{in_task} .jp-TaskRun-depRow[data-task-id="{task_id}"][data-status="{s}"]' for s in statuses.split("|")
    )
    page.wait_for_selector(sel, timeout=timeout)
    return dep_row(page, in_task, task_id).get_attribute("data-status")


def expand(page: Any, batch_id: str) -> None:
    group = group_row(page, batch_id)
    if group.get_attribute("aria-expanded") != "true":
        group.click()
    page.wait_for_selector(f'{PANEL} .jp-TaskRun-batchRow[data-batch-id="{batch_id}"][aria-expanded="true"]')


def test_batch_group_and_live_dependency_view(lab_page: Any, api: Any, artifacts_dir: Path) -> None:
    page = lab_page
    tag = unique("wf")
    a, b, c = submit_batch(
        api,
        [
            {"key": "prep", "name": f"{tag}-A", "code": "import time\ntime.sleep(5)\nprint('A done')"},
            {"key": "train", "name": f"{tag}-B", "depends_on": ["prep"], "code": "import time\ntime.sleep(2)\nprint('B done')"},
            {"key": "report", "name": f"{tag}-C", "depends_on": ["train"], "code": "print('C done')"},
        ],
    )
    batch_id = a["batch_id"]
    assert batch_id and b["batch_id"] == batch_id == c["batch_id"]
    assert b["status"] == "waiting" and c["status"] == "waiting"
    open_panel(page)

    # the batch is one row: its first key, its size, counts by status; its tasks are folded in
    group = group_row(page, batch_id)
    group.wait_for(state="visible")
    assert group.locator(".jp-TaskRun-name").inner_text() == "prep"
    assert "3" in group.locator(".jp-TaskRun-batchSize").inner_text()
    page.wait_for_selector(f'{PANEL} .jp-TaskRun-batchRow[data-batch-id="{batch_id}"] .jp-TaskRun-batchCount[data-status="waiting"]')
    waiting_chip = group.locator('.jp-TaskRun-batchCount[data-status="waiting"]').inner_text()
    assert waiting_chip.startswith("2"), waiting_chip
    assert row(page, a["id"]).count() == 0 and row(page, b["id"]).count() == 0
    # the waiting status has its own colour (not the queued one)
    colours = page.evaluate(
        """() => { const s = getComputedStyle(document.documentElement);
                   return [s.getPropertyValue('--jp-taskrun-waiting').trim(), s.getPropertyValue('--jp-taskrun-queued').trim()]; }"""
    )
    assert colours[0] and colours[0] != colours[1], colours
    page.locator(PANEL).screenshot(path=str(artifacts_dir / "workflows-batch-collapsed.png"))

    expand(page, batch_id)
    for task in (a, b, c):
        row(page, task["id"]).wait_for(state="visible")
        assert "jp-mod-inBatch" in (row(page, task["id"]).get_attribute("class") or "")
    page.locator(PANEL).screenshot(path=str(artifacts_dir / "workflows-batch-expanded.png"))
    group.click()  # collapses again
    page.wait_for_selector(f'{PANEL} .jp-TaskRun-batchRow[data-batch-id="{batch_id}"][aria-expanded="false"]')
    wait_until(lambda: row(page, b["id"]).count() == 0, 10, "the batch's rows folded away")
    expand(page, batch_id)

    # B's detail view: A (running) it depends on, C (waiting) that depends on it
    row(page, b["id"]).click()
    detail(page, b["id"])
    first_a = wait_dep_status(page, b["id"], a["id"], "queued|running")
    assert wait_dep_status(page, b["id"], c["id"], "waiting") == "waiting"
    assert section(page, b["id"], "Depends on").locator(f'[data-task-id="{a["id"]}"]').count() == 1
    assert section(page, b["id"], "Dependents").locator(f'[data-task-id="{c["id"]}"]').count() == 1
    assert "waited for" in dep_row(page, b["id"], a["id"]).inner_text()
    assert api.task(b["id"])["status"] == "waiting"
    page.screenshot(path=str(artifacts_dir / "workflows-dependency-view-waiting.png"))

    # live: the statuses move as the tasks run, with no reload
    page.evaluate("window.__taskrunNoReload = true")
    assert wait_dep_status(page, b["id"], a["id"], "completed", timeout=90000) == "completed"
    assert first_a != "completed"
    wait_dep_status(page, b["id"], c["id"], "queued|running|completed", timeout=90000)
    assert wait_dep_status(page, b["id"], c["id"], "completed", timeout=90000) == "completed"
    assert page.evaluate("window.__taskrunNoReload === true"), "the page was reloaded"
    done = {t["id"]: api.wait_status(t["id"], TERMINAL) for t in (a, b, c)}
    assert {t["status"] for t in done.values()} == {"completed"}
    # the group's counts followed
    page.wait_for_selector(f'{PANEL} .jp-TaskRun-batchRow[data-batch-id="{batch_id}"][data-status="completed"]')
    assert group.locator('.jp-TaskRun-batchCount[data-status="completed"]').inner_text().startswith("3")
    page.screenshot(path=str(artifacts_dir / "workflows-dependency-view-done.png"))

    # a click on a dependency opens its own detail view, which shows B as its dependent
    dep_row(page, b["id"], a["id"]).click()
    detail(page, a["id"])
    assert wait_dep_status(page, a["id"], b["id"], "completed") == "completed"
    assert section(page, a["id"], "Dependents").locator(f'[data-task-id="{b["id"]}"]').count() == 1
    page.wait_for_selector(f"#jupyter-taskrun-task-{a['id']} .jp-TaskRun-logSection:has-text('A done')", timeout=30000)


COUNTER = """\
import pathlib
p = pathlib.Path({path!r})
n = int(p.read_text()) if p.exists() else 0
p.write_text(str(n + 1))
print('try', n + 1)
if n < 2:
    raise RuntimeError(f'failing try {{n + 1}}')
print('success on try', n + 1)
"""


def test_retried_task_shows_its_attempt_history(lab_page: Any, api: Any, artifacts_dir: Path, tmp_path: Path) -> None:
    page = lab_page
    name = unique("flaky")
    open_panel(page)
    first = api.submit(name=name, code=COUNTER.format(path=str(tmp_path / "counter.txt")), retries=2)

    def last_try() -> dict[str, Any] | None:
        tries = api.get(f"taskrun/api/tasks/{first['id']}/attempts")["attempts"]
        last = tries[-1]
        return tries if last["status"] in TERMINAL and last["retried_as"] is None else None

    tries = wait_until(last_try, 120, "the retries to end", every=0.3)
    assert [t["status"] for t in tries] == ["failed", "failed", "completed"] and [t["retry"] for t in tries] == [0, 1, 2]
    assert (tmp_path / "counter.txt").read_text() == "3"
    last = tries[-1]

    # the sidebar shows the latest try only
    row(page, last["id"]).wait_for(state="visible", timeout=30000)
    page.wait_for_selector(f'{PANEL} .jp-TaskRun-row[data-task-id="{last["id"]}"][data-status="completed"]')
    wait_until(lambda: row(page, first["id"]).count() == 0 and row(page, tries[1]["id"]).count() == 0, 15, "superseded tries gone")
    names = page.locator(f"{PANEL} .jp-TaskRun-row .jp-TaskRun-name").all_inner_texts()
    assert names.count(name) == 1, names

    # one click: the latest try's detail view lists every try, with status and duration
    row(page, last["id"]).click()
    detail(page, last["id"])
    tries_box = section(page, last["id"], "Tries")
    tries_box.wait_for(state="visible")
    rows = tries_box.locator(".jp-TaskRun-depRow")
    wait_until(lambda: rows.count() == 3, 15, "three tries listed")
    assert [rows.nth(i).get_attribute("data-task-id") for i in range(3)] == [t["id"] for t in tries]
    assert [rows.nth(i).get_attribute("data-status") for i in range(3)] == ["failed", "failed", "completed"]
    for i in range(3):
        text = rows.nth(i).inner_text()
        assert f"Try {i + 1}" in text, text
        assert rows.nth(i).locator(".jp-TaskRun-depDuration").inner_text().strip(), text
    page.screenshot(path=str(artifacts_dir / "workflows-attempt-history.png"))

    # each try opens its own detail view with its own logs
    rows.nth(0).click()
    detail(page, first["id"])
    page.wait_for_selector(f"#jupyter-taskrun-task-{first['id']} .jp-TaskRun-logSection:has-text('try 1')", timeout=30000)
    log_text = page.locator(f"#jupyter-taskrun-task-{first['id']} .jp-TaskRun-logSection").inner_text()
    assert "try 2" not in log_text and "success" not in log_text, log_text
    assert "failing try 1" in page.locator(f"#jupyter-taskrun-task-{first['id']}").inner_text()  # its own error
    # opening a superseded try does not bring it back into the list
    time.sleep(1)
    assert (
        row(page, first["id"]).count() == 0 and page.locator(f"{PANEL} .jp-TaskRun-row .jp-TaskRun-name").all_inner_texts().count(name) == 1
    )
    page.screenshot(path=str(artifacts_dir / "workflows-first-try.png"))


def cascade_dialog(page: Any) -> Any:
    dialog = page.locator(".jp-Dialog")
    dialog.wait_for(state="visible", timeout=15000)
    return dialog


def test_cancel_offers_to_cancel_waiting_dependents(lab_page: Any, api: Any, artifacts_dir: Path) -> None:
    page = lab_page
    tag = unique("cx")
    a, b, c = submit_batch(
        api,
        [
            {"key": "a", "name": f"{tag}-A", "code": "import time\ntime.sleep(120)"},
            {"key": "b", "name": f"{tag}-B", "depends_on": ["a"], "code": "print('never')"},
            {"key": "c", "name": f"{tag}-C", "depends_on": ["b"], "code": "print('never either')"},
        ],
    )
    d, e = submit_batch(
        api,
        [
            {"key": "d", "name": f"{tag}-D", "code": "import time\ntime.sleep(120)"},
            {"key": "e", "name": f"{tag}-E", "depends_on": ["d"], "code": "print('never')"},
        ],
    )
    api.wait_status(a["id"], {"running"}, timeout=60)
    api.wait_status(d["id"], {"running"}, timeout=60)
    open_panel(page)

    # the detail view's Cancel: a dialog offers the two waiting dependents (B, and C through B)
    expand(page, a["batch_id"])
    row(page, a["id"]).click()
    detail(page, a["id"])
    wait_enabled(page, a["id"], "cancel")
    toolbar_button(page, a["id"], "cancel").click()
    dialog = cascade_dialog(page)
    assert "2 waiting tasks depend on" in dialog.inner_text()
    assert api.task(a["id"])["status"] == "running" and api.task(b["id"])["status"] == "waiting"  # nothing sent yet
    cascade = dialog.locator(".jp-Dialog-button", has_text="Cancel 2 waiting dependents too")
    assert cascade.count() == 1
    page.screenshot(path=str(artifacts_dir / "workflows-cancel-cascade-dialog.png"))
    cascade.click()
    ended = {t["id"]: api.wait_status(t["id"], TERMINAL, timeout=60) for t in (a, b, c)}
    assert all(t["status"] == "cancelled" for t in ended.values()), ended
    assert ended[b["id"]]["error"]["reason"] == f"cancelled with its dependency {a['id']}", ended[b["id"]]
    assert ended[c["id"]]["error"]["reason"] == f"cancelled with its dependency {a['id']}"
    page.wait_for_selector(f'{PANEL} .jp-TaskRun-batchRow[data-batch-id="{a["batch_id"]}"][data-status="cancelled"]')

    # a sidebar row's cancel button asks too; "Do not cancel" leaves the task running
    expand(page, d["batch_id"])
    row(page, d["id"]).hover()
    row(page, d["id"]).locator(".jp-TaskRun-rowCancel").click()
    dialog = cascade_dialog(page)
    assert "1 waiting task depends on" in dialog.inner_text()
    dialog.locator(".jp-Dialog-button", has_text="Do not cancel").click()
    dialog.wait_for(state="hidden")
    time.sleep(1)
    assert api.task(d["id"])["status"] == "running" and api.task(e["id"])["status"] == "waiting"
    # ... and "Cancel this task only" cancels D alone: E then ends cancelled because D did
    wait_until(lambda: not row(page, d["id"]).locator(".jp-TaskRun-rowCancel").is_disabled(), 10, "the row's cancel enabled again")
    row(page, d["id"]).hover()
    row(page, d["id"]).locator(".jp-TaskRun-rowCancel").click()
    cascade_dialog(page).locator(".jp-Dialog-button", has_text="Cancel this task only").click()
    assert api.wait_status(d["id"], TERMINAL, timeout=60)["status"] == "cancelled"
    done_e = api.wait_status(e["id"], TERMINAL, timeout=60)
    assert done_e["status"] == "cancelled" and "cancelled with its dependency" not in done_e["error"]["reason"]
    assert d["id"] in done_e["error"]["reason"] and "cancelled" in done_e["error"]["reason"], done_e

    # a task nothing waits for is cancelled with no question, as before
    lone = api.submit(name=f"{tag}-lone", code="import time\ntime.sleep(120)")
    api.wait_status(lone["id"], {"running"}, timeout=60)
    row(page, lone["id"]).wait_for(state="visible")
    row(page, lone["id"]).hover()
    row(page, lone["id"]).locator(".jp-TaskRun-rowCancel").click()
    assert api.wait_status(lone["id"], TERMINAL, timeout=60)["status"] == "cancelled"
    assert page.locator(".jp-Dialog").count() == 0
    errors = [e for e in page.errors if "favicon" not in e]
    assert not errors, errors
