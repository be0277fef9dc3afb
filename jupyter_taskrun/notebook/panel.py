"""Live ipywidgets for tasks: ``TaskPanel`` (one task) and ``TaskListPanel`` (recent tasks).

Both are pure-Python composites of stock ipywidgets (no front-end code to install),
fed from the server's event streams *in the kernel*:

* One background thread per kernel runs a private asyncio loop
  (``jupyter-taskrun-widgets``). Every panel follows its task there with
  ``AsyncTaskRunClient.stream_events`` (which resumes after a disconnect with
  ``Last-Event-ID``: no line lost or repeated); if streaming is impossible
  (refused, too many streams, a proxy that buffers) the panel polls the REST API
  every 2 s instead. The stream is closed as soon as the task ends (or the panel
  is closed). Because it is a thread, panels keep updating while the notebook's
  main thread is busy running other cells.
* Events are first folded into a plain-Python model (``apply_event``), then
  pushed to the widgets at most ~10 times per second (``render_interval``), so a
  task printing thousands of lines does not flood the browser. Widget traits are
  only ever written under the panel's lock.

* Task outputs are untrusted (an admin may open another user's task): they are rendered
  to sanitised, script-free HTML in the kernel (``panel_render``) and shown in one
  ``widgets.HTML`` per output, never in a ``widgets.Output`` (which Lab renders trusted).
  ``clear`` events drop a cell's shown outputs (``clear_output``); the log keeps everything.

For tests and for replaying a finished task: ``TaskPanel(client, task_id, start=False)``
then ``panel.apply_event(event)`` for each event, and inspect ``child.get_state()``.
"""

from __future__ import annotations

import asyncio
import codecs
import concurrent.futures
import html
import os
import re
import threading
import time
from collections import deque
from datetime import datetime
from typing import Any

import ipywidgets as widgets

from ..models import TERMINAL_STATUSES
from .panel_render import ansi_to_html, render_output, sanitize_html

__all__ = ["STATUS_COLORS", "TaskListPanel", "TaskPanel", "sanitize_html"]

TERMINAL = frozenset(s.value for s in TERMINAL_STATUSES)
ACTIVE = frozenset({"queued", "running"})

#: badge colours (white text on these)
STATUS_COLORS = {
    "queued": "#6b7280",
    "running": "#1565c0",
    "completed": "#2e7d32",
    "failed": "#c62828",
    "cancelled": "#ef6c00",
    "timed_out": "#6a1b9a",
}
_BAR_STYLES = {"completed": "success", "failed": "danger", "timed_out": "danger", "cancelled": "warning"}
_WIDGET_VIEW_MIME = "application/vnd.jupyter.widget-view+json"
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
_MONO = "var(--jp-code-font-family, SFMono-Regular, Menlo, Consolas, monospace)"
#: a progress bar drawn on stderr (tqdm & co): not an error, so not drawn like one
_PROGRESS_LINE = re.compile(r"\d{1,3}%\|[^\n]*\||\d+(?:\.\d+)?[kMGTP]?(?:it|B)?\s*\[\d+:\d\d(?::\d\d)?(?:<|,)")


# ---------------------------------------------------------------------------
# Formatting helpers
# ---------------------------------------------------------------------------


def parse_time(value: Any) -> float | None:
    """ISO 8601 (``...Z``) → epoch seconds; None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = max(0.0, float(seconds))
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, sec = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "—"
    n = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"  # pragma: no cover


def fmt_number(x: Any) -> str:
    if isinstance(x, float) and x.is_integer():
        x = int(x)
    if isinstance(x, float):
        return f"{x:.3g}"
    return str(x)


def badge_html(status: str) -> str:
    color = STATUS_COLORS.get(status, "#6b7280")
    label = status.replace("_", " ")
    return (
        f'<span class="taskrun-status" data-status="{html.escape(status)}" style="background:{color};color:#fff;'
        "border-radius:10px;padding:1px 9px;font-size:12px;font-weight:600;letter-spacing:.02em;"
        f'white-space:nowrap">{html.escape(label)}</span>'
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

    title = f"CPU now {cpus[-1]:.0f}% (peak {max(cpus):.0f}%), memory now {fmt_bytes(rsss[-1])} (peak {fmt_bytes(max(rsss))})"
    return (
        f'<svg class="taskrun-sparkline" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'role="img" style="vertical-align:middle;background:var(--jp-layout-color2,#f5f5f5);border-radius:3px">'
        f"<title>{html.escape(title)}</title>"
        f'<polyline fill="none" stroke="#ef6c00" stroke-width="1.5" points="{line(rsss, rss_lo, rss_hi)}"/>'
        f'<polyline fill="none" stroke="#1565c0" stroke-width="1.5" points="{line(cpus, cpu_lo, cpu_hi)}"/>'
        "</svg>"
    )


def _clean_bundle(data: dict[str, Any]) -> dict[str, Any]:
    """Drop widget views from a task's outputs: their models live in the task kernel, not here."""
    return {k: v for k, v in data.items() if k != _WIDGET_VIEW_MIME}


# ---------------------------------------------------------------------------
# The background loop shared by every panel of this kernel
# ---------------------------------------------------------------------------


class _BackgroundLoop:
    """One daemon thread with an asyncio loop, started on first use."""

    _instance: _BackgroundLoop | None = None
    _guard = threading.Lock()

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name="jupyter-taskrun-widgets", daemon=True)
        self.thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()

    @classmethod
    def get(cls) -> _BackgroundLoop:
        with cls._guard:
            inst = cls._instance
            if inst is None or not inst.thread.is_alive() or inst.loop.is_closed():
                inst = cls._instance = cls()
            return inst

    def submit(self, coro: Any) -> concurrent.futures.Future:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, fn: Any, *args: Any) -> None:
        self.loop.call_soon_threadsafe(fn, *args)

    @property
    def in_loop(self) -> bool:
        return threading.current_thread() is self.thread


def _sync_and_async_clients(client: Any) -> tuple[Any, Any]:
    """(TaskRunClient, AsyncTaskRunClient) for the same server, whichever kind was given."""
    from ..client import AsyncTaskRunClient, TaskRunClient

    if client is None:
        client = TaskRunClient()
    url, token = client.url, client.token
    sync = client if isinstance(client, TaskRunClient) else TaskRunClient(url, token)
    aclient = client if isinstance(client, AsyncTaskRunClient) else AsyncTaskRunClient(url, token)
    for attr in ("request_timeout", "stream_read_timeout", "reconnect_timeout"):
        setattr(aclient, attr, getattr(client, attr))
    return sync, aclient


# ---------------------------------------------------------------------------
# Log model: terminal-like lines (\r rewrites the line), capped
# ---------------------------------------------------------------------------


def _collapse_cr(text: str) -> str:
    """What a terminal shows of a line with carriage returns (keeps a trailing ``\\r``)."""
    if "\r" not in text:
        return text
    parts = [p for p in text.split("\r") if p]
    last = parts[-1] if parts else ""
    return last + ("\r" if text.endswith("\r") else "")


