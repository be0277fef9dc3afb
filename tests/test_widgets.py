"""TaskPanel / TaskListPanel against a real ``jupyter server`` subprocess (no mocks).

Events come from real tasks through the real REST/SSE API; the checks read the
widgets' own state (``get_state()``), i.e. exactly what a browser would receive.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from jupyter_taskrun.client import TaskRunClient
from jupyter_taskrun.formatting import format_bytes, format_duration
from jupyter_taskrun.notebook.panel import TaskListPanel, TaskPanel
from jupyter_taskrun.notebook.panel_model import LogBuffer, TaskPanelModel
from jupyter_taskrun.notebook.panel_view import log_html, metrics_html, sparkline_svg

from ._server import JupyterServer, TCPProxy

TERMINAL = {"completed", "failed", "cancelled", "timed_out"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # one task at a time, so a second task really waits in the queue
    with JupyterServer(tmp_path_factory.mktemp("widgets"), extra_args=("--TaskRun.max_concurrent_tasks=1",)) as s:
        yield s


@pytest.fixture
def client(server) -> TaskRunClient:
    return TaskRunClient(server.url, server.token)


def badge_status(panel: TaskPanel) -> str:
    m = re.search(r'data-status="([a-z_]+)"', panel.badge.get_state()["value"])
    assert m, panel.badge.get_state()["value"]
    return m.group(1)


def wait_until(cond, timeout: float = 60.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


DEMO = r"""
import sys, time
from jupyter_taskrun import progress
from tqdm import tqdm
from IPython.display import HTML, display
print("hello from the task")
print("a warning line", file=sys.stderr)
for i in range(4):
    progress(i + 1, 4, "loading")
    time.sleep(0.15)
for _ in tqdm(range(5), desc="crunching"):
    time.sleep(0.1)
