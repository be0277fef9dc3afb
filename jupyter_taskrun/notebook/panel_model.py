"""What a panel knows about tasks, folded from the server's events: the pure model of the panels.

``TaskPanelModel`` folds one task's events (``status``, ``log``, ``output``, ``clear``,
``progress``, ``metrics``, ``cell``, ``result``, ``value``, ``truncated``, ``end``) and task objects (the
first fetch, polling, the final refresh) into plain state; ``TaskListModel`` folds the global
change feed into the list of recent tasks. ``TaskPanel`` and ``TaskListPanel`` render these.

Guarantees: no ipywidgets, no I/O, no threads, no clock unless a method is given none (``now``);
folding the same events in the same order always gives the same state. Replayed events (a
``seq`` already seen, after a reconnect) are ignored, so nothing is counted twice. A terminal
status is never overwritten by a non-terminal one. Outputs fold by the rule of
``execution/outputs.py`` (the one every view follows): appended to their cell, ``update`` replaces
the data of the shown outputs with its ``display_id``, ``clear`` empties its cell. The server
emits ``clear`` when nbclient clears (at once for ``clear_output()``, before the next output for
``clear_output(wait=True)``), so the model needs no notion of waiting.
"""

from __future__ import annotations

import codecs
import time
from collections import deque
from datetime import datetime
from typing import Any

from ..formatting import strip_ansi
from ..models import TERMINAL_STATUSES

__all__ = ["ACTIVE", "TERMINAL", "LogBuffer", "TaskListModel", "TaskPanelModel", "parse_time"]

TERMINAL = frozenset(s.value for s in TERMINAL_STATUSES)
ACTIVE = frozenset({"queued", "running"})

WIDGET_VIEW_MIME = "application/vnd.jupyter.widget-view+json"
#: a progress widget's text stand-in (tqdm.auto's frozen "0%| 0/20"): not an output worth showing
_WIDGET_REPR_PREFIXES = ("HBox(", "VBox(", "FloatProgress(", "IntProgress(")
#: metrics samples kept for the sparkline (≥ 2/s: five minutes)
MAX_SAMPLES = 600
#: points kept per recorded series (the newest), for its chart
MAX_SERIES_POINTS = 1000
#: the ``variables_out`` name of the last expression's object: not one of the cell's ``--out`` results
RESULT_NAME = "@result"