class LogBuffer:
    """The tail of a task's log as lines tagged stdout/stderr, at most ``max_chars`` kept."""

    def __init__(self, max_chars: int = 50_000):
        self.max_chars = max_chars
        self.lines: deque[list[Any]] = deque()  # [stream, text, open]
        self._open: dict[str, list[Any]] = {}
        self.chars = 0
        self.dropped = 0  # characters no longer kept
        self.total = 0  # characters received

    def feed(self, stream: str, text: str) -> None:
        if not text:
            return
        self.total += len(text)
        text = _ANSI.sub("", text)
        pieces = text.split("\n")
        for i, piece in enumerate(pieces):
            closes = i < len(pieces) - 1
            entry = self._open.get(stream)
            if entry is None:
                if not piece and not closes:
                    continue
                entry = [stream, "", True]
                self.lines.append(entry)
                self._open[stream] = entry
            old = len(entry[1])
            entry[1] = _collapse_cr(entry[1] + piece)
            if len(entry[1]) > self.max_chars:
                self.dropped += len(entry[1]) - self.max_chars
                entry[1] = entry[1][-self.max_chars :]
            self.chars += len(entry[1]) - old
            if closes:
                entry[2] = False
                entry[1] = entry[1].rstrip("\r")
                self._open.pop(stream, None)
                self.chars += 1
        while self.chars > self.max_chars and len(self.lines) > 1:
            first = self.lines.popleft()
            self.chars -= len(first[1]) + (0 if first[2] else 1)
            self.dropped += len(first[1]) + 1
            if first[2] and self._open.get(first[0]) is first:
                self._open.pop(first[0], None)

    def text(self, stream: str | None = None) -> str:
        return "\n".join(t.rstrip("\r") for s, t, _ in self.lines if stream is None or s == stream)

    def html(self) -> str:
        out = []
        for stream, text, _open in self.lines:
            line = html.escape(text.rstrip("\r")) or " "
            if stream == "stderr" and _PROGRESS_LINE.search(text):
                out.append('<span class="taskrun-progress-line" data-stream="stderr" style="display:block">' + line + "</span>")
            elif stream == "stderr":
                out.append(
                    '<span class="taskrun-stderr" style="color:var(--jp-error-color1,#c62828);'
                    'background:rgba(198,40,40,.07);display:block">' + line + "</span>"
                )
            else:
                out.append('<span style="display:block">' + line + "</span>")
        return "".join(out)


# ---------------------------------------------------------------------------
# TaskPanel
# ---------------------------------------------------------------------------