display(HTML("<b>bold report</b>"))
{"answer": 42}
"""


def test_panel_follows_queued_running_completed(client):
    blocker = client.submit("import time; time.sleep(2.5)", name="blocker")
    task = client.submit(DEMO, name="demo-panel", tags=["widgets"])
    panel = TaskPanel(client, task["id"], start=False)
    try:
        # queued behind the blocker: badge, queue position, no progress yet, cancel possible
        assert badge_status(panel) == "queued"
        assert "in queue" in panel.queue_label.get_state()["value"]
        assert panel.progress_row.layout.display == "none"
        assert panel.cancel_button.get_state()["disabled"] is False
        assert "demo-panel" in panel.title_html.get_state()["value"]
        assert task["id"][:8] in panel.title_html.get_state()["value"]

        seen_statuses = [badge_status(panel)]
        progress_states = []
        running_snapshot = None
        events = []
        for ev in client.stream_events(task["id"]):
            events.append(ev)
            panel.apply_event(ev)
            status = badge_status(panel)
            if status != seen_statuses[-1]:
                seen_statuses.append(status)
            if ev["type"] == "progress":
                bar = panel.progress_bar.get_state()
                progress_states.append((bar["value"], bar["max"], panel.progress_label.get_state()["value"]))
            if status == "running" and running_snapshot is None and ev["type"] == "log":
                running_snapshot = {
                    "cancel_disabled": panel.cancel_button.get_state()["disabled"],
                    "notebook_disabled": panel.notebook_button.get_state()["disabled"],
                    "queue": panel.queue_label.get_state()["value"],
                }
        assert seen_statuses == ["queued", "running", "completed"]
        assert running_snapshot == {"cancel_disabled": False, "notebook_disabled": True, "queue": ""}

        # progress() and tqdm both became progress events, and the bar followed them
        kinds = [e["data"]["message"] for e in events if e["type"] == "progress"]
        assert "loading" in kinds and "crunching" in kinds
        assert (1.0, 4.0) in [(v, m) for v, m, _ in progress_states]
        assert any("loading" in label and "1/4" in label for _, _, label in progress_states)
        assert (5.0, 5.0) == progress_states[-1][:2]
        bar = panel.progress_bar.get_state()
        assert bar["value"] == bar["max"] == 5.0 and bar["bar_style"] == "success"
        assert "5/5" in panel.progress_label.get_state()["value"]

        # logs: stdout plain, stderr marked, tqdm's \r redraws collapsed to the last state
        log_html = panel.log_view.get_state()["value"]
        assert "hello from the task" in log_html
        assert re.search(r'class="taskrun-stderr"[^>]*>a warning line<', log_html)
        assert log_html.count("crunching:") == 1 and "5/5" in log_html
        assert panel.log_box.layout.display == "flex"

        # rich outputs arrive as sanitised HTML, one HTML widget each (the result too)
        outs = [w.get_state()["value"] for w in panel.outputs_view.children]
        assert outs == panel.outputs_html()
        assert any("<b>bold report</b>" in o for o in outs)
        assert any("{&#x27;answer&#x27;: 42}" in o or "{'answer': 42}" in o for o in outs), outs

        # metrics: wall, CPU, peak memory, kernel start (filled by the final refresh) + sparkline
        panel.refresh()
        metrics_html = panel.metrics_view.get_state()["value"]
        for key in ("wall", "CPU", "peak mem", "kernel start"):
            value = re.search(rf'data-metric="{key}">([^<]*)<', metrics_html).group(1)
            assert value and value != "—", (key, metrics_html)
        assert "<svg" in metrics_html and "polyline" in metrics_html
        peak = re.search(r'data-metric="peak mem">([^<]*)<', metrics_html).group(1)
        assert peak == format_bytes(panel.metrics["peak_rss"]) and peak.endswith("iB")  # the one convention: IEC units

        # finished: elapsed frozen at the wall time; cancel off; rerun and notebook on; no error view
        assert panel.elapsed_label.get_state()["value"]
        assert panel.cancel_button.get_state()["disabled"] is True
        assert panel.notebook_button.get_state()["disabled"] is False
        assert panel.rerun_button.get_state()["disabled"] is False
        assert panel.error_view.layout.display == "none"
        assert panel.result == {"data": {"text/plain": "{'answer': 42}"}, "cell_index": 0}
        assert panel.layout.border_left == "4px solid var(--jp-success-color1, #388e3c)"  # the theme's success colour
    finally:
        panel.close()
        client.wait(blocker["id"], timeout=60)


def test_panel_shows_failure_with_traceback(client):
    task = client.submit("print('before')\nraise ValueError('bad input 17')", name="fails")
    panel = TaskPanel(client, task["id"], start=False)
    try:
        for ev in client.stream_events(task["id"]):
            panel.apply_event(ev)
        assert badge_status(panel) == "failed"
        assert panel.error_view.layout.display == "flex"
        head = panel.error_html.get_state()["value"]
        assert "ValueError: bad input 17" in head
        tb = panel.traceback_view.get_state()["value"]
        assert "taskrun-traceback-text" in tb and "ValueError" in tb and "bad input 17" in tb
        assert "\x1b" not in tb  # ANSI colours became spans
        # the error is said once: one head line (not "ValueError: …" and again "cell 0 raised ValueError: …"),
        # and the traceback is not repeated among the rich outputs
        assert head.count("bad input 17") == 1, head
        assert not panel.outputs_view.children
        assert "before" in panel.log_view.get_state()["value"]
        assert panel.progress_bar.get_state()["bar_style"] in ("", "danger")
        assert panel.cancel_button.get_state()["disabled"] is True
    finally:
        panel.close()


def test_live_panel_cancel_button_and_ticking_elapsed(client):
    task = client.submit("import time\nprint('started', flush=True)\ntime.sleep(60)", name="to-cancel")
    panel = TaskPanel(client, task["id"])  # live: background stream
    try:
        wait_until(lambda: badge_status(panel) == "running" and "started" in panel.log_view.get_state()["value"], what="running")
        assert panel.mode == "stream"
        assert "live" in panel.mode_label.get_state()["value"]
        first = panel.elapsed_label.get_state()["value"]
        wait_until(lambda: panel.elapsed_label.get_state()["value"] != first, timeout=5, what="elapsed to tick")
        assert panel.cancel_button.get_state()["disabled"] is False
        panel.cancel_button.click()  # the real button callback
        assert panel.wait(30), "the panel never saw the task end"
        assert badge_status(panel) == "cancelled"
        assert client.get(task["id"])["status"] == "cancelled"
        assert panel.cancel_button.get_state()["disabled"] is True
        assert panel.error_view.layout.display == "flex"
        assert "Cancelled" in panel.error_html.get_state()["value"]
        assert panel.mode == "done"
        # the leftover "cancellation requested" goes once cancelled; "cancelled by user" is said once
        assert "cancellation requested" not in panel.link_view.get_state()["value"]
        assert panel.error_html.get_state()["value"].lower().count("cancelled") == 1, panel.error_html.get_state()["value"]
        # a finished log: no Follow toggle, no "● live"
        assert panel.follow_toggle.layout.display == "none"
        assert "live" not in panel.mode_label.get_state()["value"]
        # the stream was closed when the task ended: the background job is over
        wait_until(lambda: panel._future.done(), timeout=5, what="the follower to stop")
    finally:
        panel.close()


def test_live_panel_throttles_renders_and_caps_the_log(client):
    code = (
        "import sys\n"
        "for i in range(3000):\n"
        "    print(f'line {i:05d}')\n"
        "    if i % 500 == 0: print(f'err {i}', file=sys.stderr)\n"
        "    if i % 100 == 0:\n"
        "        from jupyter_taskrun import progress; progress(i + 100, 3000, 'printing')\n"
    )
    task = client.submit(code, name="chatty")
    panel = TaskPanel(client, task["id"], max_log_chars=2000)
    try:
        assert panel.wait(60)
        assert badge_status(panel) == "completed"
        # every event was folded in, but the widgets were written far less often (~10/s)
        assert panel.events_seen > 50
        assert panel.render_count < panel.events_seen / 3, (panel.render_count, panel.events_seen)
        # only the tail is kept in the browser, and it says so
        value = panel.log_view.get_state()["value"]
        assert "line 02999" in value and "line 00000" not in value
        assert panel.log_buffer.chars <= 2000 and panel.log_buffer.dropped > 0
        assert "not shown" in panel.log_header.get_state()["value"]
        assert "3000/3000" in panel.progress_label.get_state()["value"]
        full = client.logs(task["id"])
        assert full.count("\n") == 3000 + 6  # the server keeps everything
    finally:
        panel.close()


def test_live_panel_resumes_after_disconnects_without_losing_lines(server):
    proxy = TCPProxy(server.port)
    try:
        client = TaskRunClient(proxy.url, server.token)
        code = "import time\nfor i in range(60):\n    print(f'n={i}', flush=True)\n    time.sleep(0.05)\n"
        task = client.submit(code, name="flaky-network")
        panel = TaskPanel(client, task["id"])
        try:
            wait_until(lambda: "n=5" in panel.log_view.get_state()["value"], what="first lines")
            dropped = 0
            for _ in range(3):
                dropped += proxy.drop()
                time.sleep(0.4)
            assert panel.wait(60)
            assert dropped >= 1 and proxy.connections >= 2  # the stream really was cut and reopened
            lines = panel.log_buffer.text().splitlines()
            assert lines == [f"n={i}" for i in range(60)]  # no gap, no duplicate
            assert badge_status(panel) == "completed"
        finally:
            panel.close()
    finally:
        proxy.close()


def test_panel_falls_back_to_polling_when_streams_are_refused(tmp_path):
    # the server refuses every event stream (max 0 per user): the panel must poll instead
    with JupyterServer(tmp_path, extra_args=("--TaskRun.max_streams_per_user=0",)) as s:
        client = TaskRunClient(s.url, s.token)
        code = (
            "import sys, time\nfrom jupyter_taskrun import progress\n"
            "for i in range(3):\n    print('tick', i)\n    progress(i + 1, 3, 'slow')\n    time.sleep(0.4)\n"
            "print('oops', file=sys.stderr)\n'done'"
        )
        task = client.submit(code, name="polled")
        panel = TaskPanel(client, task["id"], poll_interval=0.5)
        try:
            wait_until(lambda: panel.mode in ("poll", "done"), what="polling mode")
            assert "event stream unavailable" in panel.mode_detail
            assert panel.wait(60)
            assert badge_status(panel) == "completed"
            text = panel.log_view.get_state()["value"]
            assert "tick 0" in text and "tick 2" in text
            assert re.search(r'class="taskrun-stderr"[^>]*>oops<', text)
            assert "3/3" in panel.progress_label.get_state()["value"]
            assert any("done" in o for o in panel.outputs_html())
            assert "peak mem" in panel.metrics_view.get_state()["value"]
        finally:
            panel.close()


def test_polling_continues_where_the_stream_stopped(client):
    # a panel that got part of the log from events and then has to poll must not repeat lines
    code = "import sys, time\nfor i in range(30):\n    print(f'row {i} é', flush=True)\n    if i % 10 == 0: print(f'warn {i}', file=sys.stderr, flush=True)\n    time.sleep(0.05)\n"
    task = client.submit(code, name="half-streamed")
    panel = TaskPanel(client, task["id"], start=False, transport="poll", poll_interval=0.3)
    try:
        got = 0
        for ev in client.stream_events(task["id"]):
            panel.apply_event(ev)
            if ev["type"] == "log" and "row 12" in ev["data"]["text"]:
                got += 1
                break
        assert got, "the task never printed row 12"
        panel.start()
        assert panel.wait(60)
        assert panel.log_buffer.text("stdout").splitlines() == [f"row {i} é" for i in range(30)]
        assert panel.log_buffer.text("stderr").splitlines() == ["warn 0", "warn 10", "warn 20"]
        assert badge_status(panel) == "completed"
    finally:
        panel.close()


def test_rerun_and_open_executed_notebook(client, server):
    task = client.submit("print('first run')\n6 * 7", name="rerun me")
    client.wait(task["id"], timeout=60)
    panel = TaskPanel(client, task["id"])
    try:
        assert panel.wait(30)
        panel.notebook_button.click()
        assert panel.saved_path and panel.saved_path.endswith(".executed.ipynb"), panel.link_view.get_state()["value"]
        saved = Path(server.root) / panel.saved_path
        nb = json.loads(saved.read_text())
        assert any("first run" in "".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", []))
        link = panel.link_view.get_state()["value"]
        assert f'href="{server.url}lab/tree/{panel.saved_path}"' in link

        panel.rerun_button.click()
        assert len(panel.reruns) == 1
        child = panel.reruns[0]
        assert child in panel.rerun_box.children
        assert child.task["rerun_of"] == task["id"]
        assert child.wait(60)
        assert badge_status(child) == "completed"
        assert "first run" in child.log_view.get_state()["value"]
    finally:
        panel.close()


def test_task_list_panel_live_statuses(client):
    lst = TaskListPanel(client, limit=10)
    try:
        wait_until(lambda: lst.mode == "stream", what="stream mode")
        time.sleep(0.5)  # let the change feed connect
        task = client.submit("import time; time.sleep(0.5); 'x'", name="listed-task")
        wait_until(lambda: task["id"] in lst.tasks, what="the created task to appear")
        wait_until(lambda: lst.tasks[task["id"]].get("status") == "completed", what="completed in the list")
        table = wait_until(
            lambda: (v := lst.table.get_state()["value"]) and f'data-task-id="{task["id"]}" data-status="completed"' in v and v,
            what="the table row",
        )
        assert "listed-task" in table
        assert "running" in lst.header.get_state()["value"] and "queued" in lst.header.get_state()["value"]
        assert lst.order[0] == task["id"]  # newest first
        # open a task's panel from the list
        lst.picker.value = task["id"]
        lst.open_button.click()
        panel = lst.detail.children[0]
        assert isinstance(panel, TaskPanel) and panel.task_id == task["id"]
        assert panel.wait(30) and badge_status(panel) == "completed"
        # a deletion from the feed removes the row
        client.delete(task["id"])
        wait_until(lambda: task["id"] not in lst.tasks, what="the deleted task to go")
    finally:
        lst.close()


def test_task_list_panel_apply_change_from_real_feed(client):
    lst = TaskListPanel(client, limit=5, start=False)
    try:
        changes = client.stream_changes(after=None, timeout=60)
        task = client.submit("1 + 1", name="feed-fed")
        for change in changes:
            lst.apply_change(change)
            if change["task_id"] == task["id"] and change["type"] == "status" and change["data"]["status"] in TERMINAL:
                break
        changes.close()
        assert lst.tasks[task["id"]]["status"] == "completed"
        assert f'data-task-id="{task["id"]}" data-status="completed"' in lst.table.get_state()["value"]
        assert len(lst.order) <= 5
    finally:
        lst.close()


# -- pure helpers (no server) -------------------------------------------------


def test_log_buffer_terminal_semantics_and_cap():
    log = LogBuffer(max_chars=100)
    log.feed("stdout", "a\nb")
    log.feed("stderr", "\r 10%|#   |\r 50%|##  |")
    log.feed("stdout", "c\n")
    log.feed("stderr", "\r100%|####|\n")
    assert log.text() == "a\nbc\n100%|####|"
    assert log.text("stdout") == "a\nbc"
    assert log.text("stderr") == "100%|####|"
    log.feed("stdout", "\x1b[31mred\x1b[0m\n")
    assert "red" in log.text() and "\x1b" not in log.text()
    for i in range(50):
        log.feed("stdout", f"line {i}\n")
    assert log.chars <= 100 and log.dropped > 0 and log.text().endswith("line 49")
    assert "<script>" not in log_html(LogBuffer())
    esc = LogBuffer()
    esc.feed("stdout", "<script>alert(1)</script>\n")
    assert "&lt;script&gt;" in log_html(esc)


def test_panel_metrics_follow_the_formatting_convention():
    model = TaskPanelModel(
        {
            "id": "ab" * 16,
            "status": "completed",
            "started_at": "2024-01-01T00:00:00Z",
            "finished_at": "2024-01-01T00:02:05Z",
            "metrics": {"wall": 125.2, "cpu_user": 3.0, "cpu_system": 0.21, "peak_rss": 12897485, "kernel_start": 0.25},
        }
    )
    shown = dict(re.findall(r'data-metric="([^"]+)">([^<]*)<', metrics_html(model)))
    assert shown == {
        "wall": format_duration(125.2),
        "CPU": format_duration(3.21),
        "peak mem": format_bytes(12897485),
        "kernel start": format_duration(0.25),
    }
    assert sparkline_svg([]) == ""
    svg = sparkline_svg([{"t": 0, "cpu": 10, "rss": 1000}, {"t": 1, "cpu": 90, "rss": 2000}])
    assert svg.startswith("<svg") and svg.count("<polyline") == 2


# -- issue 11: clear_output, exit_code -------------------------------------------

_PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAABgAAAAYCAIAAABvFaqvAAAAH0lEQVR4nGM4ISdHFcQwatCoQaMGjRo0atCoQQNvEADGtUkfvb3KfwAAAABJRU5ErkJggg=="


def test_clear_output_leaves_one_figure_and_the_whole_log(client):
    redraw = (
        "import base64\nfrom IPython.display import Image, clear_output, display\n"
        f"png = base64.b64decode('{_PNG_B64}')\n"
        "for i in range(200):\n"
        "    clear_output(wait=True)\n"
        "    print(f'frame {i}')\n"
        "    display(Image(data=png, format='png'))\n"
    )
    cleared_at_once = (
        "print('gone soon')\nfrom IPython.display import HTML, clear_output, display\ndisplay(HTML('<i>to clear</i>'))\nclear_output()\n"
    )
    kept = "from IPython.display import HTML, display\ndisplay(HTML('<u>other cell</u>'))\n"
    task = client.submit(cells=[kept, redraw, cleared_at_once], name="redraw")
    panel = TaskPanel(client, task["id"], start=False)
    try:
        types = []
        for ev in client.stream_events(task["id"]):
            types.append(ev["type"])
            panel.apply_event(ev)
        assert badge_status(panel) == "completed"
        assert types.count("clear") >= 200  # the server said when each clear happened
        shown = [w.get_state()["value"] for w in panel.outputs_view.children]
        # one figure (the last), the other cell's output untouched, the cleared cell empty
        assert sum(v.count("<img") for v in shown) == 1, shown
        assert len(shown) == 2, shown  # <u>other cell</u> and the figure ("frame 199" is in the log only)
        assert any("<u>other cell</u>" in v for v in shown)
        assert not any("to clear" in v for v in shown)
        # the log is terminal-like history: it keeps every line
        text = panel.log_buffer.text()
        assert all(f"frame {i}" in text for i in (0, 100, 199)) and "gone soon" in text
        # the same as the server's folded outputs (what polling shows)
        polled = TaskPanel(client, task["id"], start=False)
        try:
            polled.model.replace_outputs(client.outputs(task["id"]))
            polled.render()
            assert sum(v.count("<img") for v in polled.outputs_html()) == 1
        finally:
            polled.close()
    finally:
        panel.close()


def test_exit_code_shown_in_the_header(client, server):
    (Path(server.root) / "exits3.py").write_text("import sys\nprint('bye')\nsys.exit(3)\n")
    (Path(server.root) / "exits0.py").write_text("import sys\nsys.exit(0)\n")
    seen = {}
    for script in ("exits3.py", "exits0.py"):
        task = client.submit(path=script, name=script)
        panel = TaskPanel(client, task["id"])
        try:
            assert panel.wait(60)
            badge = panel.badge.get_state()["value"]
            m = re.search(r'data-exit-code="(-?\d+)"', badge)
            seen[script] = (badge_status(panel), m and int(m.group(1)), "exit code" in badge)
        finally:
            panel.close()
    assert seen == {"exits3.py": ("failed", 3, True), "exits0.py": ("completed", 0, True)}
    # null exit code (a code task): nothing shown
    task = client.submit("1 + 1", name="no-exit-code")
    panel = TaskPanel(client, task["id"])
    try:
        assert panel.wait(60)
        assert panel.task.get("exit_code") is None
        assert "exit code" not in panel.badge.get_state()["value"]
    finally:
        panel.close()


# -- issue 13 ----------------------------------------------------------------------


def test_progress_bars_are_not_outputs_nor_errors_and_no_stale_kernel_start(client):
    code = (
        "import sys, time\nfrom tqdm.auto import tqdm as auto_tqdm\nfrom tqdm import tqdm\n"
        "for _ in auto_tqdm(range(20)):\n    time.sleep(0.01)\n"
        "for _ in tqdm(range(5), desc='std-bar'):\n    time.sleep(0.01)\n"
        "print('real problem', file=sys.stderr, flush=True)\n"
        "time.sleep(1.5)\n"
    )
    task = client.submit(code, name="bars")
    panel = TaskPanel(client, task["id"], start=False)
    try:
        running_metrics = None
        for ev in client.stream_events(task["id"]):
            panel.apply_event(ev)
            if ev["type"] == "log" and "real problem" in ev["data"]["text"]:
                running_metrics = panel.metrics_view.get_state()["value"]
        assert running_metrics is not None
        assert "kernel start" not in running_metrics  # no "kernel start —" while running
        # tqdm.auto's widget stand-in ("0%| 0/20" frozen) is not an output
        assert not any("0/20" in v for v in panel.outputs_html()), panel.outputs_html()
        # tqdm's stderr is a progress line, not an error; a real stderr line still is marked
        log_html = panel.log_view.get_state()["value"]
        bar = re.search(r'<span class="([^"]*)"[^>]*>std-bar[^<]*</span>', log_html)
        assert bar and bar.group(1) == "taskrun-progress-line", log_html
        assert "color:var(--jp-error-color1" not in bar.group(0)
        assert re.search(r'class="taskrun-stderr"[^>]*>real problem<', log_html)
        panel.refresh()
        assert "kernel start" in panel.metrics_view.get_state()["value"]  # known once finished
    finally:
        panel.close()


def test_rerun_after_a_server_restart_works_or_says_why(tmp_path):
    first = JupyterServer(tmp_path).start()
    port, token = first.port, first.token
    try:
        client = TaskRunClient(first.url, first.token)
        task = client.submit("print('run')", name="before-restart")
        client.wait(task["id"], timeout=60)
        panel = TaskPanel(client, task["id"])
        assert panel.wait(30)
    finally:
        first.stop()
    try:
        # the server is gone: the button says why instead of failing silently
        panel.rerun_button.click()
        notice = panel.link_view.get_state()["value"]
        assert "rerun failed" in notice and "cannot be reached" in notice and task["id"][:8] in notice, notice
        assert not panel.reruns
        # back on the same address (same database): Rerun works again
        second = JupyterServer(tmp_path)
        second.port, second.token, second.url = port, token, first.url
        second.start()
        try:
            panel.rerun_button.click()
            assert len(panel.reruns) == 1, panel.link_view.get_state()["value"]
            assert panel.reruns[0].wait(60) and badge_status(panel.reruns[0]) == "completed"
            assert "rerun as task" in panel.link_view.get_state()["value"]
        finally:
            second.stop()
    finally:
        panel.close()


def test_task_failed_error_does_not_repeat_the_traceback_under_a_panel():
    from jupyter_taskrun.notebook.handle import TaskFailedError

    task = {
        "id": "ab" * 16,
        "name": "t",
        "status": "failed",
        "error": {"ename": "ValueError", "evalue": "x", "traceback": ["TB LINE 1", "ValueError: x"]},
    }
    assert "TB LINE 1" in "\n".join(TaskFailedError(task)._render_traceback_())
    under_panel = "\n".join(TaskFailedError(task, show_remote_traceback=False)._render_traceback_())
    assert "TB LINE 1" not in under_panel and "panel" in under_panel