def parse_time(value: Any) -> float | None:
    """ISO 8601 (``...Z``) → epoch seconds; None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _collapse_cr(text: str) -> str:
    """What a terminal shows of a line with carriage returns (keeps a trailing ``\\r``)."""
    if "\r" not in text:
        return text
    parts = [p for p in text.split("\r") if p]
    last = parts[-1] if parts else ""
    return last + ("\r" if text.endswith("\r") else "")


class LogBuffer:
    """The tail of a task's log as terminal-like lines tagged stdout/stderr, at most ``max_chars`` kept.

    Chunks of one stream are coalesced into lines (a line stays open until its ``\\n``), ``\\r``
    rewrites the open line (tqdm redraws), ANSI escapes are stripped; the oldest lines go first.
    """

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
        pieces = strip_ansi(text).split("\n")
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


def _clean_output(data: dict[str, Any]) -> dict[str, Any] | None:
    """An ``output`` event's output as a panel shows it, or None when it shows nothing.

    Errors are shown by the error view (with the traceback); widget views are dropped (their
    models live in the task kernel, not here), and so are bundles left with only a widget's
    text stand-in."""
    out = data.get("output")
    if not isinstance(out, dict) or out.get("output_type") == "error":
        return None
    out = {k: v for k, v in out.items() if k not in ("cell_index", "display_id")}
    if isinstance(out.get("data"), dict):
        bundle = out["data"]
        out["data"] = {k: v for k, v in bundle.items() if k != WIDGET_VIEW_MIME}
        if (
            not out["data"]
            or set(out["data"]) == {"text/plain"}
            and (WIDGET_VIEW_MIME in bundle or str(out["data"]["text/plain"]).startswith(_WIDGET_REPR_PREFIXES))
        ):
            return None
    if out.get("output_type") == "execute_result":
        out = {"output_type": "execute_result", "data": out.get("data", {}), "metadata": out.get("metadata", {}), "execution_count": None}
    return out


class TaskPanelModel:
    """One task as a panel shows it. ``apply_event`` / ``apply_task`` fold, the rest reads."""

    def __init__(self, task: dict[str, Any], *, max_log_chars: int = 50_000, max_outputs: int = 100):
        self.task_id: str = task["id"]
        self.task: dict[str, Any] = dict(task)
        self.status: str = task.get("status", "queued")
        self.last_seq = 0
        self.events_seen = 0
        self.log_buffer = LogBuffer(max_log_chars)
        #: bytes of each stream received, where polling ``…/logs?offset=`` would continue
        self.log_offsets: dict[str, int] = {"stdout": 0, "stderr": 0}
        self._log_decoders: dict[str, Any] = {}
        self.max_outputs = max_outputs
        self.outputs: list[dict[str, Any]] = []
        #: bumped whenever ``outputs`` changes (views re-render outputs only then)
        self.outputs_version = 0
        self._output_serial = 0
        self.samples: deque[dict[str, Any]] = deque(maxlen=MAX_SAMPLES)
        self.metrics: dict[str, Any] = {}
        self.progress: dict[str, Any] | None = None
        self._progress_first: tuple[float, float] | None = None
        self._progress_last: tuple[float, float] | None = None
        self.error: dict[str, Any] | None = None
        self.reason: str | None = None
        self.result: dict[str, Any] | None = None
        self.cell_index: int | None = None
        self.truncated: str | None = None
        #: ``record()``ed values: the latest per name (first-recorded order) and each name's points
        self.values: dict[str, Any] = {}
        self.series: dict[str, deque[tuple[Any, Any]]] = {}
        #: bumped whenever ``values`` or ``series`` change (views re-render the cards only then)
        self.values_version = 0
        #: ``GET …/variables`` once the task completed (what ``--out`` sent back); None: not known
        self.variables: dict[str, Any] | None = None
        self.apply_task(task)

    # -- reading -----------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    @property
    def caught_up(self) -> bool:
        """Finished, and every event the server has for it was seen: nothing left to follow."""
        return self.done and bool(self.last_seq) and self.last_seq >= int(self.task.get("last_event_id") or 0)

    @property
    def exit_code(self) -> int | None:
        code = self.task.get("exit_code")
        return code if isinstance(code, int) and not isinstance(code, bool) else None

    def elapsed(self, now: float | None = None) -> tuple[str, float | None]:
        """(``waiting`` | ``running`` | ``took`` | ``""``, seconds): the header's clock."""
        now = time.time() if now is None else now
        started = parse_time(self.task.get("started_at"))
        finished = parse_time(self.task.get("finished_at"))
        if self.status == "queued" or started is None:
            created = parse_time(self.task.get("created_at"))
            if self.done:
                return "", None
            return "waiting", (now - created) if created else None
        if finished is not None and self.done:
            wall = self.metrics.get("wall")
            return "took", float(wall) if isinstance(wall, (int, float)) else finished - started
        return "running", now - started

    def eta(self, now: float | None = None) -> float | None:
        """Seconds left at the rate progress moved since its first event; None when unknown."""
        p = self.progress
        if not p or self.status != "running" or not p.get("total"):
            return None
        first, last = self._progress_first, self._progress_last
        if not first or not last or last[1] <= first[1] or last[0] <= first[0]:
            return None
        rate = (last[1] - first[1]) / (last[0] - first[0])
        remaining = (float(p["total"]) - last[1]) / rate
        now = time.time() if now is None else now
        # time since the last update already counts towards the remaining time
        return max(0.0, remaining - max(0.0, now - last[0]))

    # -- folding -----------------------------------------------------------------

    def _set_status(self, status: Any) -> None:
        if status and not (self.status in TERMINAL and status not in TERMINAL):
            self.status = status

    def apply_task(self, task: dict[str, Any]) -> None:
        """Take what a task object says (initial fetch, polling, final refresh)."""
        self.task = dict(task)
        self._set_status(task.get("status"))
        if task.get("progress"):
            self._set_progress(task["progress"], None)
        if task.get("error"):
            self.error = task["error"]
            self.reason = task["error"].get("reason") or self.reason
        if task.get("result"):
            self.result = task["result"]
        latest = task.get("values")
        if isinstance(latest, dict) and any(self.values.get(k, self) != v for k, v in latest.items()):
            self.values.update(latest)
            self.values_version += 1
        metrics = task.get("metrics") or {}
        self.metrics.update({k: v for k, v in metrics.items() if v is not None})

    def _set_progress(self, data: dict[str, Any], when: float | None) -> None:
        """``when`` is the event's time (for the ETA); None for a task object's progress."""
        value = data.get("value")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return
        self.progress = {"value": value, "total": data.get("total"), "message": data.get("message") or ""}
        if when is not None:
            if self._progress_first is None or value < self._progress_first[1]:
                self._progress_first = (when, float(value))
            self._progress_last = (when, float(value))

    def apply_event(self, ev: dict[str, Any]) -> bool:
        """Fold one event (as ``stream_events`` yields it); False when it was already seen."""
        seq = ev.get("seq")
        if isinstance(seq, int):
            if seq <= self.last_seq:
                return False  # a replay after a reconnect
            self.last_seq = seq
        self.events_seen += 1
        etype = ev.get("type")
        data = ev.get("data") or {}
        if etype == "status":
            self._apply_status(data, ev.get("time"))
        elif etype == "log":
            stream, text = data.get("stream", "stdout"), data.get("text", "")
            self.log_buffer.feed(stream, text)
            if stream in self.log_offsets:
                self.log_offsets[stream] += len(text.encode("utf-8", "replace"))
        elif etype == "output":
            self.add_output(data)
        elif etype == "clear":
            self.clear_outputs(data.get("cell_index"))
        elif etype == "progress":
            self._set_progress(data, parse_time(ev.get("time")) or time.time())
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
        elif etype == "value":
            self.add_value(data)
        elif etype == "truncated":
            self.truncated = data.get("message") or "output truncated"
        elif etype == "end" and data.get("status") in TERMINAL:
            self.status = data["status"]
        return True

    def _apply_status(self, data: dict[str, Any], when: Any) -> None:
        status = data.get("status")
        self._set_status(status)
        if status == "running" and not self.task.get("started_at"):
            self.task["started_at"] = when
        if "exit_code" in data:
            self.task["exit_code"] = data["exit_code"]
        if status in TERMINAL:
            if not self.task.get("finished_at"):
                self.task["finished_at"] = when
            self.reason = data.get("reason") or self.reason
            if data.get("error"):
                self.error = data["error"]
            self.cell_index = None

    def add_value(self, data: dict[str, Any]) -> None:
        """One ``value`` event (``record(name, value, step=)``): the latest, and a point of its series."""
        name = data.get("name")
        if not isinstance(name, str) or not name:
            return
        self.values[name] = data.get("value")
        self.series.setdefault(name, deque(maxlen=MAX_SERIES_POINTS)).append((data.get("step"), data.get("value")))
        self.values_version += 1

    def replace_values(self, body: dict[str, Any]) -> None:
        """The server's recordings (``GET …/values``: ``values`` and every point of each ``series``) replace ours."""
        self.values = dict(body.get("values") or {})
        self.series = {
            str(name): deque(((p.get("step"), p.get("value")) for p in points if isinstance(p, dict)), maxlen=MAX_SERIES_POINTS)
            for name, points in (body.get("series") or {}).items()
        }
        self.values_version += 1

    def results(self) -> tuple[list[str], dict[str, str]]:
        """What ``--out`` sent back: (names ready to load, {name: why not}); both empty until known."""
        listing = self.variables or {}
        ready: list[str] = []
        failed: dict[str, str] = {}
        for entry in listing.get("variables") or []:
            name = entry.get("name")
            if not isinstance(name, str) or name == RESULT_NAME:
                continue
            if entry.get("error"):
                failed[name] = str(entry["error"])
            else:
                ready.append(name)
        return ready, failed

    def add_output(self, data: dict[str, Any]) -> None:
        """One ``output`` event's data (or ``{"output": o}`` for one of ``GET …/outputs``) folded in."""
        out = _clean_output(data)
        if out is None:
            return
        raw = data.get("output") or {}
        display_id = data.get("display_id") or raw.get("display_id")
        if data.get("update"):
            if not display_id:
                return
            for i, shown in enumerate(self.outputs):
                if shown.get("display_id") == display_id:
                    self.outputs[i] = {**shown, "data": dict(out.get("data") or {}), "metadata": dict(out.get("metadata") or {})}
                    self.outputs_version += 1
            return  # an update of a display never seen (or no longer shown) is not shown on its own
        out["cell_index"] = data.get("cell_index", raw.get("cell_index"))
        if display_id:
            out["display_id"] = display_id
        self._output_serial += 1
        out["_key"] = self._output_serial  # identifies it across display updates (keeps its widget)
        self.outputs.append(out)
        if len(self.outputs) > self.max_outputs:
            del self.outputs[: len(self.outputs) - self.max_outputs]
        self.outputs_version += 1

    def clear_outputs(self, cell: Any) -> None:
        """A ``clear`` event: the cell's shown outputs go (the log keeps everything)."""
        kept = [o for o in self.outputs if o.get("cell_index") != cell]
        if len(kept) != len(self.outputs):
            self.outputs = kept
            self.outputs_version += 1

    def replace_outputs(self, outputs: list[dict[str, Any]]) -> None:
        """The server's folded outputs (``GET …/outputs``, clears already applied) replace ours."""
        self.outputs = []
        for out in outputs:
            self.add_output({"output": out})
        self.outputs_version += 1

    def add_log_bytes(self, stream: str, data: bytes) -> None:
        """Log bytes read from ``…/logs?offset=`` (polling): decoded across chunk boundaries."""
        if not data:
            return
        self.log_offsets[stream] = self.log_offsets.get(stream, 0) + len(data)
        decoder = self._log_decoders.setdefault(stream, codecs.getincrementaldecoder("utf-8")("replace"))
        self.log_buffer.feed(stream, decoder.decode(data))

    def replace_samples(self, samples: list[dict[str, Any]]) -> None:
        """The server's metrics samples (``GET …/metrics``) replace ours."""
        self.samples = deque(samples[-MAX_SAMPLES:], maxlen=MAX_SAMPLES)
        if samples:
            self.metrics["cpu_now"] = samples[-1].get("cpu")
            self.metrics["rss_now"] = samples[-1].get("rss")


