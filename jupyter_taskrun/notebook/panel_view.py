"""HTML of the task panels, computed from their models (``panel_model``): pure string functions.

Every piece of text that came from a task or the server (names, tags, messages, log lines,
reasons, paths) is HTML-escaped here; rich outputs and tracebacks go through the sanitiser
(``panel_render``), never a trusted renderer. Durations and byte sizes follow the one
convention of ``jupyter_taskrun.formatting``. No ipywidgets, no I/O: ``TaskPanel`` and
``TaskListPanel`` put these strings into ``widgets.HTML`` values.

Colours are JupyterLab's theme variables (``--jp-*``, with the Light theme's value as fallback
for front-ends without them), never fixed: the panels read well in Light, Dark and high
contrast. ``PANEL_STYLE`` (a ``<style>`` the panels carry once) themes their classes: text and
background, the stderr and error tints, a visible keyboard focus. Scrolling boxes (log,
traceback) are focusable and named, so they scroll from the keyboard.
"""

from __future__ import annotations

import html
import json
import re
import time
import urllib.parse
from typing import Any

from ..formatting import EMPTY, format_bytes, format_duration
from .panel_model import TERMINAL, LogBuffer, TaskListModel, TaskPanelModel, parse_time
from .panel_render import ansi_to_html

__all__ = ["PANEL_STYLE", "STATUS_COLORS", "badge_html", "fmt_number", "log_html", "sparkline_svg"]

#: each status's accent (the panel's left border, list progress bars, the error head), a CSS value
STATUS_COLORS = {
    "queued": "var(--jp-layout-color4, #757575)",
    "running": "var(--jp-brand-color1, #1976d2)",
    "completed": "var(--jp-success-color1, #388e3c)",
    "failed": "var(--jp-error-color1, #d32f2f)",
    "cancelled": "var(--jp-warn-color1, #f57c00)",
    "timed_out": "var(--jp-error-color0, #b71c1c)",
}
#: badge backgrounds: each theme's strongest shade, under its inverse text colour (>= 3.8:1 in Light and Dark)
BADGE_COLORS = {
    "queued": "var(--jp-layout-color4, #757575)",
    "running": "var(--jp-brand-color0, #0d47a1)",
    "completed": "var(--jp-success-color0, #1b5e20)",
    "failed": "var(--jp-error-color0, #b71c1c)",
    "cancelled": "var(--jp-warn-color0, #e65100)",
    "timed_out": "var(--jp-error-color0, #b71c1c)",
}
CPU_COLOR = "var(--jp-brand-color1, #1976d2)"
MEMORY_COLOR = "var(--jp-warn-color1, #f57c00)"
BAR_STYLES = {"completed": "success", "failed": "danger", "timed_out": "danger", "cancelled": "warning"}
MONO = "var(--jp-code-font-family, SFMono-Regular, Menlo, Consolas, monospace)"
#: a progress bar drawn on stderr (tqdm & co): not an error, so not drawn like one
_PROGRESS_LINE = re.compile(r"\d{1,3}%\|[^\n]*\||\d+(?:\.\d+)?[kMGTP]?(?:it|B)?\s*\[\d+:\d\d(?::\d\d)?(?:<|,)")
_LINK_STYLE = "color:var(--jp-content-link-color,#0d47a1)"

#: the panels' stylesheet (their classes only); a tint is the theme's colour mixed into transparency
PANEL_STYLE = """<style>
.taskrun-panel, .taskrun-list-panel {
  color: var(--jp-ui-font-color1, rgba(0, 0, 0, 0.87));
  background: var(--jp-layout-color1, #fff);
}
.taskrun-panel :focus-visible, .taskrun-list-panel :focus-visible {
  outline: 2px solid var(--jp-brand-color1, #1976d2);
  outline-offset: 1px;
}
.taskrun-logbox, .taskrun-traceback-text {
  background: var(--jp-layout-color2, #eee);
  color: var(--jp-content-font-color1, rgba(0, 0, 0, 0.87));
  border: 1px solid var(--jp-border-color2, #e0e0e0);
  border-radius: 4px;
}
.taskrun-stderr {
  color: var(--jp-error-color1, #d32f2f);
  background: rgba(211, 47, 47, 0.08);
  background: color-mix(in srgb, var(--jp-error-color1, #d32f2f) 10%, transparent);
}
.taskrun-error-head {
  padding: 2px 8px;
  background: rgba(211, 47, 47, 0.06);
  background: color-mix(in srgb, var(--jp-error-color1, #d32f2f) 8%, transparent);
}
.taskrun-tag { border: 1px solid var(--jp-border-color1, #bdbdbd); border-radius: 8px; padding: 0 5px; }
.taskrun-table td { padding: 2px 8px; border-top: 1px solid var(--jp-border-color2, #e0e0e0); }
.taskrun-values { display: flex; flex-wrap: wrap; gap: 6px; align-items: flex-start; }
.taskrun-value-card {
  border: 1px solid var(--jp-border-color2, #e0e0e0);
  border-radius: 4px;
  padding: 3px 8px;
  min-width: 7em;
  background: var(--jp-layout-color1, #fff);
}
.taskrun-value-name { font-size: 11px; color: var(--jp-ui-font-color2, rgba(0, 0, 0, 0.54)); }
.taskrun-value-latest { font-size: 15px; font-weight: 600; font-family: var(--jp-code-font-family, monospace); }
.taskrun-value-step { font-size: 10px; color: var(--jp-ui-font-color2, rgba(0, 0, 0, 0.54)); }
.taskrun-results-ready { color: var(--jp-ui-font-color1, rgba(0, 0, 0, 0.87)); }
.taskrun-results-error { color: var(--jp-error-color1, #d32f2f); }
</style>"""


