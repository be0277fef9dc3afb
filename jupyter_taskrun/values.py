"""Recorded values from inside a task: ``from jupyter_taskrun import record``.

``record("accuracy", 0.93)`` or ``record("loss", 0.41, step=12)`` (scrapbook's ``glue``, in
spirit): a value is any JSON value (numbers, strings, booleans, null, small lists and
objects) of at most ``MAX_VALUE_BYTES`` as JSON; values recorded under one name with a
``step`` form a series. Like ``progress()`` it sends one display message with a private
mimetype, which the runner turns into a ``value`` event and drops from the outputs.

Guarantees:

* cheap: one ``display`` call, no import beyond the standard library and IPython;
* a bad name, a value that is not strict JSON (NaN, infinity, sets, objects) or a value over
  the cap raises ``ValueError``/``TypeError`` *in the task*, naming the value and the reason;
  nothing is silently cut;
* outside a task kernel nothing is sent; the latest value per name is kept in this process
  (``recorded``), so code that records works unchanged in a plain notebook;
* the runner checks every message again (``check_value``): a kernel cannot store what
  ``record()`` would refuse.
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any

VALUE_MIME = "application/vnd.jupyter.taskrun.value+json"
#: set in every task kernel (see ``progress.TASK_KERNEL_ENV``)
_TASK_KERNEL_ENV = "JUPYTER_TASKRUN_KERNEL"

#: largest value, as compact JSON in UTF-8
MAX_VALUE_BYTES = 64 * 1024
#: most distinct names one task may record
MAX_VALUE_NAMES = 200
#: a name: letters, digits and ``_ . - /``, starting with a letter, digit or ``_``; at most 100 characters
#: (no quotes, commas or comparison signs: names appear in ``?sort=values.NAME`` and ``?where=``)
NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-/]{0,99}")

#: outside a task kernel: the latest value recorded per name in this process
recorded: dict[str, Any] = {}
_names: set[str] = set()


def _strict_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False, ensure_ascii=False)


def check_value(name: Any, value: Any, step: Any = None) -> str:
    """Raise ``ValueError``/``TypeError`` if this cannot be recorded; else the value as JSON."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"record(): name {name!r} is not valid: use 1-100 letters, digits and _ . - / (starting with a letter, digit or _)"
        )
    if step is not None and (isinstance(step, bool) or not isinstance(step, (int, float)) or not math.isfinite(step)):
        raise TypeError(f"record({name!r}): step must be a finite number or None, not {step!r}")
    try:
        text = _strict_json(value)
    except (TypeError, ValueError) as e:
        raise type(e)(f"record({name!r}): the value must be plain JSON with finite numbers: {e}") from None
    except RecursionError:
        raise ValueError(f"record({name!r}): the value is nested too deeply") from None
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError(f"record({name!r}): the value holds a string that is not valid Unicode") from None
    if size > MAX_VALUE_BYTES:
        raise ValueError(f"record({name!r}): the value is {size} bytes as JSON; at most {MAX_VALUE_BYTES} bytes may be recorded")
    return text


def record(name: str, value: Any, step: float | None = None) -> None:
    """Record ``value`` under ``name`` (with ``step``: one point of a series): ``record("loss", 0.41, step=12)``."""
    check_value(name, value, step)
    if name not in _names:
        if len(_names) >= MAX_VALUE_NAMES:
            raise ValueError(f"record({name!r}): a task may record at most {MAX_VALUE_NAMES} different names")
        _names.add(name)
    if not os.environ.get(_TASK_KERNEL_ENV):
        recorded[name] = value
        return
    try:
        from IPython.display import display
    except ImportError:  # a task kernel without IPython: keep it here, as outside a task
        recorded[name] = value
        return
    display({VALUE_MIME: {"name": name, "value": value, "step": step}}, raw=True)


def value_event(raw: Any) -> dict[str, Any] | None:
    """A ``value`` event's data from a display message's payload; None if it is not a valid one."""
    if not isinstance(raw, dict):
        return None
    name, value, step = raw.get("name"), raw.get("value"), raw.get("step")
    try:
        check_value(name, value, step)
    except (TypeError, ValueError):
        return None
    return {"name": name, "value": value, "step": step}
