"""The Lab sidebar and detail view tell the truth: what they show is what the server reports, live.

Real ``jupyter lab`` + headless Chromium (fixtures in conftest.py). Issues 11 and 13, the Lab side:
clear_output, exit codes, live progress, the status bar with the sidebar closed, no leftover text,
reconnecting after a server restart, finding tasks. Screenshots go to tests/artifacts/truth-*.png.
The server-restart test runs last: it restarts the session's server in place.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
import urllib.error
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.browser.labui import PANEL, clear_field, open_panel, row, toolbar_button, unique, wait_until

pytestmark = pytest.mark.browser


def close_panel(page: Any) -> None:
    if page.locator(PANEL).is_visible():
        page.locator('.lm-TabBar-tab[data-id="filebrowser"]').click()
    page.wait_for_selector(PANEL, state="hidden", timeout=10000)


def open_detail(page: Any, task_id: str) -> Any:
    row(page, task_id).wait_for(state="visible", timeout=15000)
    row(page, task_id).click()
    detail = page.locator(f"#jupyter-taskrun-task-{task_id}")
    detail.wait_for(state="visible")
    return detail


def meta(detail: Any, field: str) -> str:
    return detail.locator(f'.jp-TaskRun-detailHeader dd[data-field="{field}"]').inner_text()


def cancel_quietly(api: Any, *ids: str) -> None:
    for task_id in ids:
        api.request("POST", f"taskrun/api/tasks/{task_id}/cancel", {})


# ------------------------------------------------------------------------------ 1. clear_output


def test_clear_output_animation_ends_with_one_output(lab_page: Any, api: Any, artifacts_dir: Path) -> None:
    page = lab_page
    open_panel(page)
    loop = (
        "import time\n"
        "from IPython.display import HTML, clear_output, display\n"
        "for i in range(200):\n"
        "    clear_output(wait=True)\n"
        "    display(HTML(f'<span class=\"taskrun-frame\">frame {i}</span>'))\n"
        "    print(f'printed {i}', flush=True)\n"
        "    time.sleep(0.02)\n"
    )
    keep = "from IPython.display import HTML, display\ndisplay(HTML('<b class=\"taskrun-keep\">kept</b>'))"
    task = api.submit(cells=[keep, loop], name=unique("clear-loop"))
    detail = open_detail(page, task["id"])
    api.wait_status(task["id"], {"completed", "failed"}, timeout=90)
    assert api.task(task["id"])["status"] == "completed"
    frames = detail.locator(".jp-TaskRun-outputs .taskrun-frame")
    page.wait_for_function(
        "(id) => [...document.querySelectorAll(`#jupyter-taskrun-task-${id} .jp-TaskRun-outputs .taskrun-frame`)]"
        ".some(e => e.textContent === 'frame 199')",
        arg=task["id"],
        timeout=30000,
    )
    page.wait_for_timeout(500)  # a late re-render would show here
    assert frames.count() == 1, [frames.nth(i).inner_text() for i in range(min(frames.count(), 5))]
    assert frames.first.inner_text() == "frame 199"
    # the clear is per cell: the other cell's output stays
    assert detail.locator(".jp-TaskRun-outputs .taskrun-keep").count() == 1
    assert detail.locator(".jp-TaskRun-outputs .jp-OutputArea-child").count() == 2
    # the server folds the same way
    assert len(api.get(f"taskrun/api/tasks/{task['id']}/outputs")["outputs"]) == 2
    # the log keeps everything
    page.wait_for_function(
        "(id) => (document.querySelector(`#jupyter-taskrun-task-${id} .jp-TaskRun-log`) || {}).textContent?.includes('printed 199')",
        arg=task["id"],
        timeout=30000,
    )
    printed = re.findall(r"printed (\d+)", detail.locator(".jp-TaskRun-log").inner_text())
    assert [int(p) for p in printed] == list(range(200))
    page.screenshot(path=str(artifacts_dir / "truth-01-clear-output.png"))


# ------------------------------------------------------------------------------ 2. exit_code


def test_exit_code_in_detail_header(lab_page: Any, api: Any, artifacts_dir: Path) -> None:
    page = lab_page
    open_panel(page)
    failed = api.submit(code="import sys\nsys.exit(3)", name=unique("exit-3"))
    plain = api.submit(code="print('no exit code')", name=unique("exit-none"))
    done = api.wait_status(failed["id"], {"failed", "completed"}, timeout=60)
    assert done["exit_code"] == 3, done
    assert api.wait_status(plain["id"], {"completed"}, timeout=60).get("exit_code") is None
    detail = open_detail(page, failed["id"])
    detail.locator('.jp-TaskRun-badge[data-status="failed"]').wait_for(timeout=15000)
    detail.locator('dd[data-field="Exit code"]').wait_for(timeout=15000)
    assert meta(detail, "Exit code") == "3"
    page.screenshot(path=str(artifacts_dir / "truth-02-exit-code.png"))
    other = open_detail(page, plain["id"])
    other.locator('.jp-TaskRun-badge[data-status="completed"]').wait_for(timeout=15000)
    assert other.locator('dd[data-field="Exit code"]').count() == 0


# ------------------------------------------------------------------------------ 3. live progress


def test_live_progress_reaches_sidebar_and_detail(lab_page: Any, api: Any, artifacts_dir: Path) -> None:
    page = lab_page
    open_panel(page)
    code = (
        "import time\nfrom jupyter_taskrun import progress\nfor i in range(120):\n    progress(i + 1, 120, 'epoch')\n    time.sleep(0.25)\n"
    )
    task = api.submit(code=code, name=unique("progress-live"))
    try:
        wait_until(lambda: (api.task(task["id"]).get("progress") or {}).get("value", 0) >= 8, 60, "progress on the server")
        r = row(page, task["id"])
        # the sidebar row: a determinate bar with the server's percentage, while running
        page.wait_for_function(
            """(id) => {
                const r = document.querySelector(`#jupyter-taskrun-panel .jp-TaskRun-row[data-task-id="${id}"]`);
                if (!r) return false;
                const p = r.querySelector('.jp-TaskRun-progress');
                const bar = r.querySelector('.jp-TaskRun-progressBar');
                return !p.classList.contains('jp-mod-indeterminate') && parseFloat(bar.style.width) > 5
                    && /\\d+%/.test(r.querySelector('.jp-TaskRun-progressLabel').textContent);
            }""",
            arg=task["id"],
            timeout=10000,
        )
        label = r.locator(".jp-TaskRun-progressLabel").inner_text()
        server = api.task(task["id"])
        assert server["status"] == "running"
        shown = int(re.search(r"(\d+)%", label).group(1))
        assert abs(shown - round(100 * server["progress"]["value"] / 120)) <= 5, (label, server["progress"])
        page.screenshot(path=str(artifacts_dir / "truth-03-progress-sidebar.png"))

        detail = open_detail(page, task["id"])
        page.wait_for_function(
            """(id) => {
                const d = document.querySelector(`#jupyter-taskrun-task-${id}`);
                const p = d && d.querySelector('.jp-TaskRun-detailProgress');
                return p && !p.classList.contains('jp-mod-indeterminate')
                    && /\\(\\d+\\/120\\)/.test(p.querySelector('.jp-TaskRun-progressLabel').textContent);
            }""",
            arg=task["id"],
            timeout=10000,
        )
        text = detail.locator(".jp-TaskRun-detailProgress .jp-TaskRun-progressLabel").inner_text()
        value = int(re.search(r"\((\d+)/120\)", text).group(1))
        now = api.task(task["id"])["progress"]["value"]
        assert now - 12 <= value <= now, (text, now)
        assert api.task(task["id"])["status"] == "running"
        # it keeps moving (live), not only at the end
        wait_until(
            lambda: (
                int(
                    re.search(r"\((\d+)/120\)", detail.locator(".jp-TaskRun-detailProgress .jp-TaskRun-progressLabel").inner_text()).group(
                        1
                    )
                )
                > value
            ),
            10,
            "the detail progress to move",
        )
        page.screenshot(path=str(artifacts_dir / "truth-04-progress-detail.png"))
    finally:
        cancel_quietly(api, task["id"])


# ------------------------------------------------------------------------------ 4. status bar


def test_status_bar_follows_feed_with_sidebar_closed(lab_page: Any, api: Any, artifacts_dir: Path) -> None:
    page = lab_page
    close_panel(page)
    item = page.locator(".jp-TaskRun-statusItem")
    item.wait_for(state="visible")
    page.wait_for_timeout(1500)  # settled: the feed is open
    task = api.submit(code="import time\ntime.sleep(8)", name=unique("statusbar"))
    try:
        api.wait_status(task["id"], {"running"}, timeout=60)
        t0 = time.monotonic()

        def matches() -> bool:
            s = api.get("taskrun/api/status")
            return item.inner_text().strip() == f"{s['running']} running · {s['queued']} queued" and s["running"] >= 1

        wait_until(matches, 3, "the status bar to show the running task within 3 s, sidebar closed")
        lag = time.monotonic() - t0
        page.screenshot(path=str(artifacts_dir / "truth-05-statusbar.png"))
        assert lag < 3, lag
        assert not page.locator(PANEL).is_visible()
    finally:
        cancel_quietly(api, task["id"])
    api.wait_status(task["id"], {"cancelled", "completed"}, timeout=30)
    wait_until(
        lambda: item.inner_text().strip() == "{running} running · {queued} queued".format(**api.get("taskrun/api/status")),
        3,
        "the status bar to drop the cancelled task",
    )


# ------------------------------------------------------------------------------ 5. leftover text


def test_no_leftover_text_in_detail(lab_page: Any, api: Any, artifacts_dir: Path) -> None:
    page = lab_page
    open_panel(page)
    task = api.submit(code="import time\nprint('started', flush=True)\ntime.sleep(120)", name=unique("leftover"))
    detail = open_detail(page, task["id"])
    page.wait_for_function(
        "(id) => (document.querySelector(`#jupyter-taskrun-task-${id} .jp-TaskRun-log`) || {}).textContent?.includes('started')",
        arg=task["id"],
        timeout=60000,
    )
    # while running: no "—" for the kernel start (the server measures it at the end)
    kernel = detail.locator(".jp-TaskRun-metricsTable dt", has_text="Kernel start").locator("xpath=following-sibling::dd[1]")
    wait_until(lambda: kernel.inner_text().strip() not in ("—", ""), 5, "a kernel start text while running")
    assert detail.locator(".jp-TaskRun-logState").inner_text().strip() == "live"
    assert detail.locator("button.jp-mod-pause").is_visible()
    page.screenshot(path=str(artifacts_dir / "truth-06-running.png"))

    page.locator(
        f'#jupyter-taskrun-detail-{task["id"]} .jp-Toolbar-item[data-jp-item-name="cancel"] jp-button[aria-disabled="false"]'
    ).wait_for(timeout=15000)
    toolbar_button(page, task["id"], "cancel").click()
    assert api.wait_status(task["id"], {"cancelled", "failed", "completed"}, timeout=30)["status"] == "cancelled"
    detail.locator('.jp-TaskRun-badge[data-status="cancelled"]').wait_for(timeout=15000)
    page.wait_for_function(
        "(id) => !document.querySelector(`#jupyter-taskrun-task-${id} .jp-TaskRun-logState`).textContent.trim()",
        arg=task["id"],
        timeout=15000,
    )
    page.wait_for_timeout(500)
    text = detail.inner_text()
    assert "Cancellation requested" not in text
    error = detail.locator(".jp-TaskRun-errorSection").inner_text()
    assert error.count("cancelled by user") == 1, error
    assert not detail.locator("button.jp-mod-pause").is_visible(), "Pause on a finished log"
    assert "live" not in detail.locator(".jp-TaskRun-logState").inner_text()
    assert detail.locator('.jp-TaskRun-logState[data-state="live"]').count() == 0
    assert kernel.inner_text().strip() not in ("starting…",)
    # a disabled button says why
    title = toolbar_button(page, task["id"], "cancel").get_attribute("title") or ""
    assert "finished" in title, title
    page.screenshot(path=str(artifacts_dir / "truth-07-cancelled.png"))


# ------------------------------------------------------------------------------ 7. finding tasks


def test_finding_tasks(lab_page: Any, api: Any, artifacts_dir: Path) -> None:
    page = lab_page
    panel = open_panel(page)
    uid = uuid.uuid4().hex[:6]
    loop = api.submit(code="print(1)", name=f"nightly-training-loop-{uid}", tags=[f"team-{uid}"])
    other = api.submit(code="print(2)", name=f"nightly-eval-{uid}", tags=[f"other-{uid}"])
    for t in (loop, other):
        api.wait_status(t["id"], {"completed"}, timeout=60)
        row(page, t["id"]).wait_for(state="visible", timeout=15000)

    def visible_ids() -> list[str]:
        return page.evaluate("() => [...document.querySelectorAll('#jupyter-taskrun-panel .jp-TaskRun-row')].map(r => r.dataset.taskId)")

    # a substring of the name, not a prefix
    panel.locator("input.jp-TaskRun-search").fill(f"loop-{uid}")
    wait_until(lambda: visible_ids() == [loop["id"]], 15, "search by substring")
    page.screenshot(path=str(artifacts_dir / "truth-08-search.png"))
    clear_field(panel.locator("input.jp-TaskRun-search"))
    wait_until(lambda: other["id"] in visible_ids(), 15, "search cleared")

    # the tag filter applies as you type (no Enter, no blur)
    tag = panel.locator("input.jp-TaskRun-tagFilter")
    for _ in range(3):  # keys go where the focus is: a notification shown meanwhile can take some
        tag.click()
        tag.press_sequentially(f"team-{uid[:3]}", delay=30)
        if tag.input_value() == f"team-{uid[:3]}":
            break
        clear_field(tag)
    wait_until(lambda: visible_ids() == [loop["id"]], 15, "tag filter as you type")
    clear_field(tag)
    tag.dispatch_event("input")
    wait_until(lambda: other["id"] in visible_ids(), 15, "tag filter cleared")

    # queued rows show their place; running tasks are pinned at the top
    sleepers = [api.submit(code="import time\ntime.sleep(60)", name=unique("slot")) for _ in range(2)]
    queued = [api.submit(code="print('q')", name=unique("waiting")) for _ in range(2)]
    try:
        for s in sleepers:
            api.wait_status(s["id"], {"running"}, timeout=60)

        def positions_match() -> bool:
            for q in queued:
                t = api.task(q["id"])
                if t["status"] != "queued" or not t.get("queue_position"):
                    return False
                if f"#{t['queue_position']} in queue" not in row(page, q["id"]).inner_text():
                    return False
            return True

        wait_until(positions_match, 10, "queue positions in the rows", every=0.3)
        ids = visible_ids()
        running_rows = [i for i, x in enumerate(ids) if api.task(x)["status"] == "running"]
        assert running_rows == list(range(len(running_rows))), (ids, running_rows)
        assert ids.index(sleepers[0]["id"]) < ids.index(queued[0]["id"])
        page.screenshot(path=str(artifacts_dir / "truth-09-queue-pinned.png"))

        # one tab per task, however often it is opened
        r = row(page, loop["id"])
        r.click()
        r.click()
        r.dblclick()
        page.wait_for_timeout(500)
        assert page.locator(f'.lm-TabBar-tab[data-id="jupyter-taskrun-detail-{loop["id"]}"]').count() == 1
        assert page.locator(f"#jupyter-taskrun-task-{loop['id']}").count() == 1
    finally:
        cancel_quietly(api, *(t["id"] for t in sleepers + queued))


# ------------------------------------------------------------------------------ 8. selection


def test_multi_select_context_menu_cancel_and_delete(lab_page: Any, api: Any, artifacts_dir: Path) -> None:
    page = lab_page
    open_panel(page)
    finished = [api.submit(code="print('x')", name=unique("sel-done")) for _ in range(2)]
    for t in finished:
        api.wait_status(t["id"], {"completed"}, timeout=60)
        row(page, t["id"]).wait_for(state="visible", timeout=15000)
    row(page, finished[0]["id"]).click()
    row(page, finished[1]["id"]).click(modifiers=["Control"])
    page.wait_for_selector(f'{PANEL} .jp-TaskRun-row.jp-mod-selected[data-task-id="{finished[1]["id"]}"]')
    assert page.locator(f"{PANEL} .jp-TaskRun-row.jp-mod-selected").count() == 2
    row(page, finished[0]["id"]).click(button="right")
    item = page.locator(".lm-Menu-item", has_text="Delete (2 tasks)")
    item.wait_for(timeout=5000)
    page.screenshot(path=str(artifacts_dir / "truth-12-context-menu.png"))
    item.click()
    page.locator(".jp-Dialog button", has_text="Delete").click()
    for t in finished:
        wait_until(lambda t=t: api.request("GET", f"taskrun/api/tasks/{t['id']}")[0] == 404, 10, "deleted")
        row(page, t["id"]).wait_for(state="detached", timeout=10000)

    running = [api.submit(code="import time\ntime.sleep(60)", name=unique("sel-run")) for _ in range(2)]
    try:
        for t in running:
            row(page, t["id"]).wait_for(state="visible", timeout=15000)
        row(page, running[0]["id"]).click()
        page.keyboard.press("Escape")
        row(page, running[1]["id"]).click(modifiers=["Control"])
        row(page, running[1]["id"]).click(button="right")
        page.locator(".lm-Menu-item", has_text="Cancel (2 tasks)").click()
        for t in running:
            assert api.wait_status(t["id"], {"cancelled", "completed", "failed"}, timeout=30)["status"] == "cancelled"
    finally:
        cancel_quietly(api, *(t["id"] for t in running))


# ------------------------------------------------------------------------------ 6. server restart


def _restart(lab_server: Any, down_for: float = 2.0) -> float:
    """Stop the session's server, wait, start it again with the same command; return when it answers."""
    proc = lab_server.proc
    cmd = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")[:-1]
    env = dict(kv.split(b"=", 1) for kv in Path(f"/proc/{proc.pid}/environ").read_bytes().split(b"\0") if b"=" in kv)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    time.sleep(down_for)
    return cmd, env  # type: ignore[return-value]