def fmt_number(x: Any) -> str:
    """A progress count: integers without ``.0``, other floats to 3 significant digits."""
    if isinstance(x, float) and x.is_integer():
        x = int(x)
    if isinstance(x, float):
        return f"{x:.3g}"
    return str(x)


def badge_html(status: str) -> str:
    color = BADGE_COLORS.get(status, BADGE_COLORS["queued"])
    return (
        f'<span class="taskrun-status" data-status="{html.escape(status)}" style="background:{color};'
        "color:var(--jp-ui-inverse-font-color0,#fff);"
        "border-radius:10px;padding:1px 9px;font-size:12px;font-weight:600;letter-spacing:.02em;"
        f'white-space:nowrap">{html.escape(status.replace("_", " "))}</span>'
    )


def sparkline_svg(samples: list[dict[str, Any]], width: int = 180, height: int = 34) -> str:
    """CPU % (blue, 0..max(100, peak)) and memory (orange, min..max) over time as one small inline SVG."""
    if not samples:
        return ""
    ts = [float(s.get("t") or 0.0) for s in samples]
    t0, t1 = ts[0], ts[-1]
    span = max(t1 - t0, 1e-9)
    cpus = [float(s.get("cpu") or 0) for s in samples]
    rsss = [float(s.get("rss") or 0) for s in samples]
    cpu_lo, cpu_hi = 0.0, max(100.0, max(cpus))
    # memory: its own range, so growth is visible even on top of a large baseline
    rss_span = max(max(rsss) - min(rsss), max(rsss) * 0.05, 1.0)
    rss_lo, rss_hi = min(rsss) - 0.15 * rss_span, max(rsss) + 0.15 * rss_span
    pad = 2

    def line(values: list[float], lo: float, hi: float) -> str:
        pts = []
        for t, v in zip(ts, values):
            x = pad + (t - t0) / span * (width - 2 * pad) if len(values) > 1 else width - pad
            y = height - pad - (v - lo) / (hi - lo) * (height - 2 * pad)
            pts.append(f"{x:.1f},{y:.1f}")
        if len(pts) == 1:
            pts.insert(0, f"{pad},{pts[0].split(',')[1]}")
        return " ".join(pts)

    title = f"CPU now {cpus[-1]:.0f}% (peak {max(cpus):.0f}%), memory now {format_bytes(rsss[-1])} (peak {format_bytes(max(rsss))})"
    return (
        f'<svg class="taskrun-sparkline" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{html.escape(title)}" style="vertical-align:middle;background:var(--jp-layout-color2,#eee);border-radius:3px">'
        f"<title>{html.escape(title)}</title>"
        # colours as style, not attributes: a presentation attribute cannot use var()
        f'<polyline fill="none" style="stroke:{MEMORY_COLOR}" stroke-width="1.5" points="{line(rsss, rss_lo, rss_hi)}"/>'
        f'<polyline fill="none" style="stroke:{CPU_COLOR}" stroke-width="1.5" points="{line(cpus, cpu_lo, cpu_hi)}"/>'
        "</svg>"
    )


# -- one task ---------------------------------------------------------------------


