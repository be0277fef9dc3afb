"""One convention for what every view prints: durations, byte sizes, the executed-notebook file
name and ANSI stripping (docs/API_CONTRACT.md, "Conventions").

Guarantees: pure functions, no I/O, importable from every side (server, client, notebook, CLI).
``labextension/src/format.ts`` implements the same rules; tests/test_formatting.py pins both to the
same table of examples, so the CLI, the notebook panel and JupyterLab never disagree.
"""

from __future__ import annotations

import re

__all__ = ["ANSI_ESCAPE", "EMPTY", "executed_notebook_name", "format_bytes", "format_duration", "strip_ansi"]

#: shown for a value that is not known (yet)
EMPTY = "—"

#: CSI sequences (colours, cursor moves), OSC sequences (window titles, hyperlinks) and two-byte escapes
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")

_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def strip_ansi(text: str) -> str:
    """``text`` without terminal escape sequences."""
    return ANSI_ESCAPE.sub("", text)


def format_duration(seconds: float | None) -> str:
    """350 ms · 4.2 s · 42 s · 1 min 05 s · 2 h 05 min · 3 d 4 h (negative counts as 0)."""
    if seconds is None or seconds != seconds:  # None or NaN
        return EMPTY
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


def format_bytes(n: float | None) -> str:
    """IEC units: 512 B · 1.5 KiB · 12.3 MiB · 120 GiB (one decimal below 100)."""
    if n is None or isinstance(n, bool) or not isinstance(n, (int, float)) or n != n:
        return EMPTY
    value = float(n)
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    unit = 0
    while abs(value) >= 1024 and unit < len(units) - 1:
        value /= 1024
        unit += 1
    if unit == 0 or abs(value) >= 100:
        return f"{value:.0f} {units[unit]}"
    return f"{value:.1f} {units[unit]}"


def executed_notebook_name(task_name: str | None, task_id: str) -> str:
    """``<stem>-<first 8 of id>.executed.ipynb``: the stem is the task name's last path part without
    its extension, reduced to ``[A-Za-z0-9._-]`` (40 characters at most, ``task`` when empty)."""
    base = str(task_name or "").replace("\\", "/").rsplit("/", 1)[-1]
    stem = base.rsplit(".", 1)[0] if base.lower().endswith((".ipynb", ".py")) else base
    stem = _UNSAFE_NAME.sub("-", stem).strip("-.")[:40].strip("-.") or "task"
    return f"{stem}-{task_id[:8]}.executed.ipynb"
