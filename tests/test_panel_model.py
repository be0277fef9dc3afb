"""The panels' pure model (``notebook/panel_model.py``): event lists folded into state.

No kernel, no server, no widgets: these fold the events a real task sends (same shapes as
``stream_events`` yields) and check what a panel would show.
"""

from __future__ import annotations

import subprocess
import sys

from jupyter_taskrun.formatting import format_duration
from jupyter_taskrun.notebook.panel_model import (
    LogBuffer,
    TaskListModel,
    TaskPanelModel,
    parse_time,
)
from jupyter_taskrun.notebook.panel_view import (
    elapsed_html,
    progress_bar_state,
    progress_text_html,
    status_html,
)

TASK_ID = "0123456789abcdef" * 2


def fold(events, **task):
    model = TaskPanelModel({"id": TASK_ID, "status": "queued", "created_at": "2024-01-01T00:00:00Z", **task})
    for seq, (etype, data, *when) in enumerate(events, start=1):
        model.apply_event({"seq": seq, "type": etype, "data": data, "time": when[0] if when else "2024-01-01T00:00:01Z"})
    return model


def output(cell, html_text, display_id=None, update=False):
    data = {"cell_index": cell, "output": {"output_type": "display_data", "data": {"text/html": html_text}, "metadata": {}}}
    if display_id:
        data["display_id"] = display_id
    if update:
        data["update"] = True
    return ("output", data)


def shown(model):
    return [(o["cell_index"], o["data"].get("text/html") or o["data"].get("text/plain")) for o in model.outputs]


def test_the_model_and_view_import_no_widgets():
    code = "import sys, jupyter_taskrun.notebook.panel_model, jupyter_taskrun.notebook.panel_view; assert 'ipywidgets' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_stream_chunks_coalesce_into_lines_per_stream():
    model = fold(
        [
            ("log", {"stream": "stdout", "text": "hel"}),
            ("log", {"stream": "stderr", "text": "warn"}),
            ("log", {"stream": "stdout", "text": "lo\nwor"}),
            ("log", {"stream": "stderr", "text": "ing\n"}),
            ("log", {"stream": "stdout", "text": "ld\n"}),
        ]
    )
    assert model.log_buffer.text("stdout") == "hello\nworld"
    assert model.log_buffer.text("stderr") == "warning"
    assert [(s, t) for s, t, _ in model.log_buffer.lines] == [("stdout", "hello"), ("stderr", "warning"), ("stdout", "world")]
    # where polling would continue: bytes, not characters
    assert model.log_offsets == {"stdout": len(b"hello\nworld\n"), "stderr": len(b"warning\n")}


def test_carriage_returns_and_ansi_behave_like_a_terminal():
    log = LogBuffer()
    log.feed("stderr", "\r 10%|#   |\r 50%|##  |")
    log.feed("stderr", "\r\x1b[32m100%|####|\x1b[0m\n")
    assert log.text() == "100%|####|"


def test_polled_log_bytes_decode_across_chunks():
    model = fold([])
    encoded = "é\n".encode()
    model.add_log_bytes("stdout", encoded[:1])
    model.add_log_bytes("stdout", encoded[1:])
    assert model.log_buffer.text() == "é" and model.log_offsets["stdout"] == len(encoded)


def test_clear_output_wait_true_then_output():
    # the server emits clear(wait=True) just before the next output: only the new one stays
    model = fold([output(0, "<b>frame 1</b>"), ("clear", {"cell_index": 0}), output(0, "<b>frame 2</b>")])
    assert shown(model) == [(0, "<b>frame 2</b>")]


def test_clear_output_without_wait_empties_only_its_cell():
    model = fold(
        [
            output(0, "<u>kept</u>"),
            output(1, "<i>to clear</i>"),
            ("clear", {"cell_index": 1}),
            ("log", {"stream": "stdout", "text": "the log keeps this\n"}),
        ]
    )
    assert shown(model) == [(0, "<u>kept</u>")]
    assert "the log keeps this" in model.log_buffer.text()


def test_update_display_replaces_by_display_id_and_never_shows_alone():
    model = fold(
        [
            output(0, "<p>step 0</p>", display_id="d1"),
            output(0, "<p>other</p>", display_id="d2"),
            output(1, "<p>step 5</p>", display_id="d1", update=True),  # from another cell: still updates
            output(1, "<p>orphan</p>", display_id="nobody", update=True),
        ]
    )
    assert shown(model) == [(0, "<p>step 5</p>"), (0, "<p>other</p>")]
    # an update after its display was cleared does not bring it back
    model.apply_event({"seq": 10, "type": "clear", "data": {"cell_index": 0}})
    model.apply_event({"seq": 11, "type": "output", "data": output(0, "<p>late</p>", "d1", True)[1]})
    assert shown(model) == []


def test_errors_and_widget_stand_ins_are_not_outputs():
    widget = {
        "output_type": "display_data",
        "metadata": {},
        "data": {
            "text/plain": "HBox(children=(FloatProgress(value=0.0, max=20.0),))",
            "application/vnd.jupyter.widget-view+json": {"model_id": "x"},
        },
    }
    error = {"output_type": "error", "ename": "ValueError", "evalue": "x", "traceback": []}
    model = fold([("output", {"cell_index": 0, "output": widget}), ("output", {"cell_index": 0, "output": error})])
    assert model.outputs == []