def title_html(model: TaskPanelModel) -> str:
    t = model.task
    task_id = model.task_id
    bits = [
        f'<b style="font-size:13px">{html.escape(str(t.get("name") or task_id))}</b>',
        f'<code title="{html.escape(task_id)}" style="font-size:11px;opacity:.75">{html.escape(task_id[:8])}</code>',
    ]
    meta = []
    if t.get("kernel_name"):
        meta.append(html.escape(t["kernel_name"]))
    for tag in t.get("tags") or []:
        meta.append(f'<span class="taskrun-tag">#{html.escape(tag)}</span>')
    if model.cell_index is not None and model.status == "running" and t.get("source_kind") in ("cells", "notebook", "path"):
        meta.append(f"cell {model.cell_index}")
    if meta:
        bits.append(f'<span style="font-size:11px;opacity:.8">{" · ".join(meta)}</span>')
    return '<span class="taskrun-title" style="display:inline-flex;gap:8px;align-items:baseline">' + "".join(bits) + "</span>"


def status_html(model: TaskPanelModel) -> str:
    """The badge, and the exit code when the task has one (a script's ``sys.exit``)."""
    code = model.exit_code
    exit_code = (
        f' <span class="taskrun-exit-code" data-exit-code="{code}" style="font-size:12px;opacity:.85">exit code <b>{code}</b></span>'
        if code is not None
        else ""
    )
    return badge_html(model.status) + exit_code


def elapsed_html(model: TaskPanelModel, now: float | None = None) -> str:
    label, elapsed = model.elapsed(now)
    if elapsed is None:
        return ""
    return f'<span style="font-size:12px;opacity:.85">{label} <b>{format_duration(elapsed)}</b></span>'


def queue_html(model: TaskPanelModel) -> str:
    pos = model.task.get("queue_position") if model.status == "queued" else None
    ok = isinstance(pos, (int, float)) and not isinstance(pos, bool) and pos
    return f'<span style="font-size:12px">#{int(pos)} in queue</span>' if ok and pos else ""


def progress_bar_state(model: TaskPanelModel) -> dict[str, Any] | None:
    """``value``, ``max`` and ``bar_style`` of the progress bar; None when there is no progress."""
    p = model.progress
    if not p:
        return None
    status, total, value = model.status, p.get("total"), float(p.get("value") or 0)
    if total:
        top = max(float(total), 1e-9)
        state: dict[str, Any] = {"max": top, "value": min(max(value, 0.0), top)}
    else:  # no total known: a full bar while it counts, labelled with the count
        state = {"max": 1.0, "value": 1.0 if status in TERMINAL or value else 0.0}
    state["bar_style"] = BAR_STYLES.get(status, "info" if status == "running" else "")
    return state


def progress_text_html(model: TaskPanelModel, now: float | None = None) -> str:
    p = model.progress
    if not p:
        return ""
    value, total = p.get("value"), p.get("total")
    if total:
        parts = [f"<b>{fmt_number(value)}/{fmt_number(total)}</b> ({100.0 * float(value or 0) / float(total):.0f}%)"]
    else:
        parts = [f"<b>{fmt_number(value)}</b>"]
    if p.get("message"):
        parts.append(html.escape(str(p["message"])))
    eta = model.eta(now)
    if eta is not None:
        parts.append(f"ETA {format_duration(eta)}")
    return '<span class="taskrun-progress-text" style="font-size:12px">' + " · ".join(parts) + "</span>"


def log_html(log: LogBuffer) -> str:
    """The log's lines, escaped; stderr marked as such unless it is a progress bar."""
    out = []
    for stream, text, _open in log.lines:
        line = html.escape(text.rstrip("\r")) or " "
        if stream == "stderr" and _PROGRESS_LINE.search(text):
            out.append('<span class="taskrun-progress-line" data-stream="stderr" style="display:block">' + line + "</span>")
        elif stream == "stderr":
            out.append('<span class="taskrun-stderr" style="display:block">' + line + "</span>")
        else:
            out.append('<span style="display:block">' + line + "</span>")
    return "".join(out)


def log_header_html(model: TaskPanelModel) -> str:
    log = model.log_buffer
    dropped = f" · earlier {format_bytes(log.dropped)} not shown" if log.dropped else ""
    trunc = f' · <span style="color:var(--jp-warn-color1,#f57c00)">{html.escape(model.truncated)}</span>' if model.truncated else ""
    return f'<span style="font-size:12px"><b>Log</b>{dropped}{trunc}</span>'