def test_reconnects_within_2s_after_server_restart(lab_page: Any, api: Any, lab_server: Any, artifacts_dir: Path) -> None:
    page = lab_page
    panel = open_panel(page)
    done = api.submit(code="print('before the restart')", name=unique("before-restart"))
    api.wait_status(done["id"], {"completed"}, timeout=60)
    open_detail(page, done["id"])
    page.locator(
        f'#jupyter-taskrun-detail-{done["id"]} .jp-Toolbar-item[data-jp-item-name="delete"] jp-button[aria-disabled="false"]'
    ).wait_for(timeout=15000)

    cmd, env = _restart(lab_server, down_for=0)
    page.wait_for_selector(f'{PANEL} .jp-TaskRun-live[data-mode="reconnecting"]', state="attached", timeout=15000)
    page.wait_for_timeout(3000)  # a few failed probes
    error = panel.locator(".jp-TaskRun-error").inner_text()
    assert "Failed to fetch" not in error and "reconnecting" in error.lower(), error
    # a button that cannot work says why
    delete = toolbar_button(page, done["id"], "delete")
    wait_until(lambda: "not answering" in (delete.get_attribute("title") or ""), 5, "the delete button to say why")
    assert delete.get_attribute("aria-disabled") == "true"
    page.screenshot(path=str(artifacts_dir / "truth-10-server-down.png"))

    log = open(lab_server.log_path, "ab")
    lab_server.proc = subprocess.Popen(
        [c.decode() for c in cmd],
        cwd=lab_server.root,
        env={k.decode(): v.decode() for k, v in env.items()},
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 90
    while True:
        assert time.monotonic() < deadline, "the restarted server did not answer"
        try:
            status, _ = api.request("GET", "taskrun/api/status", timeout=2)
            if status == 200:
                break
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.05)
    answered = time.monotonic()
    page.wait_for_selector(f'{PANEL} .jp-TaskRun-live[data-mode="stream"]', timeout=10000)
    lag = time.monotonic() - answered
    assert lag <= 2.5, f"the sidebar came back {lag:.1f} s after the server answered"
    assert panel.locator(".jp-TaskRun-error").is_hidden()
    wait_until(lambda: delete.get_attribute("aria-disabled") == "false", 5, "the delete button to work again")
    # and it is live again: a new task appears without a reload
    after = api.submit(code="print('after')", name=unique("after-restart"))
    row(page, after["id"]).wait_for(state="visible", timeout=5000)
    page.screenshot(path=str(artifacts_dir / "truth-11-reconnected.png"))
    print(f"reconnected {lag:.2f} s after the server answered")
