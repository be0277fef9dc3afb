"""Reading what a task kernel printed: tqdm bars, ``SystemExit`` codes, faulthandler reports.

Pure functions over text (no kernel, no I/O), shared by the runner on the server and on
Dask workers; fast unit tests cover them.
"""

from __future__ import annotations

import re
from typing import Any

# tqdm's text bar: "desc:  30%|███       | 3/10 [00:01<00:02, 2.9it/s]" (or "5it [..." without total)
_TQDM = re.compile(
    r"(?:(?P<desc>[^\r\n|]*?):\s*)?(?P<pct>\d+)%\|[^\r\n|]*\|\s*(?P<n>[\d.]+)(?P<nu>[kMGT]?)/(?P<total>[\d.]+)(?P<tu>[kMGT]?)\s*\["
)
_UNITS = {"": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


def parse_tqdm(text: str) -> dict[str, Any] | None:
    """The last tqdm bar state in a stderr chunk, or None."""
    last = None
    for m in _TQDM.finditer(text):
        last = m
    if last is None:
        return None
    n = float(last["n"]) * _UNITS[last["nu"]]
    total = float(last["total"]) * _UNITS[last["tu"]]
    desc = (last["desc"] or "").strip().lstrip("\r")
    return {"value": int(n) if n.is_integer() else n, "total": int(total) if total.is_integer() else total, "message": desc}


def system_exit_code(ename: str | None, evalue: str | None) -> int | None:
    """The exit status ``python`` would give for a cell's ``SystemExit``; None if it is not one.

    ``sys.exit()`` / ``sys.exit(0)`` / ``raise SystemExit`` → 0; ``sys.exit(3)`` → 3;
    ``sys.exit("message")`` → 1 (python prints the message and exits 1); an integer outside
    0-255 wraps as the OS wraps it (``sys.exit(256)`` → 0, ``sys.exit(-1)`` → 255).
    """
    if ename != "SystemExit":
        return None
    value = (evalue or "").strip()
    if value in ("", "0", "None", "False"):
        return 0
    if value == "True":
        return 1
    try:
        return int(value) % 256
    except ValueError:
        return 1


_FATAL = re.compile(r"^Fatal Python error: .*$", re.M)
_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+) in (?P<func>\S+)', re.M)


def crash_report(stderr: str) -> list[str]:
    """faulthandler's report in a dead kernel's stderr, as traceback lines; [] if none."""
    found = None
    for m in _FATAL.finditer(stderr):
        found = m
    if found is None:
        return []
    return [line for line in stderr[found.start() :].splitlines() if line.strip()][:200]


def crash_location(report: list[str]) -> str | None:
    """Where the crashing thread was: its innermost frame ('File "x.py", line 3 in f')."""
    current = False
    for line in report:
        if line.startswith("Current thread") or line.startswith("Thread") and "most recent call first" in line:
            current = line.startswith("Current thread")
            continue
        m = _FRAME.match(line)
        if m and current:
            return f'File "{m["file"]}", line {m["line"]} in {m["func"]}'
    for line in report:  # no thread marked current: the first frame shown
        m = _FRAME.match(line)
        if m:
            return f'File "{m["file"]}", line {m["line"]} in {m["func"]}'
    return None