def log_box_html(log: LogBuffer) -> str:
    # column-reverse keeps the view pinned to the newest line as it grows
    return (
        # focusable and named: a keyboard user scrolls it with the arrow keys
        '<div class="taskrun-logbox" tabindex="0" role="region" aria-label="Task log" '
        'style="display:flex;flex-direction:column-reverse;max-height:15em;overflow:auto">'
        '<pre style="margin:0;padding:4px 8px;'
        # never shrunk to the box (Lab styles <pre> with overflow: then the box would not scroll)
        "flex:0 0 auto;overflow:visible;"
        f'font-family:{MONO};font-size:12px;line-height:1.35;white-space:pre-wrap;word-break:break-word">'
        f"{log_html(log)}</pre></div>"
    )


def metrics_html(model: TaskPanelModel, now: float | None = None) -> str:
    m, status = model.metrics, model.status
    label, elapsed = model.elapsed(now)
    wall = m.get("wall") if model.done else (elapsed if label == "running" else None)
    cpu = None
    if m.get("cpu_user") is not None or m.get("cpu_system") is not None:
        cpu = float(m.get("cpu_user") or 0) + float(m.get("cpu_system") or 0)
    items = [
        ("wall", format_duration(wall)),
        ("CPU", format_duration(cpu)),
        ("peak mem", format_bytes(m.get("peak_rss")) if m.get("peak_rss") else EMPTY),
    ]
    if m.get("kernel_start") is not None:
        warm = " (warm)" if m.get("pooled_kernel") else ""
        items.append(("kernel start", f"{format_duration(m.get('kernel_start'))}{warm}"))
    elif model.done:
        items.append(("kernel start", EMPTY))  # while running it is simply not known yet: no stale dash
    if status == "running" and m.get("cpu_now") is not None:
        items.append(("now", f"{float(m['cpu_now']):.0f}% · {format_bytes(m.get('rss_now'))}"))
    text = " · ".join(f'{k} <b data-metric="{k}">{v}</b>' for k, v in items)
    spark = sparkline_svg(list(model.samples))
    legend = (
        f'<span style="font-size:10px;opacity:.75"><span style="color:{CPU_COLOR}">━ CPU</span> '
        f'<span style="color:{MEMORY_COLOR}">━ memory</span></span>'
        if spark
        else ""
    )
    return (
        '<span class="taskrun-metrics-text" style="font-size:12px;display:inline-flex;gap:10px;align-items:center;flex-wrap:wrap">'
        f"<span>{text}</span>{spark}{legend}</span>"
    )


def error_head_html(model: TaskPanelModel) -> str:
    """How the task ended, said once ("" unless it ended otherwise than completed)."""
    status = model.status
    if not model.done or status == "completed":
        return ""
    err = model.error or {}
    color = STATUS_COLORS.get(status, STATUS_COLORS["failed"])
    if status == "failed" and err.get("ename") and err.get("ename") not in ("failed", "TaskFailed"):
        head = f"{html.escape(str(err.get('ename')))}: {html.escape(str(err.get('evalue') or ''))}"
    else:
        head = status.replace("_", " ").capitalize()
    reason = str(model.reason or err.get("reason") or "")
    plain_head = html.unescape(head)
    detail = ""
    if reason and plain_head.lower() in reason.lower():
        # "Cancelled" + "cancelled by user", "ValueError: x" + "cell 0 raised ValueError: x": say it once
        head = html.escape(reason[:1].upper() + reason[1:])
    elif reason and reason.lower() not in plain_head.lower():
        detail = f'<div class="taskrun-error-reason" style="opacity:.85">{html.escape(reason)}</div>'
    return f'<div class="taskrun-error-head" style="border-left:3px solid {color}"><b style="color:{color}">{head}</b>{detail}</div>'


def traceback_html(traceback: list[Any]) -> str:
    """Escaped text (ANSI colours kept as spans), never a trusted output."""
    return (
        '<pre class="taskrun-traceback-text" tabindex="0" aria-label="Traceback" style="margin:0;padding:4px 8px;overflow:auto;'
        f"font-family:{MONO};font-size:12px;line-height:1.35;white-space:pre-wrap;"
        'word-break:break-word">' + ansi_to_html("\n".join(str(line).rstrip("\n") for line in traceback)) + "</pre>"
    )


def mode_html(mode: str, detail: str, poll_interval: float) -> str:
    """``● live`` / ``● polling every Ns`` while a task is followed ("" otherwise)."""
    modes = {
        "stream": ("● live", STATUS_COLORS["completed"]),
        "poll": (f"● polling every {poll_interval:g}s", "var(--jp-warn-color1,#f57c00)"),
    }
    if mode not in modes:
        return ""
    text, color = modes[mode]
    return f'<span style="font-size:11px;color:{color}" title="{html.escape(detail)}">{text}</span>'


