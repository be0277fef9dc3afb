"""What a task's rich outputs look like now: its ``output`` and ``clear`` events folded.

One rule for every view (``GET …/outputs``, the widget panel, the Lab detail view
follow the same steps), and the same rule nbclient applies to the executed
notebook:

- an ``output`` event appends to its cell's outputs;
- an ``output`` event with ``update`` (``update_display_data``) replaces the data
  and metadata of every visible output carrying its ``display_id``, and is not
  shown on its own;
- a ``clear`` event empties its cell's outputs (the server emits it when nbclient
  clears: at once for ``clear_output()``, just before the next output for
  ``clear_output(wait=True)``), and later updates no longer reach what it removed.

Pure and cheap: no I/O, one pass.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def fold_outputs(events: Iterable[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """``(type, data)`` pairs in event order → the visible outputs, each with ``cell_index``
    (and ``display_id`` when it has one)."""
    cells: dict[Any, list[dict[str, Any]]] = {}
    for type, data in events:
        cell = data.get("cell_index")
        if type == "clear":
            cells.pop(cell, None)
            continue
        if type != "output":
            continue
        display_id = data.get("display_id")
        output = data.get("output") or {}
        if data.get("update"):
            if display_id:
                for outs in cells.values():
                    for shown in outs:
                        if shown.get("display_id") == display_id:
                            shown["data"] = dict(output.get("data") or {})
                            shown["metadata"] = dict(output.get("metadata") or {})
            continue
        shown = dict(output)
        shown["cell_index"] = cell
        if display_id:
            shown["display_id"] = display_id
        cells.setdefault(cell, []).append(shown)
    # cells in notebook order; None (outside any cell) last
    return [out for key in sorted(cells, key=lambda c: (c is None, c if c is not None else 0)) for out in cells[key]]