def test_progress_and_eta():
    model = fold(
        [
            ("status", {"status": "running"}, "2024-01-01T00:00:00Z"),
            ("progress", {"value": 1, "total": 4, "message": "loading"}, "2024-01-01T00:00:00Z"),
            ("progress", {"value": 3, "total": 4, "message": "loading"}, "2024-01-01T00:00:10Z"),
        ]
    )
    assert model.progress == {"value": 3, "total": 4, "message": "loading"}
    # 2 steps in 10 s: the last one takes 5 s, 2 of which already passed
    assert model.eta(now=parse_time("2024-01-01T00:00:12Z")) == 3.0
    assert progress_bar_state(model) == {"max": 4.0, "value": 3.0, "bar_style": "info"}
    assert "3/4" in progress_text_html(model) and "loading" in progress_text_html(model)
    # a value that is not a number is ignored; a total-less count draws a full bar
    model.apply_event({"seq": 9, "type": "progress", "data": {"value": "x"}})
    assert model.progress["value"] == 3
    model.apply_event({"seq": 10, "type": "progress", "data": {"value": 7, "total": None}})
    assert progress_bar_state(model)["value"] == 1.0


def test_terminal_status_with_exit_code_is_final():
    model = fold(
        [
            ("status", {"status": "running"}, "2024-01-01T00:00:00Z"),
            ("cell", {"cell_index": 0, "phase": "start"}),
            (
                "status",
                {"status": "failed", "exit_code": 3, "reason": "SystemExit: 3", "error": {"ename": "SystemExit", "evalue": "3"}},
                "2024-01-01T00:01:05Z",
            ),
            ("status", {"status": "running"}),  # late, out of order: a terminal status stays
            ("end", {"status": "failed"}),
        ]
    )
    assert model.status == "failed" and model.done and model.exit_code == 3
    assert model.reason == "SystemExit: 3" and model.error["ename"] == "SystemExit"
    assert model.cell_index is None
    assert model.elapsed() == ("took", 65.0)
    assert format_duration(65.0) in elapsed_html(model)
    assert 'data-exit-code="3"' in status_html(model)
    # completed with exit code 0 shows it too; a bool is not an exit code
    assert fold([("status", {"status": "completed", "exit_code": 0})]).exit_code == 0
    assert fold([("status", {"status": "completed", "exit_code": True})]).exit_code is None


def test_replayed_events_are_ignored():
    model = fold([("log", {"stream": "stdout", "text": "once\n"})])
    assert model.apply_event({"seq": 1, "type": "log", "data": {"stream": "stdout", "text": "once\n"}}) is False
    assert model.log_buffer.text() == "once" and model.events_seen == 1


def test_metrics_samples_and_task_objects():
    model = fold([("metrics", {"t": 0.5, "cpu": 50.0, "rss": 1000, "peak_rss": 2000, "cpu_user": 0.1})])
    assert list(model.samples) == [{"t": 0.5, "cpu": 50.0, "rss": 1000}]
    assert model.metrics["cpu_now"] == 50.0 and model.metrics["peak_rss"] == 2000
    model.apply_task(
        {
            "id": TASK_ID,
            "status": "completed",
            "last_event_id": 1,
            "metrics": {"wall": 1.5, "kernel_start": None},
            "result": {"data": {"text/plain": "42"}},
        }
    )
    assert model.status == "completed" and model.metrics["wall"] == 1.5 and "kernel_start" not in model.metrics
    assert model.result == {"data": {"text/plain": "42"}}
    assert model.caught_up
    model.replace_samples([{"t": 1, "cpu": 5, "rss": 9}])
    assert model.metrics["rss_now"] == 9 and len(model.samples) == 1


def test_server_outputs_replace_ours():
    model = fold([output(0, "<b>a</b>")])
    version = model.outputs_version
    model.replace_outputs([{"output_type": "display_data", "data": {"text/html": "<b>b</b>"}, "metadata": {}, "cell_index": 2}])
    assert shown(model) == [(2, "<b>b</b>")] and model.outputs_version > version


def test_task_list_model_folds_the_change_feed():
    lst = TaskListModel(limit=2, tag="t")
    lst.load({"tasks": [{"id": "a", "status": "running", "tags": ["t"]}]}, {"running": 1})
    lst.apply_change({"type": "created", "task_id": "b", "data": {"id": "b", "status": "queued", "tags": ["t"]}})
    lst.apply_change({"type": "created", "task_id": "x", "data": {"id": "x", "status": "queued", "tags": []}})  # filtered
    assert lst.order == ["b", "a"] and lst.counts_stale
    lst.apply_change({"type": "progress", "task_id": "a", "data": {"progress": {"value": 1, "total": 2}}})
    assert lst.tasks["a"]["progress"] == {"value": 1, "total": 2}
    lst.apply_change({"type": "created", "task_id": "c", "data": {"id": "c", "status": "queued", "tags": ["t"]}})
    assert lst.order == ["c", "b"] and "a" not in lst.tasks  # at most ``limit``
    lst.apply_change({"type": "deleted", "task_id": "b", "data": {}})
    assert lst.order == ["c"]
    lst.merge_page({"tasks": [{"id": "d", "status": "completed", "tags": ["t"]}]})
    assert lst.order == ["d", "c"]
    lst.set_counts({"running": 0})
    assert not lst.counts_stale and lst.counts == {"running": 0}