def notebook_link_html(base_url: str, path: str) -> str:
    """Links to a saved executed notebook: open it, and download it.

    In JupyterLab the jupyter-taskrun extension's command handles the click (Lab's command linker
    reads the ``data-commandlinker-*`` attributes): the notebook opens as the Tasks detail view opens
    it, without starting a kernel. Elsewhere the plain link opens it in a new tab."""
    quoted = "/".join(urllib.parse.quote(p, safe="") for p in path.split("/"))
    base = html.escape(base_url)
    args = html.escape(json.dumps({"path": path}), quote=True)
    return (
        f'<span style="font-size:12px">saved <a class="taskrun-notebook-link" href="{base}lab/tree/{quoted}" '
        f'data-commandlinker-command="taskrun:open-executed-notebook" data-commandlinker-args="{args}" '
        f'target="_blank" rel="noopener" style="{_LINK_STYLE};text-decoration:underline">'
        f'{html.escape(path)}</a> (<a href="{base}files/{quoted}" download style="{_LINK_STYLE}">download</a>)</span>'
    )


def notice_html(text: str, *, error: bool) -> str:
    color = "var(--jp-error-color1,#d32f2f)" if error else "inherit"
    return f'<span style="font-size:12px;color:{color};margin-left:6px">{html.escape(text)}</span>'


# -- the task list ----------------------------------------------------------------


def list_header_html(counts: dict[str, Any], mode: str, poll_interval: float) -> str:
    live = {"stream": "● live", "poll": f"● polling every {poll_interval:g}s"}.get(mode, "")
    capacity = f" · capacity {html.escape(str(counts['capacity']))}" if counts.get("capacity") is not None else ""
    return (
        '<div style="display:flex;gap:12px;align-items:baseline"><b style="font-size:13px">Tasks</b>'
        f'<span class="taskrun-counts" style="font-size:12px">{int(counts.get("running") or 0)} running · '
        f"{int(counts.get('queued') or 0)} queued{capacity}"
        f'</span><span style="font-size:11px;color:{STATUS_COLORS["completed"]}">{live}</span></div>'
    )


def _list_progress_html(status: str, p: dict[str, Any]) -> str:
    if p and p.get("total"):
        frac = max(0.0, min(1.0, float(p.get("value") or 0) / float(p["total"])))
        return (
            # decorative: the percentage beside it says the same
            '<div aria-hidden="true" style="width:90px;height:7px;background:var(--jp-layout-color3,#bdbdbd);border-radius:4px;display:inline-block">'
            f'<div style="width:{frac * 100:.0f}%;height:100%;background:{STATUS_COLORS.get(status, STATUS_COLORS["running"])};border-radius:4px"></div></div>'
            f' <span style="font-size:11px">{frac * 100:.0f}%</span>'
        )
    if p:
        return f'<span style="font-size:11px">{html.escape(fmt_number(p.get("value")))}</span>'
    return ""


def list_table_html(model: TaskListModel, now: float | None = None) -> str:
    now = time.time() if now is None else now
    rows = []
    for task_id in model.order:
        t = model.tasks[task_id]
        status = str(t.get("status", ""))
        created = parse_time(t.get("created_at"))
        started, finished = parse_time(t.get("started_at")), parse_time(t.get("finished_at"))
        duration = format_duration((finished or now) - started) if started else ""
        age = format_duration(now - created) + " ago" if created else ""
        rows.append(
            f'<tr data-task-id="{html.escape(task_id)}" data-status="{html.escape(status)}">'
            f"<td>{badge_html(status)}</td><td><b>{html.escape(str(t.get('name') or '')[:80])}</b></td>"
            f'<td><code style="font-size:11px">{html.escape(task_id[:8])}</code></td>'
            f"<td>{_list_progress_html(status, t.get('progress') or {})}</td><td>{age}</td><td>{duration}</td></tr>"
        )
    head = "".join(f'<th style="text-align:left;padding:2px 8px">{h}</th>' for h in ("status", "name", "id", "progress", "age", "duration"))
    body = "".join(rows) or '<tr><td colspan="6" style="opacity:.7;padding:4px 8px">no tasks yet</td></tr>'
    return (
        '<table class="taskrun-table" style="border-collapse:collapse;font-size:12px;width:100%">'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>" + PANEL_STYLE
    )


def list_options(model: TaskListModel) -> list[tuple[str, str]]:
    """(label, task id) of the picker, newest first (a drop-down's labels are text, not HTML)."""
    return [(f"{str(model.tasks[i].get('name') or '')[:50]} · {i[:8]} · {model.tasks[i].get('status')}", i) for i in model.order]
