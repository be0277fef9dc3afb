"""How ``jupyter taskrun`` puts things on a terminal: safe text, the views, and the live console.

* ``safe`` makes text from the server (names, tags, owners, errors) inert for a terminal;
  task logs are written raw, as the task printed them.
* ``show_lines``, ``list_lines`` and ``status_lines`` are pure: a task / tasks / the server's
  status in → lines of text out (durations and sizes by ``jupyter_taskrun.formatting``).
* ``Console`` writes a followed task's logs as they arrive, with the CLI's own progress bar on
  stderr; when the task draws its own bar (tqdm: lines rewritten with ``\\r``), that bar is the
  only one shown, and its line is never glued to the other stream's text.
"""

from __future__ import annotations

import re
import shutil
import time
from datetime import datetime, timezone
from typing import Any, TextIO

from .formatting import format_bytes, format_duration, strip_ansi
from .models import TaskStatus

#: C0 and C1 control characters and DEL: in a task name they could move the cursor, rewrite the
#: screen or the window title, or hide text (``\x1b]0;...``, ``\x1b[2J``, ``\r``)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_BUT_NEWLINE = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def safe(value: Any, *, newlines: bool = False) -> str:
    """Text from the server made inert for a terminal: control characters are shown escaped
    (``\\x1b``). Task logs are printed raw, as a terminal would."""
    text = "" if value is None else str(value)
    return (_CONTROL_BUT_NEWLINE if newlines else _CONTROL).sub(lambda m: f"\\x{ord(m.group()):02x}", text)


# ---------------------------------------------------------------------------
# Task facts
# ---------------------------------------------------------------------------


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def duration(task: dict[str, Any]) -> float | None:
    start = parse_time(task.get("started_at"))
    if start is None:
        return None
    end = parse_time(task.get("finished_at")) or datetime.now(timezone.utc)
    return max(0.0, (end - start).total_seconds())


def fmt_time(value: str | None) -> str:
    parsed = parse_time(value)
    if parsed is None:
        return "-"
    return parsed.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def is_terminal(status: str | None) -> bool:
    try:
        return TaskStatus(status).is_terminal
    except ValueError:
        return False


def exit_code(status: str | None, task_exit_code: int | None = None) -> int:
    """0 if it completed; a failed script's own exit status (as ``python FILE`` gives it); else 1."""
    if status == TaskStatus.COMPLETED.value:
        return 0
    if isinstance(task_exit_code, int) and 0 < task_exit_code < 256:
        return task_exit_code
    return 1


def error_line(task: dict[str, Any]) -> str:
    error = task.get("error") or {}
    parts = []
    if error.get("ename"):
        parts.append(f"{error['ename']}: {error.get('evalue', '')}".rstrip(": "))
    reason = str(error.get("reason") or "")
    if reason and reason not in " ".join(parts):
        parts.append(reason)
    return " — ".join(parts)


def summary(task: dict[str, Any]) -> str:
    """``task ID completed in 2.1 s`` / ``task ID failed in 1.0 s: ValueError: boom``."""
    status = task.get("status", "?")
    line = f"task {task.get('id')} {status}"
    took = duration(task)
    if took is not None and is_terminal(status):
        line += f" in {format_duration(took)}"
    if status != TaskStatus.COMPLETED.value:
        detail = error_line(task)
        if detail:
            line += f": {detail}"
    return safe(line)


def result_text(output: dict[str, Any]) -> str | None:
    data = output.get("data") or {}
    text = data.get("text/plain")
    if isinstance(text, list):
        text = "".join(text)
    if text is not None:
        return text
    if data:
        return "[" + ", ".join(sorted(data)) + "]"
    return None


# ---------------------------------------------------------------------------
# Views
# ---------------------------------------------------------------------------


