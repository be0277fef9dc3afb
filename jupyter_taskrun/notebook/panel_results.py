"""HTML of a task panel's results: a card per ``record()``ed value and the ``--out`` variables line.

Pure string functions over a ``TaskPanelModel`` (no ipywidgets, no I/O), like ``panel_view``:
every name and value from the task is HTML-escaped; colours are JupyterLab's ``--jp-*`` theme
variables (set as ``style``, since an SVG presentation attribute cannot use ``var()``), so the
cards follow Light, Dark and high-contrast themes. A series (a name recorded more than once with
numbers) gets a small inline SVG line chart of its points, in recording order; its ``title`` and
``aria-label`` say the first, last, lowest and highest values.
"""

from __future__ import annotations

import html
import json
import math
from typing import Any

from .panel_model import TaskPanelModel

__all__ = ["format_value", "results_html", "series_svg", "values_html"]

LINE_COLOR = "var(--jp-brand-color1, #1976d2)"
#: most characters of a value shown on its card (the full value is in ``GET …/values``)
MAX_VALUE_CHARS = 60


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def format_value(value: Any) -> str:
    """A recorded value as its card shows it: numbers to 4 significant digits, text as is, else compact JSON."""
    if isinstance(value, bool) or value is None:
        text = json.dumps(value)
    elif isinstance(value, int):
        text = str(value)
    elif isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"


def series_svg(points: list[tuple[Any, Any]], width: int = 160, height: int = 36) -> str:
    """The numeric points ``(step, value)`` as one polyline (x: step when every point has one, else the order)."""
    pts = [(s, float(v)) for s, v in points if _number(v)]
    if len(pts) < 2:
        return ""
    xs = [float(s) for s, _ in pts] if all(_number(s) for s, _ in pts) else [float(i) for i in range(len(pts))]
    ys = [v for _, v in pts]
    x0, x1, lo, hi = min(xs), max(xs), min(ys), max(ys)
    xspan, yspan, pad = max(x1 - x0, 1e-12), max(hi - lo, 1e-12), 3
    coords = " ".join(
        f"{pad + (x - x0) / xspan * (width - 2 * pad):.1f},{height - pad - ((y - lo) / yspan if hi > lo else 0.5) * (height - 2 * pad):.1f}"
        for x, y in zip(xs, ys)
    )
    title = f"{len(ys)} points: first {format_value(ys[0])}, last {format_value(ys[-1])}, min {format_value(lo)}, max {format_value(hi)}"
    return (
        f'<svg class="taskrun-series" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{html.escape(title)}" data-points="{len(ys)}" style="display:block;background:var(--jp-layout-color2,#eee);border-radius:3px">'
        f"<title>{html.escape(title)}</title>"
        f'<polyline fill="none" style="stroke:{LINE_COLOR}" stroke-width="1.5" points="{coords}"/></svg>'
    )


def values_html(model: TaskPanelModel) -> str:
    """One card per recorded name: its latest value (and step), with a chart when it is a series."""
    cards = []
    for name, value in model.values.items():
        points = list(model.series.get(name) or [])
        step = points[-1][0] if points and points[-1][1] == value else None
        step_text = f'<span class="taskrun-value-step">step {html.escape(format_value(step))}</span>' if step is not None else ""
        cards.append(
            f'<div class="taskrun-value-card" role="listitem" data-name="{html.escape(name)}">'
            f'<div class="taskrun-value-name">{html.escape(name)}</div>'
            f'<div class="taskrun-value-latest" title="{html.escape(json.dumps(value, ensure_ascii=False)[:2000])}">'
            f"{html.escape(format_value(value))}</div>{step_text}{series_svg(points)}</div>"
        )
    if not cards:
        return ""
    return '<div class="taskrun-values" role="list" aria-label="Recorded values">' + "".join(cards) + "</div>"


def results_html(model: TaskPanelModel, loaded: list[str] | None = None) -> str:
    """``results ready: model, scores`` once ``--out`` variables came back (or ``loaded …``), and
    each variable that did not, with why; "" while nothing is known or nothing was asked for."""
    ready, failed = model.results()
    parts = []
    if ready:
        names = html.escape(", ".join(ready))
        if loaded and set(ready) <= set(loaded):
            parts.append(f'<span class="taskrun-results-ready">results loaded into the notebook: <b>{names}</b></span>')
        else:
            parts.append(f'<span class="taskrun-results-ready">results ready: <b>{names}</b></span>')
    for name, why in failed.items():
        parts.append(f'<span class="taskrun-results-error"><b>{html.escape(name)}</b>: {html.escape(why)}</span>')
    return (
        '<span class="taskrun-results" style="font-size:12px;display:inline-flex;flex-wrap:wrap;gap:4px 12px">' + "".join(parts) + "</span>"
        if parts
        else ""
    )