class TaskPanel(widgets.VBox):
    """A live panel of one task: status, progress, elapsed time, logs, outputs, metrics, actions.

    ``TaskPanel(client, task_id)`` starts following the task at once; ``start=False``
    builds it idle (call ``start()`` later, or feed events with ``apply_event``).
    ``client`` is a ``TaskRunClient`` or ``AsyncTaskRunClient`` (``None``: discover the server).
    ``transport="poll"`` skips streaming and polls every ``poll_interval`` seconds.
    """

    def __init__(
        self,
        client: Any = None,
        task_id: str | None = None,
        *,
        task: dict[str, Any] | None = None,
        start: bool = True,
        transport: str = "auto",
        poll_interval: float = 2.0,
        render_interval: float = 0.1,
        max_log_chars: int = 50_000,
        max_outputs: int = 100,
        **kwargs: Any,
    ):
        if task_id is None and task is None:
            raise TypeError("TaskPanel needs a task id")
        if transport not in ("auto", "stream", "poll"):
            raise ValueError("transport must be 'auto', 'stream' or 'poll'")
        self.client, self._aclient = _sync_and_async_clients(client)
        if task is None:
            task = self.client.get(task_id)
        self.task_id: str = task_id or task["id"]
        self.transport = transport
        self.poll_interval = poll_interval
        self.render_interval = render_interval
        self.max_outputs = max_outputs

        # -- model (plain Python; guarded by _lock) --
        self._lock = threading.RLock()
        self.task: dict[str, Any] = dict(task)
        self.status: str = task.get("status", "queued")
        self.last_seq: int = 0
        self.log_buffer = LogBuffer(max_log_chars)
        self.outputs: list[dict[str, Any]] = []
        self.samples: deque[dict[str, Any]] = deque(maxlen=600)
        self.metrics: dict[str, Any] = {}
        self.progress: dict[str, Any] | None = None
        self._progress_first: tuple[float, float] | None = None
        self._progress_last: tuple[float, float] | None = None
        self.error: dict[str, Any] | None = None
        self.reason: str | None = None
        self.result: dict[str, Any] | None = None
        self.cell_index: int | None = None
        self.truncated: str | None = None
        self.mode = "idle"  # idle | stream | poll | done | closed
        self.mode_detail = ""
        self.notice = ""
        self.saved_path: str | None = None
        self.reruns: list[TaskPanel] = []
        self.render_count = 0
        self.events_seen = 0
        self._outputs_version = 0
        self._output_serial = 0
        self._rendered_outputs_version = -1
        self._rendered_error: Any = None
        self._rendered_log_total = -1
        self._render_handle: asyncio.Handle | None = None
        self._last_render = 0.0
        self._future: concurrent.futures.Future | None = None
        self._closed = False
        self._bg: _BackgroundLoop | None = None
        self._log_decoders: dict[str, Any] = {}
        self._log_offsets: dict[str, int] = {"stdout": 0, "stderr": 0}
        self.done_event = threading.Event()

        # -- widgets --
        self.title_html = widgets.HTML(layout=widgets.Layout(flex="1 1 auto"))
        self.badge = widgets.HTML()
        self.badge.add_class("taskrun-badge")
        self.elapsed_label = widgets.HTML()
        self.elapsed_label.add_class("taskrun-elapsed")
        self.queue_label = widgets.HTML()
        self.queue_label.add_class("taskrun-queue")
        self.mode_label = widgets.HTML()
        header = widgets.HBox(
            [self.title_html, self.queue_label, self.elapsed_label, self.badge],
            layout=widgets.Layout(align_items="center", width="100%", grid_gap="10px"),
        )
        self.progress_bar = widgets.FloatProgress(
            value=0.0, min=0.0, max=1.0, layout=widgets.Layout(flex="1 1 auto", width="auto")
        )
        self.progress_bar.add_class("taskrun-progress")
        self.progress_label = widgets.HTML(layout=widgets.Layout(min_width="14em"))
        self.progress_row = widgets.HBox(
            [self.progress_bar, self.progress_label],
            layout=widgets.Layout(align_items="center", width="100%", grid_gap="8px", display="none"),
        )
        self.log_view = widgets.HTML(layout=widgets.Layout(width="100%"))
        self.log_view.add_class("taskrun-log")
        self.follow_toggle = widgets.ToggleButton(
            value=True, description="Follow", icon="arrow-down", tooltip="Follow the end of the log",
            layout=widgets.Layout(width="auto", height="24px"),
        )
        self.follow_toggle.observe(self._on_follow, "value")
        self.log_header = widgets.HTML()
        self.log_box = widgets.VBox(
            [widgets.HBox([self.log_header, self.follow_toggle], layout=widgets.Layout(align_items="center", grid_gap="8px")), self.log_view],
            layout=widgets.Layout(width="100%", display="none"),
        )
        # task outputs are untrusted: rendered to sanitised HTML here (panel_render), one
        # widgets.HTML per output, never through a (trusted) widgets.Output
        self.outputs_view = widgets.VBox(layout=widgets.Layout(width="100%", display="none"))
        self.outputs_view.add_class("taskrun-outputs")
        self._output_widgets: dict[int, tuple[dict[str, Any], widgets.HTML]] = {}
        self.error_html = widgets.HTML()
        self.traceback_view = widgets.HTML(layout=widgets.Layout(width="100%"))
        self.traceback_view.add_class("taskrun-traceback")
        self.error_view = widgets.VBox(
            [self.error_html, self.traceback_view], layout=widgets.Layout(width="100%", display="none")
        )
        self.error_view.add_class("taskrun-error")
        self.metrics_view = widgets.HTML()
        self.metrics_view.add_class("taskrun-metrics")
        btn = widgets.Layout(width="auto")
        self.cancel_button = widgets.Button(description="Cancel", icon="stop", button_style="danger", layout=btn, tooltip="Cancel this task")
        self.rerun_button = widgets.Button(description="Rerun", icon="redo", layout=btn, tooltip="Run this task again")
        self.notebook_button = widgets.Button(
            description="Open executed notebook", icon="book", layout=btn, tooltip="Save the executed notebook next to this one"
        )
        self.cancel_button.on_click(lambda _b: self.cancel())
        self.rerun_button.on_click(lambda _b: self.rerun())
        self.notebook_button.on_click(lambda _b: self.open_notebook())
        self.link_view = widgets.HTML(layout=widgets.Layout(flex="1 1 auto"))
        self.link_view.add_class("taskrun-notice")
        actions = widgets.HBox(
            [self.cancel_button, self.rerun_button, self.notebook_button, self.link_view],
            layout=widgets.Layout(align_items="center", width="100%", grid_gap="6px", flex_flow="row wrap"),
        )
        self.rerun_box = widgets.VBox(layout=widgets.Layout(width="100%"))
        kwargs.setdefault(
            "layout",
            widgets.Layout(
                width="100%",
                padding="6px 10px",
                border="1px solid var(--jp-border-color2, #ddd)",
                grid_gap="6px",
            ),
        )
        super().__init__(
            [header, self.progress_row, self.log_box, self.outputs_view, self.error_view,
             widgets.HBox([self.metrics_view, self.mode_label], layout=widgets.Layout(justify_content="space-between", align_items="center", width="100%")),
             actions, self.rerun_box],
            **kwargs,
        )
        self.add_class("taskrun-panel")
        self._apply_task(task)
        self._render()
        if start:
            self.start()

    # ------------------------------------------------------------------ public API

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    def start(self) -> None:
        """Follow the task in the background (stream, else poll) until it ends."""
        with self._lock:
            if self._future is not None or self._closed:
                return
            if self.done and self.last_seq and self.last_seq >= int(self.task.get("last_event_id") or 0):
                self.mode = "done"
                self.done_event.set()
                self._render()
                return
            self._bg = _BackgroundLoop.get()
            self._future = self._bg.submit(self._main())

    def stop(self) -> None:
        """Stop following (closes the event stream); the panel keeps what it shows."""
        fut, self._future = getattr(self, "_future", None), None
        if fut is not None and not fut.done():
            fut.cancel()
        with self._lock:
            if self._render_handle is not None and self._bg is not None:
                self._bg.call(self._render_handle.cancel)
                self._render_handle = None

    def close(self) -> None:
        if not hasattr(self, "_lock"):  # failed half-way through __init__
            return super().close()
        self._closed = True
        self.stop()
        self.mode = "closed"
        for child in self._all_widgets():
            child.close()
        for panel in self.reruns:
            panel.close()
        super().close()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the panel has seen the task finish (True) or ``timeout`` s passed (False)."""
        return self.done_event.wait(timeout)

    def apply_event(self, event: dict[str, Any]) -> None:
        """Fold one task event (as ``stream_events`` yields it) into the panel and render now."""
        with self._lock:
            self._ingest(event)
            self._render()

    def refresh(self) -> None:
        """Re-read the task from the server (status, progress, metrics, error) and render."""
        task = self.client.get(self.task_id)
        with self._lock:
            self._apply_task(task)
            self._render()

    # -- actions (button callbacks; run in the kernel's main thread) --

    def cancel(self) -> None:
        try:
            task = self._call_server("cancel", self.task_id)
        except Exception as e:  # noqa: BLE001 - shown to the user, never raised into a callback
            self._set_notice(f"cancel failed: {self._why(e)}", error=True)
            return
        with self._lock:
            self.notice = "cancellation requested"
            if task.get("status") in TERMINAL:
                self._apply_task(task)
            self._render()

    def rerun(self) -> TaskPanel | None:
        try:
            new = self._call_server("rerun", self.task_id)
        except Exception as e:  # noqa: BLE001
            self._set_notice(f"rerun failed: {self._why(e)}", error=True)
            return None
        panel = TaskPanel(self.client, new["id"], task=new, start=True, transport=self.transport,
                          poll_interval=self.poll_interval, render_interval=self.render_interval,
                          max_log_chars=self.log_buffer.max_chars, max_outputs=self.max_outputs)
        with self._lock:
            self.reruns.append(panel)
            self.rerun_box.children = (*self.rerun_box.children, panel)
            self.notice = f"rerun as task {new['id'][:8]}"
            self._render()
        return panel

    def _call_server(self, method: str, *args: Any) -> Any:
        """A client call; when the server cannot be reached or refuses the token (restarted on another
        port, or with a new token), look for it again (runtime info, environment) and retry once."""
        from ..client import TaskRunConnectionError, TaskRunHTTPError

        try:
            return getattr(self.client, method)(*args)
        except (TaskRunConnectionError, TaskRunHTTPError) as e:
            if isinstance(e, TaskRunHTTPError) and e.status not in (401, 403):
                raise
            if not self._rediscover():
                raise
        return getattr(self.client, method)(*args)

    def _rediscover(self) -> bool:
        from ..client import TaskRunClient, discover_server

        try:
            info = discover_server()
        except Exception:  # noqa: BLE001 - no server found: keep the old one, say why
            return False
        if (info.url, info.token) == (self.client.url, self.client.token):
            return False
        self.client, self._aclient = _sync_and_async_clients(TaskRunClient(info.url, info.token))
        return True

    def _why(self, e: BaseException) -> str:
        """A failed action's reason as the user needs it (what to do after a server restart)."""
        from ..client import TaskRunConnectionError, TaskRunHTTPError

        if isinstance(e, TaskRunConnectionError):
            return (f"the Jupyter server at {self.client.url} cannot be reached (stopped or restarted elsewhere?); "
                    "once it is back, press again, or show the task again with %taskrun panel " + self.task_id[:8])
        if isinstance(e, TaskRunHTTPError) and e.status in (401, 403):
            return (f"the Jupyter server at {self.client.url} refused this panel's token (restarted with a new token?); "
                    "show the task again with %taskrun panel " + self.task_id[:8])
        if isinstance(e, TaskRunHTTPError) and e.status == 404:
            return f"task {self.task_id[:8]} is not on this server (any more)"
        return _short_error(e)

    def open_notebook(self, path: str | None = None) -> str | None:
        """Save the executed notebook into the server's contents and show a link to it."""
        path = path or self._default_notebook_path()
        try:
            saved = self.client.notebook(self.task_id, save=path)
        except Exception as e:  # noqa: BLE001
            if isinstance(e, TaskRunHTTPError) and e.status == 409:
                saved = {"path": path}  # saved by an earlier click: a finished task's notebook does not change
            elif path != self._safe_name() and "path" in str(e).lower():
                try:  # the folder next to this notebook is not writable/visible: use the root
                    saved = self.client.notebook(self.task_id, save=self._safe_name())
                except Exception as e2:  # noqa: BLE001
                    self._set_notice(f"could not save the notebook: {_short_error(e2)}", error=True)
                    return None
            else:
                self._set_notice(f"could not save the notebook: {_short_error(e)}", error=True)
                return None
        with self._lock:
            self.saved_path = saved.get("path", path)
            self.notice = ""
            self._render()
        return self.saved_path

    # ------------------------------------------------------------------ model

    def _apply_task(self, task: dict[str, Any]) -> None:
        """Take what a task object says (initial fetch, polling, final refresh)."""
        self.task = dict(task)
        status = task.get("status") or self.status
        if not (self.status in TERMINAL and status not in TERMINAL):
            self.status = status
        if task.get("progress"):
            self._set_progress(task["progress"], parse_time(task.get("finished_at")) or time.time(), from_event=False)
        if task.get("error"):
            self.error = task["error"]
            self.reason = task["error"].get("reason") or self.reason
        if task.get("result"):
            self.result = task["result"]
        metrics = task.get("metrics") or {}
        self.metrics.update({k: v for k, v in metrics.items() if v is not None})

    def _set_progress(self, data: dict[str, Any], when: float, *, from_event: bool = True) -> None:
        value = data.get("value")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return
        self.progress = {"value": value, "total": data.get("total"), "message": data.get("message") or ""}
        if from_event:
            if self._progress_first is None or value < self._progress_first[1]:
                self._progress_first = (when, float(value))
            self._progress_last = (when, float(value))

    def _ingest(self, ev: dict[str, Any]) -> None:
        etype = ev.get("type")
        seq = ev.get("seq")
        if isinstance(seq, int):
            if seq <= self.last_seq:
                return  # already seen (a replay after reconnect)
            self.last_seq = seq
        self.events_seen += 1
        data = ev.get("data") or {}
        when = parse_time(ev.get("time")) or time.time()
        if etype == "status":
            status = data.get("status")
            if status and not (self.status in TERMINAL and status not in TERMINAL):
                self.status = status
            if status == "running" and not self.task.get("started_at"):
                self.task["started_at"] = ev.get("time")
            if "exit_code" in data:
                self.task["exit_code"] = data["exit_code"]
            if status in TERMINAL:
                self.task.setdefault("finished_at", None)
                if not self.task.get("finished_at"):
                    self.task["finished_at"] = ev.get("time")
                self.reason = data.get("reason") or self.reason
                if data.get("error"):
                    self.error = data["error"]
                self.cell_index = None
        elif etype == "log":
            stream, text = data.get("stream", "stdout"), data.get("text", "")
            self.log_buffer.feed(stream, text)
            if stream in self._log_offsets:  # where polling would continue, should streaming fail
                self._log_offsets[stream] += len(text.encode("utf-8", "replace"))
        elif etype == "output":
            self._add_output(data)
        elif etype == "clear":  # EventType.CLEAR
            self._clear_outputs(data.get("cell_index"))
        elif etype == "progress":
            self._set_progress(data, when)
        elif etype == "metrics":
            self.samples.append({"t": data.get("t", 0.0), "cpu": data.get("cpu", 0.0), "rss": data.get("rss", 0)})
            for key in ("cpu_user", "cpu_system", "peak_rss"):
                if data.get(key) is not None:
                    self.metrics[key] = data[key]
            self.metrics["cpu_now"] = data.get("cpu")
            self.metrics["rss_now"] = data.get("rss")
        elif etype == "cell":
            self.cell_index = data.get("cell_index") if data.get("phase") == "start" else None
        elif etype == "result":
            self.result = data
        elif etype == "truncated":
            self.truncated = data.get("message") or "output truncated"
        elif etype == "end":
            status = data.get("status")
            if status in TERMINAL:
                self.status = status

    def _add_output(self, data: dict[str, Any]) -> None:
        """One ``output`` event (or one output of ``GET …/outputs``) folded in, as ``outputs.fold_outputs``
        does: appended to its cell, or (``update``) replacing the data of the shown outputs with its
        ``display_id``."""
        out = data.get("output")
        if not isinstance(out, dict):
            return
        kind = out.get("output_type")
        if kind == "error":
            return  # shown in the error view with its traceback
        cell = data.get("cell_index", out.get("cell_index"))
        display_id = data.get("display_id") or out.get("display_id")
        out = {k: v for k, v in out.items() if k not in ("cell_index", "display_id")}
        if isinstance(out.get("data"), dict):
            bundle = out["data"]
            out["data"] = _clean_bundle(bundle)
            if not out["data"] or set(out["data"]) == {"text/plain"} and (
                _WIDGET_VIEW_MIME in bundle  # a widget's text stand-in (tqdm.auto's frozen "0%| 0/20")
                or str(out["data"]["text/plain"]).startswith(("HBox(", "VBox(", "FloatProgress(", "IntProgress("))
            ):
                return
        if kind == "execute_result":
            out = {"output_type": "execute_result", "data": out.get("data", {}), "metadata": out.get("metadata", {}),
                   "execution_count": None}
        if data.get("update"):
            if not display_id:
                return
            for i, shown in enumerate(self.outputs):
                if shown.get("display_id") == display_id:
                    self.outputs[i] = {**shown, "data": dict(out.get("data") or {}), "metadata": dict(out.get("metadata") or {})}
                    self._outputs_version += 1
            return  # an update of a display we never saw (or no longer show) is not shown on its own
        out["cell_index"] = cell
        if display_id:
            out["display_id"] = display_id
        self._output_serial += 1
        out["_key"] = self._output_serial  # keeps its widget through display updates
        self.outputs.append(out)
        if len(self.outputs) > self.max_outputs:
            del self.outputs[: len(self.outputs) - self.max_outputs]
        self._outputs_version += 1

    def _clear_outputs(self, cell: Any) -> None:
        """A ``clear`` event: the cell's displayed outputs go (the log keeps everything)."""
        kept = [o for o in self.outputs if o.get("cell_index") != cell]
        if len(kept) != len(self.outputs):
            self.outputs = kept
            self._outputs_version += 1

    # ------------------------------------------------------------------ rendering

    def _elapsed(self, now: float | None = None) -> tuple[str, float | None]:
        now = time.time() if now is None else now
        task = self.task
        started = parse_time(task.get("started_at"))
        finished = parse_time(task.get("finished_at"))
        if self.status == "queued" or started is None:
            created = parse_time(task.get("created_at"))
            if self.status in TERMINAL:
                return "", None
            return "waiting", (now - created) if created else None
        if finished is not None and self.status in TERMINAL:
            wall = self.metrics.get("wall")
            return "took", float(wall) if isinstance(wall, (int, float)) else finished - started
        return "running", now - started

    def _eta(self) -> float | None:
        p = self.progress
        if not p or self.status != "running" or not p.get("total"):
            return None
        first, last = self._progress_first, self._progress_last
        if not first or not last or last[1] <= first[1] or last[0] <= first[0]:
            return None
        rate = (last[1] - first[1]) / (last[0] - first[0])
        remaining = (float(p["total"]) - last[1]) / rate
        # time since the last update already counts towards the remaining time
        return max(0.0, remaining - max(0.0, time.time() - last[0]))

    def _title_html(self) -> str:
        t = self.task
        name = html.escape(str(t.get("name") or self.task_id))
        bits = [f'<b style="font-size:13px">{name}</b>',
                f'<code title="{html.escape(self.task_id)}" style="font-size:11px;opacity:.75">{html.escape(self.task_id[:8])}</code>']
        meta = []
        if t.get("kernel_name"):
            meta.append(html.escape(t["kernel_name"]))
        for tag in t.get("tags") or []:
            meta.append(f'<span style="border:1px solid var(--jp-border-color1,#ccc);border-radius:8px;padding:0 5px">#{html.escape(tag)}</span>')
        if self.cell_index is not None and self.status == "running" and t.get("source_kind") in ("cells", "notebook", "path"):
            meta.append(f"cell {self.cell_index}")
        if meta:
            bits.append(f'<span style="font-size:11px;opacity:.8">{" · ".join(meta)}</span>')
        return '<span class="taskrun-title" style="display:inline-flex;gap:8px;align-items:baseline">' + "".join(bits) + "</span>"

    def _progress_text(self) -> str:
        p = self.progress
        if not p:
            return ""
        value, total = p.get("value"), p.get("total")
        parts = []
        if total:
            pct = 100.0 * float(value) / float(total) if total else 0.0
            parts.append(f"<b>{fmt_number(value)}/{fmt_number(total)}</b> ({pct:.0f}%)")
        else:
            parts.append(f"<b>{fmt_number(value)}</b>")
        if p.get("message"):
            parts.append(html.escape(str(p["message"])))
        eta = self._eta()
        if eta is not None:
            parts.append(f"ETA {fmt_seconds(eta)}")
        return '<span class="taskrun-progress-text" style="font-size:12px">' + " · ".join(parts) + "</span>"

    def _metrics_html(self) -> str:
        m = self.metrics
        label, elapsed = self._elapsed()
        wall = m.get("wall") if self.status in TERMINAL else (elapsed if label == "running" else None)
        cpu = None
        if m.get("cpu_user") is not None or m.get("cpu_system") is not None:
            cpu = float(m.get("cpu_user") or 0) + float(m.get("cpu_system") or 0)
        items = [
            ("wall", fmt_seconds(wall) if wall is not None else "—"),
            ("CPU", fmt_seconds(cpu) if cpu is not None else "—"),
            ("peak mem", fmt_bytes(m.get("peak_rss")) if m.get("peak_rss") else "—"),
        ]
        if m.get("kernel_start") is not None:
            warm = " (warm)" if m.get("pooled_kernel") else ""
            items.append(("kernel start", f"{fmt_seconds(m.get('kernel_start'))}{warm}"))
        elif self.status in TERMINAL:
            items.append(("kernel start", "—"))  # while running it is simply not known yet: no stale dash
        if self.status == "running" and m.get("cpu_now") is not None:
            items.append(("now", f"{float(m['cpu_now']):.0f}% · {fmt_bytes(m.get('rss_now'))}"))
        text = " · ".join(f'{k} <b data-metric="{k}">{v}</b>' for k, v in items)
        spark = sparkline_svg(list(self.samples))
        legend = (
            '<span style="font-size:10px;opacity:.75"><span style="color:#1565c0">━ CPU</span> '
            '<span style="color:#ef6c00">━ memory</span></span>'
            if spark
            else ""
        )
        return (
            '<span class="taskrun-metrics-text" style="font-size:12px;display:inline-flex;gap:10px;align-items:center;flex-wrap:wrap">'
            f"<span>{text}</span>{spark}{legend}</span>"
        )

    def _error_html(self) -> str:
        if self.status not in TERMINAL or self.status == "completed":
            return ""
        err = self.error or {}
        color = STATUS_COLORS.get(self.status, "#c62828")
        if self.status == "failed" and err.get("ename") and err.get("ename") not in ("failed", "TaskFailed"):
            head = f"{html.escape(str(err.get('ename')))}: {html.escape(str(err.get('evalue') or ''))}"
        else:
            head = self.status.replace("_", " ").capitalize()
        reason = str(self.reason or err.get("reason") or "")
        plain_head = html.unescape(head)
        detail = ""
        if reason and plain_head.lower() in reason.lower():
            # "Cancelled" + "cancelled by user", "ValueError: x" + "cell 0 raised ValueError: x": say it once
            head = html.escape(reason[:1].upper() + reason[1:])
        elif reason and reason.lower() not in plain_head.lower():
            detail = f'<div class="taskrun-error-reason" style="opacity:.85">{html.escape(reason)}</div>'
        return (
            f'<div class="taskrun-error-head" style="border-left:3px solid {color};padding:2px 8px;'
            f'background:rgba(198,40,40,.05)"><b style="color:{color}">{head}</b>{detail}</div>'
        )

    def _render(self) -> None:
        """Push the model into the widgets (caller holds the lock)."""
        if self._closed:
            return
        self._last_render = time.monotonic()
        self.render_count += 1
        status = self.status
        self.title_html.value = self._title_html()
        exit_code = self.task.get("exit_code")
        self.badge.value = badge_html(status) + (
            f' <span class="taskrun-exit-code" data-exit-code="{int(exit_code)}" style="font-size:12px;opacity:.85">'
            f"exit code <b>{int(exit_code)}</b></span>"
            if isinstance(exit_code, int) and not isinstance(exit_code, bool) else ""
        )
        self.layout.border_left = f"4px solid {STATUS_COLORS.get(status, '#6b7280')}"
        label, elapsed = self._elapsed()
        self.elapsed_label.value = (
            f'<span style="font-size:12px;opacity:.85">{label} <b>{fmt_seconds(elapsed)}</b></span>' if elapsed is not None else ""
        )
        pos = self.task.get("queue_position") if status == "queued" else None
        self.queue_label.value = (
            f'<span style="font-size:12px">#{int(pos)} in queue</span>' if isinstance(pos, (int, float)) and pos else ""
        )
        # progress
        p = self.progress
        if p:
            total = p.get("total")
            value = float(p.get("value") or 0)
            if total:
                self.progress_bar.max = max(float(total), 1e-9)
                self.progress_bar.value = min(max(value, 0.0), self.progress_bar.max)
            else:  # no total known: a full bar while it counts, labelled with the count
                self.progress_bar.max = 1.0
                self.progress_bar.value = 1.0 if status in TERMINAL or value else 0.0
            self.progress_bar.bar_style = _BAR_STYLES.get(status, "info" if status == "running" else "")
            self.progress_label.value = self._progress_text()
            self.progress_row.layout.display = "flex"
        else:
            self.progress_row.layout.display = "none"
        # log
        if self.log_buffer.total:
            self.log_box.layout.display = "flex"
            dropped = f" · earlier {fmt_bytes(self.log_buffer.dropped)} not shown" if self.log_buffer.dropped else ""
            trunc = f' · <span style="color:var(--jp-warn-color1,#ef6c00)">{html.escape(self.truncated)}</span>' if self.truncated else ""
            self.log_header.value = f'<span style="font-size:12px"><b>Log</b>{dropped}{trunc}</span>'
            if (self.follow_toggle.value or status in TERMINAL) and self._rendered_log_total != self.log_buffer.total:
                self._rendered_log_total = self.log_buffer.total
                # column-reverse keeps the view pinned to the newest line as it grows
                self.log_view.value = (
                    '<div class="taskrun-logbox" style="display:flex;flex-direction:column-reverse;max-height:15em;'
                    "overflow:auto;background:var(--jp-layout-color2,#f7f7f7);border-radius:4px;"
                    'border:1px solid var(--jp-border-color2,#e0e0e0)"><pre style="margin:0;padding:4px 8px;'
                    # never shrunk to the box (Lab styles <pre> with overflow: then the box would not scroll)
                    "flex:0 0 auto;overflow:visible;"
                    f"font-family:{_MONO};font-size:12px;line-height:1.35;white-space:pre-wrap;word-break:break-word\">"
                    f"{self.log_buffer.html()}</pre></div>"
                )
        # outputs
        if self._outputs_version != self._rendered_outputs_version:
            self._rendered_outputs_version = self._outputs_version
            self._render_outputs()
        # error
        error_key = (status, repr(self.error), self.reason)
        if error_key != self._rendered_error:
            self._rendered_error = error_key
            head = self._error_html()
            self.error_html.value = head
            tb = (self.error or {}).get("traceback") or []
            if head and tb:
                # escaped text (ANSI colours kept as spans), never a trusted output
                self.traceback_view.value = (
                    '<pre class="taskrun-traceback-text" style="margin:0;padding:4px 8px;overflow:auto;'
                    f"font-family:{_MONO};font-size:12px;line-height:1.35;white-space:pre-wrap;"
                    'word-break:break-word;background:var(--jp-layout-color2,#f7f7f7);border-radius:4px">'
                    + ansi_to_html("\n".join(str(line).rstrip("\n") for line in tb)) + "</pre>"
                )
                self.traceback_view.layout.display = "flex"
            else:
                self.traceback_view.value = ""
                self.traceback_view.layout.display = "none"
            self.error_view.layout.display = "flex" if head else "none"
        # metrics & mode
        self.metrics_view.value = self._metrics_html()
        modes = {"stream": ("● live", "var(--jp-success-color1,#2e7d32)"),
                 "poll": (f"● polling every {self.poll_interval:g}s", "var(--jp-warn-color1,#ef6c00)")}
        mode = modes.get(self.mode)
        self.mode_label.value = (
            f'<span style="font-size:11px;color:{mode[1]}" title="{html.escape(self.mode_detail)}">{mode[0]}</span>'
            if mode and status not in TERMINAL else ""
        )
        # a finished log no longer moves: nothing to follow
        self.follow_toggle.layout.display = "none" if status in TERMINAL else ""
        # actions
        if self.notice == "cancellation requested" and status in TERMINAL:
            self.notice = ""  # the outcome is in the badge and the error head now
        self.cancel_button.disabled = status not in ACTIVE
        self.notebook_button.disabled = status not in TERMINAL or status == "queued"
        self.rerun_button.disabled = False
        notice = ""
        if self.saved_path:
            notice = self._link_html(self.saved_path)
        if self.notice:
            color = "var(--jp-error-color1,#c62828)" if self._notice_error else "inherit"
            notice += f'<span style="font-size:12px;color:{color};margin-left:6px">{html.escape(self.notice)}</span>'
        self.link_view.value = notice

    def _render_outputs(self) -> None:
        """One ``widgets.HTML`` of sanitised HTML per shown output; unchanged outputs keep theirs."""
        cache = self._output_widgets
        children = []
        for out in self.outputs:
            key = out.get("_key", id(out))
            entry = cache.get(key)
            if entry is None:
                w = widgets.HTML(render_output(out), layout=widgets.Layout(width="100%"))
                w.add_class("taskrun-output")
                cache[key] = (out, w)
            else:
                shown, w = entry
                if shown is not out:
                    w.value = render_output(out)
                    cache[key] = (out, w)
            children.append(w)
        keep = {out.get("_key", id(out)) for out in self.outputs}
        for key in [k for k in cache if k not in keep]:
            cache.pop(key)[1].close()
        self.outputs_view.children = tuple(children)
        self.outputs_view.layout.display = "flex" if children else "none"

    def outputs_html(self) -> list[str]:
        """The HTML each shown output is rendered to (what the browser receives), in order."""
        return [w.value for w in self.outputs_view.children]

    _notice_error = False

    def _set_notice(self, text: str, *, error: bool = False) -> None:
        with self._lock:
            self.notice = text
            self._notice_error = error
            self._render()

    def _link_html(self, path: str) -> str:
        base = self.client.url
        quoted = "/".join(_quote(p) for p in path.split("/"))
        return (
            f'<span style="font-size:12px">saved <a class="taskrun-notebook-link" href="{html.escape(base)}lab/tree/{quoted}" '
            f'target="_blank" rel="noopener" style="color:var(--jp-content-link-color,#1565c0);text-decoration:underline">'
            f"{html.escape(path)}</a> (<a href=\"{html.escape(base)}files/{quoted}\" download "
            'style="color:var(--jp-content-link-color,#1565c0)">download</a>)</span>'
        )

    def _on_follow(self, change: dict[str, Any]) -> None:
        if change["new"]:
            with self._lock:
                self._rendered_log_total = -1
                self._render()

    def _schedule_render(self) -> None:
        """From the background loop: render now or within ``render_interval`` (throttle)."""
        if self._render_handle is not None or self._closed:
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, self._last_render + self.render_interval - time.monotonic())
        self._render_handle = loop.call_later(delay, self._render_scheduled)

    def _render_scheduled(self) -> None:
        self._render_handle = None
        with self._lock:
            self._render()

    def _all_widgets(self) -> list[widgets.Widget]:
        out: list[widgets.Widget] = []

        def walk(w: widgets.Widget) -> None:
            for child in getattr(w, "children", ()):
                if isinstance(child, TaskPanel):
                    continue
                out.append(child)
                walk(child)

        walk(self)
        return out

    # ------------------------------------------------------------------ background work

    async def _main(self) -> None:
        ticker = asyncio.ensure_future(self._tick())
        try:
            if self.transport != "poll":
                try:
                    await self._stream()
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    from ..client import TaskRunHTTPError

                    if isinstance(e, TaskRunHTTPError) and e.status == 404:
                        with self._lock:
                            self.notice = "this task no longer exists"
                            self._notice_error = True
                            self.mode = "done"
                            self._render()
                        return
                    if self.transport == "stream":
                        raise
                    self.mode_detail = f"event stream unavailable: {_short_error(e)}"
            await self._poll()
        finally:
            ticker.cancel()
            if self.mode != "closed":
                self.mode = "done" if self.done else "idle"  # idle: stopped before the end
            if self.done:
                self.done_event.set()
            with self._lock:
                if self._render_handle is not None:
                    self._render_handle.cancel()
                    self._render_handle = None
                self._render()

    async def _stream(self) -> None:
        with self._lock:
            self.mode = "stream"
            self._render()
        stream = self._aclient.stream_events(self.task_id, after=self.last_seq)
        try:
            async for ev in stream:
                with self._lock:
                    self._ingest(ev)
                    terminal = ev.get("type") == "end" or self.status in TERMINAL
                    if not terminal:
                        self._schedule_render()
                if ev.get("type") == "end":
                    break
        finally:
            await stream.aclose()  # the stream is closed as soon as the task ends
        await self._finish()

    async def _finish(self) -> None:
        try:
            task = await self._aclient.get(self.task_id)
        except Exception:  # noqa: BLE001 - keep what the events said
            task = None
        with self._lock:
            if task is not None:
                self._apply_task(task)
            self.mode = "done"
            self.done_event.set()
            self._render()

    async def _tick(self) -> None:
        """Elapsed time ticks every second; the queue position is refreshed while queued."""
        n = 0
        while not self.done:
            await asyncio.sleep(1.0)
            n += 1
            if self.status == "queued" and self.mode == "stream" and n % 2 == 0:
                try:
                    task = await self._aclient.get(self.task_id)
                except Exception:  # noqa: BLE001
                    task = None
                if task is not None:
                    with self._lock:
                        if task.get("status") == "queued":
                            self.task["queue_position"] = task.get("queue_position")
            with self._lock:
                if self._render_handle is None:
                    self._render()

    async def _poll(self) -> None:
        """The fallback: rebuild the state from the REST API every ``poll_interval`` s.

        Logs continue from the byte offsets already received through events (nothing is
        shown twice); outputs and metrics are re-read only when the task has new events.
        """
        from ..client import TaskRunHTTPError

        with self._lock:
            self.mode = "poll"
            self._render()
        ac = self._aclient
        seen_events = -1
        failures = 0
        while True:
            try:
                task = await ac.get(self.task_id)
                terminal = task.get("status") in TERMINAL
                for stream in ("stdout", "stderr"):
                    data = await ac.logs_bytes(self.task_id, stream, self._log_offsets[stream])
                    if data:
                        self._log_offsets[stream] += len(data)
                        dec = self._log_decoders.setdefault(stream, codecs.getincrementaldecoder("utf-8")("replace"))
                        with self._lock:
                            self.log_buffer.feed(stream, dec.decode(data))
                last_event = int(task.get("last_event_id") or 0)
                outputs = metrics = None
                if last_event != seen_events or terminal:
                    seen_events = last_event
                    outputs = await ac.outputs(self.task_id)
                    try:
                        metrics = await ac.metrics(self.task_id)
                    except TaskRunHTTPError:
                        metrics = None
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - server unreachable: keep trying, say so
                if isinstance(e, TaskRunHTTPError) and e.status in (401, 403, 404):
                    gone = "this task no longer exists" if e.status == 404 else f"not allowed: {_short_error(e)}"
                    self._set_notice(gone, error=True)
                    return
                failures += 1
                self.mode_detail = f"server unreachable: {_short_error(e)}"
                with self._lock:
                    self.notice = "server unreachable, retrying…"
                    self._notice_error = True
                    self._render()
            else:
                failures = 0
                with self._lock:
                    if self.notice == "server unreachable, retrying…":
                        self.notice = ""
                    self._apply_task(task)
                    if outputs is not None:
                        self.outputs = []  # the server's outputs are already folded (clears applied)
                        for out in outputs:
                            self._add_output({"output": out})
                        self._outputs_version += 1
                    if metrics:
                        samples = metrics.get("samples") or []
                        self.samples = deque(samples[-600:], maxlen=600)
                        if samples:
                            self.metrics["cpu_now"] = samples[-1].get("cpu")
                            self.metrics["rss_now"] = samples[-1].get("rss")
                    self.last_seq = max(self.last_seq, last_event)
                    self._render()
                if terminal:
                    with self._lock:
                        self.mode = "done"
                        self.done_event.set()
                    return
            await asyncio.sleep(min(self.poll_interval * (1 + failures), 30.0))

    # ------------------------------------------------------------------ misc

    def _safe_name(self) -> str:
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", str(self.task.get("name") or "task")).strip("-.")[:40] or "task"
        name = name.removesuffix(".ipynb")
        return f"{name}-{self.task_id[:8]}.executed.ipynb"

    def _default_notebook_path(self) -> str:
        """Next to the notebook this kernel belongs to (``JPY_SESSION_NAME``), else the server root."""
        folder = ""
        session = os.environ.get("JPY_SESSION_NAME") or ""
        root = getattr(self.client, "server_root", None)
        if session:
            if os.path.isabs(session):
                if root:
                    try:
                        rel = os.path.relpath(os.path.dirname(session), root)
                    except ValueError:
                        rel = ".."
                    folder = "" if rel.startswith("..") or rel == "." else rel
            else:
                folder = os.path.dirname(session)
        folder = folder.replace(os.sep, "/").strip("/")
        return f"{folder}/{self._safe_name()}" if folder else self._safe_name()

    def __repr__(self) -> str:
        return f"<TaskPanel {self.task_id[:8]} {self.status}>"


