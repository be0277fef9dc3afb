"""The panel's results, pure parts (issue 15): ``value`` events folded into ``TaskPanelModel``, the
value cards and series chart (``panel_results``), the ``--out`` results line, and the widgets of a
``TaskPanel`` fed events by hand (no server: ``start=False``). The browser test
(``tests/browser/test_widget_panel_results.py``) shows the same in JupyterLab, with the button."""

from __future__ import annotations

import html
import re

from jupyter_taskrun.client import TaskRunClient
from jupyter_taskrun.notebook.panel import TaskPanel
from jupyter_taskrun.notebook.panel_model import TaskPanelModel
from jupyter_taskrun.notebook.panel_results import format_value, results_html, series_svg, values_html

TID = "ab" * 16


def value(seq: int, name: str, v, step=None) -> dict:
    return {"seq": seq, "type": "value", "data": {"name": name, "value": v, "step": step}}


def listing(*entries: tuple[str, str | None]) -> dict:
    return {"ready": True, "requested": [n for n, _ in entries], "variables": [{"name": n, "error": e} for n, e in entries]}


def test_value_events_fold_into_latest_and_series():
    model = TaskPanelModel({"id": TID, "status": "running"})
    for i in range(4):
        assert model.apply_event(value(i + 1, "loss", 1 / (i + 1), step=i * 10))
    assert not model.apply_event(value(2, "loss", 99.0, step=99))  # a replay: not counted twice
    model.apply_event(value(5, "accuracy", 0.93))
    assert model.values == {"loss": 0.25, "accuracy": 0.93}
    assert list(model.series["loss"]) == [(0, 1.0), (10, 0.5), (20, 1 / 3), (30, 0.25)]
    version = model.values_version
    model.apply_task({"id": TID, "status": "completed", "values": {"loss": 0.25, "accuracy": 0.93}})
    assert model.values_version == version  # the task object said nothing new
    model.replace_values({"values": {"f1": 0.5}, "series": {"f1": [{"value": 0.4, "step": 1}, {"value": 0.5, "step": 2}]}})
    assert model.values == {"f1": 0.5} and list(model.series["f1"]) == [(1, 0.4), (2, 0.5)]


def test_cards_escape_and_chart_only_series():
    model = TaskPanelModel({"id": TID, "status": "running"})
    for i in range(5):
        model.apply_event(value(i + 1, "loss", 1 / (i + 1), step=i))
    model.apply_event(value(6, "note", "<img src=x onerror=alert(1)>"))
    model.apply_event(value(7, "cfg", {"lr": 0.1, "layers": [1, 2]}))
    text = values_html(model)
    assert "<img" not in text and html.escape("<img src=x onerror=alert(1)>") in text
    cards = re.findall(r'<div class="taskrun-value-card" role="listitem" data-name="([^"]+)">', text)
    assert cards == ["loss", "note", "cfg"]
    assert text.count("<svg") == 1 and 'data-points="5"' in text and "step 4" in text
    assert format_value(0.2) == "0.2" and format_value(1 / 3) == "0.3333" and format_value(True) == "true"
    assert format_value({"lr": 0.1, "layers": [1, 2]}) == '{"lr":0.1,"layers":[1,2]}'
    assert format_value("x" * 500).endswith("…") and len(format_value("x" * 500)) == 60


def test_series_chart_geometry():
    points = [(s, 10.0 - s) for s in (0, 1, 2, 5)]
    svg = series_svg(points, width=100, height=20)
    coords = [tuple(map(float, p.split(","))) for p in re.search(r'\spoints="([^"]+)"', svg).group(1).split()]
    xs, ys = [x for x, _ in coords], [y for _, y in coords]
    assert xs[0] == 3.0 and xs[-1] == 97.0 and xs[2] < xs[3]  # by step: 0..5 spans the width
    assert ys == sorted(ys) and ys[0] == 3.0 and ys[-1] == 17.0  # falling values: lower each time
    assert "min 5, max 10" in svg
    assert series_svg([(None, 1), (None, "text")]) == ""  # one number: no chart
    flat = series_svg([(None, 2.0), (None, 2.0)], width=100, height=20)
    assert 'points="3.0,10.0 97.0,10.0"' in flat  # no steps: in order; a constant: mid-height


def test_results_line():
    model = TaskPanelModel({"id": TID, "status": "completed"})
    assert results_html(model) == "" and model.results() == ([], {})
    model.variables = listing(("@result", None))
    assert results_html(model) == ""  # %%taskrun always asks for @result: not a --out result
    model.variables = listing(("model", None), ("scores", None), ("gone", "'gone' is not defined when the task ends"), ("@result", None))
    assert model.results() == (["model", "scores"], {"gone": "'gone' is not defined when the task ends"})
    line = results_html(model)
    assert "results ready: <b>model, scores</b>" in line and "&#x27;gone&#x27; is not defined" in line
    assert "results loaded into the notebook: <b>model, scores</b>" in results_html(model, ["model", "scores"])


def test_panel_widgets_show_cards_and_the_load_button():
    client = TaskRunClient("http://127.0.0.1:9/", "unused")  # never called: start=False, events by hand
    panel = TaskPanel(client, TID, task={"id": TID, "status": "running", "name": "demo"}, start=False)
    assert panel.values_view.layout.display == "none" and panel.results_row.layout.display == "none"
    panel.apply_event(value(1, "loss", 0.5, step=0))
    panel.apply_event(value(2, "loss", 0.25, step=1))
    assert panel.values_view.layout.display == "flex" and "taskrun-series" in panel.values_view.value
    with panel.lock:
        panel.model.variables = listing(("model", None), ("@result", None))
    panel.apply_event({"seq": 3, "type": "status", "data": {"status": "completed"}})
    assert panel.results_row.layout.display == "flex" and panel.load_button.layout.display == ""
    assert "results ready: <b>model</b>" in panel.results_label.value
    assert panel.load_button.description == "Load into notebook"
    panel.note_loaded(["model"])
    assert "results loaded into the notebook" in panel.results_label.value and panel.load_button.description == "Load again"
    with panel.lock:
        panel.model.variables = listing(("model", "cannot pickle 'model' (builtins.generator): TypeError: no"))
        panel.render()
    assert panel.load_button.layout.display == "none" and "cannot pickle" in panel.results_label.value
    assert panel.load_results() is None and "no results to load" in panel.notice
    panel.close()