def list_lines(tasks: list[dict[str, Any]]) -> list[str]:
    """A table: one row per task, under a header."""
    rows: list[tuple[str, ...]] = [("ID", "STATUS", "NAME", "OWNER", "CREATED", "DURATION", "TAGS")]
    for t in tasks:
        progress = t.get("progress") or {}
        status = t.get("status", "?")
        if status == "running" and isinstance(progress.get("total"), (int, float)) and progress["total"]:
            status += f" {100 * progress.get('value', 0) / progress['total']:.0f}%"
        rows.append(
            (
                str(t.get("id")),
                status,
                (t.get("name") or "")[:40],
                t.get("owner") or "",
                fmt_time(t.get("created_at")),
                format_duration(duration(t)),
                ",".join(t.get("tags") or []),
            )
        )
    rows = [tuple(safe(cell) for cell in r) for r in rows]  # names, tags, owners: no terminal escapes
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def show_lines(task: dict[str, Any]) -> list[str]:
    """``key: value`` lines, the keys aligned."""
    metrics = task.get("metrics") or {}
    source = task.get("source_kind", "?")
    if task.get("path"):
        source += f" {task['path']}"
    fields: list[tuple[str, Any]] = [
        ("id", task.get("id")),
        ("name", task.get("name")),
        ("status", task.get("status")),
        ("owner", task.get("owner")),
        ("kernel", task.get("kernel_name")),
        ("source", source),
        ("tags", ", ".join(task.get("tags") or []) or "-"),
        ("priority", task.get("priority")),
        ("created", fmt_time(task.get("created_at"))),
        ("started", fmt_time(task.get("started_at"))),
        ("finished", fmt_time(task.get("finished_at"))),
        ("duration", format_duration(duration(task))),
        ("exit code", "-" if task.get("exit_code") is None else task["exit_code"]),
    ]
    if task.get("queue_position") is not None:
        fields.append(("queue position", task["queue_position"]))
    if task.get("rerun_of"):
        fields.append(("rerun of", task["rerun_of"]))
    if task.get("worker"):
        fields.append(("worker", task["worker"]))
    progress = task.get("progress")
    if progress:
        total = progress.get("total")
        text = f"{progress.get('value')}" + (f"/{total}" if total is not None else "")
        if progress.get("message"):
            text += f" {progress['message']}"
        fields.append(("progress", text))
    if metrics:
        cpu = (metrics.get("cpu_user") or 0) + (metrics.get("cpu_system") or 0)
        fields.append(
            (
                "metrics",
                f"wall {format_duration(metrics.get('wall'))}, queue wait {format_duration(metrics.get('queue_wait'))}, "
                + f"kernel start {format_duration(metrics.get('kernel_start'))}, cpu {format_duration(cpu)}, "
                + f"peak rss {format_bytes(metrics.get('peak_rss'))}",
            )
        )
    if task.get("error"):
        fields.append(("error", error_line(task) or "-"))
    result = task.get("result")
    if result:
        shown = result_text(result)
        if shown is not None:
            fields.append(("result", shown))
    width = max(len(k) for k, _ in fields) + 1
    lines = []
    for key, value in fields:
        value = "-" if value is None or value == "" else safe(value, newlines=key == "result")
        lines.append(f"{key + ':':<{width}} {value}")
    return lines