def _quote(part: str) -> str:
    import urllib.parse

    return urllib.parse.quote(part, safe="")


def _short_error(e: BaseException) -> str:
    text = getattr(e, "message", None) or str(e) or type(e).__name__
    return text.splitlines()[0][:300]


# ---------------------------------------------------------------------------
# TaskListPanel
# ---------------------------------------------------------------------------


class TaskListPanel(widgets.VBox):
    """Recent tasks with live statuses (from the global ``/taskrun/api/events`` feed).

    Pick a task in the drop-down and press *Open* to show its ``TaskPanel`` below.
    ``apply_change(change)`` folds one change-feed item in (used by the live thread and tests).
    """

    def __init__(
        self,
        client: Any = None,
        *,
        limit: int = 20,
        status: str | None = None,
        tag: str | None = None,
        start: bool = True,
        transport: str = "auto",
        poll_interval: float = 2.0,
        render_interval: float = 0.25,
        **kwargs: Any,
    ):
        self.client, self._aclient = _sync_and_async_clients(client)
        self.limit = limit
        self.filter_status = status
        self.filter_tag = tag
        self.transport = transport
        self.poll_interval = poll_interval
        self.render_interval = render_interval
        self._lock = threading.RLock()
        self.tasks: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []  # newest first
        self.counts: dict[str, Any] = {}
        self.mode = "idle"
        self.mode_detail = ""
        self.render_count = 0
        self._render_handle: asyncio.Handle | None = None
        self._last_render = 0.0
        self._future: concurrent.futures.Future | None = None
        self._closed = False
        self.panels: dict[str, TaskPanel] = {}

        self.header = widgets.HTML()
        self.header.add_class("taskrun-list-header")
        self.table = widgets.HTML(layout=widgets.Layout(width="100%"))
        self.table.add_class("taskrun-list")
        self.picker = widgets.Dropdown(options=[], description="Task", layout=widgets.Layout(width="28em"))
        self.open_button = widgets.Button(description="Open", icon="external-link", layout=widgets.Layout(width="auto"))
        self.refresh_button = widgets.Button(description="Refresh", icon="refresh", layout=widgets.Layout(width="auto"))
        self.open_button.on_click(lambda _b: self.open_selected())
        self.refresh_button.on_click(lambda _b: self.reload())
        self.detail = widgets.VBox(layout=widgets.Layout(width="100%"))
        kwargs.setdefault(
            "layout", widgets.Layout(width="100%", padding="6px 10px", border="1px solid var(--jp-border-color2, #ddd)", grid_gap="6px")
        )
        super().__init__(
            [self.header, self.table,
             widgets.HBox([self.picker, self.open_button, self.refresh_button], layout=widgets.Layout(grid_gap="6px", align_items="center")),
             self.detail],
            **kwargs,
        )
        self.add_class("taskrun-list-panel")
        self.reload(render=False)
        self._render()
        if start:
            self.start()

    def __repr__(self) -> str:
        return f"<TaskListPanel {len(self.order)} tasks>"

    # -- data ------------------------------------------------------------------

    def reload(self, *, render: bool = True) -> None:
        """Re-read the recent tasks and the server's counts."""
        page = self.client.list(status=self.filter_status, tag=self.filter_tag, limit=self.limit)
        try:
            counts = self.client.status()
        except Exception:  # noqa: BLE001
            counts = {}
        with self._lock:
            self.tasks = {t["id"]: t for t in page.get("tasks", [])}
            self.order = [t["id"] for t in page.get("tasks", [])]
            self.counts = counts
            if render:
                self._render()

    def _matches(self, task: dict[str, Any]) -> bool:
        if self.filter_status and task.get("status") != self.filter_status:
            return False
        return not (self.filter_tag and self.filter_tag not in (task.get("tags") or []))

    def _ingest(self, change: dict[str, Any]) -> None:
        kind = change.get("type")
        task_id = change.get("task_id")
        data = change.get("data") or {}
        if not task_id:
            return
        if kind in ("created", "status") and isinstance(data, dict) and data.get("id"):
            if not self._matches(data):
                if task_id in self.tasks:
                    self.tasks.pop(task_id, None)
                    self.order.remove(task_id)
                return
            known = task_id in self.tasks
            self.tasks[task_id] = {**self.tasks.get(task_id, {}), **data}
            if not known:
                self.order.insert(0, task_id)
                for old in self.order[self.limit :]:
                    self.tasks.pop(old, None)
                del self.order[self.limit :]
            if kind == "status" or not known:
                self._counts_stale = True  # exact counts: GET /status, refreshed by the live loop
        elif kind == "progress" and task_id in self.tasks:
            progress = data.get("progress") if "progress" in data else data
            self.tasks[task_id]["progress"] = progress
        elif kind == "deleted" and task_id in self.tasks:
            self.tasks.pop(task_id, None)
            self.order.remove(task_id)

    _counts_stale = False

    def apply_change(self, change: dict[str, Any]) -> None:
        """Fold one change of the global feed in and render now."""
        with self._lock:
            self._ingest(change)
            self._render()

    # -- rendering -------------------------------------------------------------

    def _render(self) -> None:
        if self._closed:
            return
        self.render_count += 1
        self._last_render = time.monotonic()
        c = self.counts or {}
        live = {"stream": "● live", "poll": f"● polling every {self.poll_interval:g}s"}.get(self.mode, "")
        self.header.value = (
            '<div style="display:flex;gap:12px;align-items:baseline"><b style="font-size:13px">Tasks</b>'
            f'<span class="taskrun-counts" style="font-size:12px">{int(c.get("running") or 0)} running · '
            f'{int(c.get("queued") or 0)} queued'
            + (f' · capacity {c["capacity"]}' if c.get("capacity") is not None else "")
            + f'</span><span style="font-size:11px;color:#2e7d32">{live}</span></div>'
        )
        now = time.time()
        rows = []
        for task_id in self.order:
            t = self.tasks[task_id]
            status = t.get("status", "")
            p = t.get("progress") or {}
            prog = ""
            if p and p.get("total"):
                frac = max(0.0, min(1.0, float(p.get("value") or 0) / float(p["total"])))
                prog = (
                    '<div style="width:90px;height:7px;background:var(--jp-layout-color3,#ddd);border-radius:4px;display:inline-block">'
                    f'<div style="width:{frac * 100:.0f}%;height:100%;background:{STATUS_COLORS.get(status, "#1565c0")};border-radius:4px"></div></div>'
                    f' <span style="font-size:11px">{frac * 100:.0f}%</span>'
                )
            elif p:
                prog = f'<span style="font-size:11px">{html.escape(fmt_number(p.get("value")))}</span>'
            created = parse_time(t.get("created_at"))
            started, finished = parse_time(t.get("started_at")), parse_time(t.get("finished_at"))
            dur = (finished or now) - started if started else None
            rows.append(
                f'<tr data-task-id="{html.escape(task_id)}" data-status="{html.escape(status)}">'
                f'<td>{badge_html(status)}</td><td><b>{html.escape(str(t.get("name") or ""))[:80]}</b></td>'
                f'<td><code style="font-size:11px">{html.escape(task_id[:8])}</code></td><td>{prog}</td>'
                f'<td>{fmt_seconds(now - created) + " ago" if created else ""}</td><td>{fmt_seconds(dur) if dur is not None else ""}</td></tr>'
            )
        head = "".join(f'<th style="text-align:left;padding:2px 8px">{h}</th>' for h in ("status", "name", "id", "progress", "age", "duration"))
        body = "".join(rows) or '<tr><td colspan="6" style="opacity:.7;padding:4px 8px">no tasks yet</td></tr>'
        self.table.value = (
            '<table class="taskrun-table" style="border-collapse:collapse;font-size:12px;width:100%">'
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
            "<style>.taskrun-table td{padding:2px 8px;border-top:1px solid var(--jp-border-color2,#eee)}</style>"
        )
        options = [(f"{self.tasks[i].get('name', '')[:50]} · {i[:8]} · {self.tasks[i].get('status')}", i) for i in self.order]
        current = self.picker.value
        if [o[1] for o in self.picker.options] != [o[1] for o in options] or list(self.picker.options) != options:
            self.picker.options = options
            if current in self.tasks:
                self.picker.value = current

    def open_selected(self) -> TaskPanel | None:
        task_id = self.picker.value
        if not task_id:
            return None
        return self.open_task(task_id)

    def open_task(self, task_id: str) -> TaskPanel:
        """Show the live panel of one task below the list."""
        panel = self.panels.get(task_id)
        if panel is None:
            panel = TaskPanel(self.client, task_id, start=self._future is not None)
            self.panels[task_id] = panel
        self.detail.children = (panel,)
        return panel

    # -- background ------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._future is not None or self._closed:
                return
            self._bg = _BackgroundLoop.get()
            self._future = self._bg.submit(self._main())

    def stop(self) -> None:
        fut, self._future = getattr(self, "_future", None), None
        if fut is not None and not fut.done():
            fut.cancel()

    def close(self) -> None:
        if not hasattr(self, "_lock"):
            return super().close()
        self._closed = True
        self.stop()
        for panel in self.panels.values():
            panel.close()
        for w in (self.header, self.table, self.picker, self.open_button, self.refresh_button, self.detail):
            w.close()
        super().close()

    def _schedule_render(self) -> None:
        if self._render_handle is not None or self._closed:
            return
        delay = max(0.0, self._last_render + self.render_interval - time.monotonic())
        self._render_handle = asyncio.get_running_loop().call_later(delay, self._render_scheduled)

    def _render_scheduled(self) -> None:
        self._render_handle = None
        with self._lock:
            self._render()

    async def _refresh_counts(self) -> None:
        try:
            counts = await self._aclient.status()
        except Exception:  # noqa: BLE001
            return
        with self._lock:
            self.counts = counts
            self._counts_stale = False
            self._schedule_render()

    async def _main(self) -> None:
        ticker = asyncio.ensure_future(self._tick())
        try:
            if self.transport != "poll":
                try:
                    with self._lock:
                        self.mode = "stream"
                        self._render()
                    stream = self._aclient.stream_changes()
                    try:
                        # a change that happened between the first list and the stream opening is
                        # caught by re-listing once the stream is up
                        resync = asyncio.get_running_loop().call_later(1.0, lambda: asyncio.ensure_future(self._relist()))
                        async for change in stream:
                            with self._lock:
                                self._ingest(change)
                                self._schedule_render()
                            if self._counts_stale:
                                self._counts_stale = False
                                asyncio.ensure_future(self._refresh_counts())
                    finally:
                        resync.cancel()
                        await stream.aclose()
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # noqa: BLE001 - fall back to polling
                    self.mode_detail = f"change feed unavailable: {_short_error(e)}"
            with self._lock:
                self.mode = "poll"
                self._render()
            while True:
                await self._relist()
                await asyncio.sleep(self.poll_interval)
        finally:
            ticker.cancel()

    async def _relist(self) -> None:
        try:
            page = await self._aclient.list(status=self.filter_status, tag=self.filter_tag, limit=self.limit)
        except Exception:  # noqa: BLE001
            return
        with self._lock:
            for t in page.get("tasks", []):
                self.tasks[t["id"]] = t
            ids = [t["id"] for t in page.get("tasks", [])]
            extra = [i for i in self.order if i not in ids]
            self.order = (ids + extra)[: self.limit]
            self.tasks = {i: self.tasks[i] for i in self.order}
            self._schedule_render()
        await self._refresh_counts()

    async def _tick(self) -> None:
        """Ages and durations move on even when nothing happens."""
        while True:
            await asyncio.sleep(5.0)
            with self._lock:
                if self._render_handle is None:
                    self._render()