class TaskListModel:
    """Recent tasks (newest first, at most ``limit``) and the server's counts, kept by the change feed."""

    def __init__(self, *, limit: int = 20, status: str | None = None, tag: str | None = None):
        self.limit = limit
        self.filter_status = status
        self.filter_tag = tag
        self.tasks: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []  # newest first
        self.counts: dict[str, Any] = {}
        #: the exact counts changed (a status moved): ask ``GET /status`` again
        self.counts_stale = False

    def load(self, page: dict[str, Any], counts: dict[str, Any]) -> None:
        """A fresh list page and the server's counts."""
        tasks = page.get("tasks", [])
        self.tasks = {t["id"]: t for t in tasks}
        self.order = [t["id"] for t in tasks]
        self.counts = counts

    def set_counts(self, counts: dict[str, Any]) -> None:
        self.counts = counts
        self.counts_stale = False

    def matches(self, task: dict[str, Any]) -> bool:
        if self.filter_status and task.get("status") != self.filter_status:
            return False
        return not (self.filter_tag and self.filter_tag not in (task.get("tags") or []))

    def _remove(self, task_id: str) -> None:
        if task_id in self.tasks:
            self.tasks.pop(task_id)
            self.order.remove(task_id)

    def apply_change(self, change: dict[str, Any]) -> None:
        """Fold one item of the global change feed (``created``, ``status``, ``progress``, ``deleted``)."""
        kind, task_id, data = change.get("type"), change.get("task_id"), change.get("data") or {}
        if not task_id:
            return
        if kind in ("created", "status") and isinstance(data, dict) and data.get("id"):
            if not self.matches(data):
                self._remove(task_id)
                return
            known = task_id in self.tasks
            self.tasks[task_id] = {**self.tasks.get(task_id, {}), **data}
            if not known:
                self.order.insert(0, task_id)
                for old in self.order[self.limit :]:
                    self.tasks.pop(old, None)
                del self.order[self.limit :]
            if kind == "status" or not known:
                self.counts_stale = True
        elif kind == "progress" and task_id in self.tasks:
            self.tasks[task_id]["progress"] = data.get("progress") if "progress" in data else data
        elif kind == "deleted":
            self._remove(task_id)

    def merge_page(self, page: dict[str, Any]) -> None:
        """A re-listed page (polling, or after the feed opened): its tasks first, then ones it missed."""
        for t in page.get("tasks", []):
            self.tasks[t["id"]] = t
        ids = [t["id"] for t in page.get("tasks", [])]
        self.order = (ids + [i for i in self.order if i not in ids])[: self.limit]
        self.tasks = {i: self.tasks[i] for i in self.order}