def _plural(n: Any, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _kernels_line(status: dict[str, Any]) -> str:
    executor = status.get("executor") or {}
    kind = executor.get("kind", "?")
    if kind == "dask":
        where = executor.get("scheduler") or "?"
        state = "connected" if executor.get("connected") else f"not connected ({executor.get('error') or executor.get('status') or '?'})"
        text = f"on Dask workers at {where}, {state}"
        if executor.get("workers") is not None:
            text += f", {_plural(executor['workers'], 'worker')}"
        return text
    text = f"{_plural(status.get('running', 0), 'busy kernel')} ({kind} executor)"
    pool = executor.get("pool")
    if pool:
        text += f", {pool.get('ready', 0)} pre-started and ready (pool hits {pool.get('hits', 0)}, misses {pool.get('misses', 0)})"
    return text


#: the status keys the readable view explains; any other key is shown as ``key: value``
_EXPLAINED = {"version", "executor", "capacity", "running", "queued", "max_queued", "started", "paused", "streams", "store_writable"}


def status_lines(status: dict[str, Any], url: str | None = None) -> list[str]:
    """The server's task-runner status in words (``--json`` gives the object itself)."""
    if status.get("started") is False:
        runner = "not started yet: tasks wait"
    elif status.get("paused"):
        runner = "paused: queued tasks wait until it is resumed"
    else:
        runner = "running tasks"
    tasks = f"{status.get('running', '?')} running, {status.get('queued', '?')} queued"
    limits = f"runs {status.get('capacity', '?')} at once, queue holds {status.get('max_queued', '?')}"
    fields = [
        ("server", f"jupyter_taskrun {status.get('version', '?')}" + (f" at {url}" if url else "")),
        ("runner", runner),
        ("tasks", f"{tasks} ({limits})"),
        ("kernels", _kernels_line(status)),
    ]
    if "streams" in status:
        fields.append(("streams", f"{_plural(status['streams'], 'live event stream')}"))
    if "store_writable" in status:
        store = "writable" if status["store_writable"] else "NOT writable: new tasks are refused until it recovers"
        fields.append(("store", store))
    fields += [(key, value) for key, value in status.items() if key not in _EXPLAINED]
    width = max(len(k) for k, _ in fields) + 1
    return [safe(f"{key + ':':<{width}} {value}") for key, value in fields]


# ---------------------------------------------------------------------------
# Live follow: logs on stdout/stderr, a progress bar on stderr
# ---------------------------------------------------------------------------

#: a line rewritten in place: a carriage return not ending the line (tqdm and other text bars)
_REWRITE = re.compile(r"\r[^\n]")


class Console:
    """Writes task logs as they come, with a progress bar on stderr that stays out of their way.

    On a terminal the bar is one self-redrawing line, cleared before any log text and redrawn
    when the cursor is back at the start of a line; elsewhere progress is printed as plain lines
    (at most a few per second).

    When the task draws a bar itself (its log rewrites a line with ``\\r``, as tqdm does), the
    CLI draws none from then on: the task's bar is the one shown, once. The kernel flushes
    stdout and stderr separately, so text of one stream can arrive while the other stream's bar
    line is still open: that line is ended first (and the bar stream's own late newline dropped),
    so the two never share a line.
    """

    def __init__(self, out: TextIO, err: TextIO):
        self.out = out
        self.err = err
        self.tty = bool(getattr(err, "isatty", lambda: False)())
        self.at_line_start = True
        self.bar: str | None = None
        self.bar_shown = False
        #: the task's log rewrites lines itself (tqdm): the CLI's own bar is not shown
        self.task_draws_bar = False
        #: the stream whose last line is unfinished, and whether that line is a redrawn bar
        self._open_stream: str | None = None
        self._open_line_is_bar = False
        #: a stream whose bar line was ended here: its own next newline is dropped
        self._owed_newline: str | None = None
        self._ended_with_cr = False
        self._last_plain = ""
        self._last_plain_time = 0.0

    def _target(self, stream: str) -> TextIO:
        return self.err if stream == "stderr" else self.out

    def _clear_bar(self) -> None:
        if self.bar_shown:
            self.err.write("\r\x1b[K")
            self.err.flush()
            self.bar_shown = False

    def _draw_bar(self) -> None:
        if self.tty and self.bar and self.at_line_start and not self.task_draws_bar:
            width = shutil.get_terminal_size((80, 20)).columns
            self.err.write("\r\x1b[K" + self.bar[: max(10, width - 1)])
            self.err.flush()
            self.bar_shown = True

    def _end_bar_line_of_other_stream(self, stream: str) -> None:
        if self._open_stream is not None and self._open_stream != stream and self._open_line_is_bar:
            other = self._target(self._open_stream)
            other.write("\n")
            other.flush()
            self._owed_newline = self._open_stream
            self._open_stream, self._open_line_is_bar = None, False
            self.at_line_start = True

    def _note_bar(self, text: str) -> None:
        if _REWRITE.search(text) or (self._ended_with_cr and not text.startswith("\n")):
            self.task_draws_bar = True
            self.bar = None
        self._ended_with_cr = text.endswith("\r")

    def write(self, text: str, stream: str = "stdout") -> None:
        if not text:
            return
        self._clear_bar()
        self._note_bar(text)
        self._end_bar_line_of_other_stream(stream)
        if self._owed_newline == stream:
            self._owed_newline = None
            if text.startswith("\n"):
                text = text[1:]
                if not text:
                    self._draw_bar()
                    return
        if stream == "stderr" and not self.tty:
            text = strip_ansi(text)
        target = self._target(stream)
        target.write(text)
        target.flush()
        last_line = text.rsplit("\n", 1)[-1]
        if not last_line:
            self._open_stream, self._open_line_is_bar = None, False
        else:
            continued = "\n" not in text and self._open_stream == stream and self._open_line_is_bar
            self._open_stream, self._open_line_is_bar = stream, continued or "\r" in last_line
        self.at_line_start = text.endswith("\n")
        self._draw_bar()

    def line(self, text: str, stream: str = "stderr") -> None:
        """One line of the CLI's own, on a line of its own."""
        self._end_bar_line_of_other_stream(stream)
        if not self.at_line_start:
            text = "\n" + text
        owed, self._owed_newline = self._owed_newline, None  # that newline is the task's to drop, not ours
        self.write(text + "\n", stream)
        self._owed_newline = owed

    def progress(self, value: Any, total: Any, message: str = "") -> None:
        if self.task_draws_bar or not isinstance(value, (int, float)):
            return
        if isinstance(total, (int, float)) and total > 0:
            frac = max(0.0, min(1.0, value / total))
            width = 30
            filled = round(frac * width)
            bar = f"[{'#' * filled}{'.' * (width - filled)}] {frac * 100:3.0f}% {value:g}/{total:g}"
            done = value >= total
        else:
            bar = f"[{value:g}]"
            done = False
        if message:
            bar += f" {safe(message)}"
        if self.tty:
            self.bar = bar
            self._draw_bar()
            return
        now = time.monotonic()
        if bar != self._last_plain and (done or now - self._last_plain_time >= 0.25):
            self._last_plain, self._last_plain_time = bar, now
            self.line(f"progress: {bar}")

    def finish(self) -> None:
        self._clear_bar()
        self.bar = None
