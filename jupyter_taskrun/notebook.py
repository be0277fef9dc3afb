"""Turn a submission into the notebook that will run: one builder for every source kind.

Files are read by the server when the task starts (so a rerun runs the file's
current content), and the built notebook travels to whichever executor runs it
- a Dask worker on another machine never needs the server's file system.
"""

from __future__ import annotations

import json
import os
from typing import Any

import nbformat
from nbformat import NotebookNode
from nbformat.v4 import new_code_cell, new_notebook

from .errors import InvalidSubmission, PathNotAllowed, PathNotFound
from .models import TaskSubmission

INJECTED_TAG = "injected-parameters"
PARAMETERS_TAG = "parameters"


def resolve_path(root_dir: str, rel: str, *, must_exist: bool = True, want_dir: bool = False) -> str:
    """Resolve a server-relative path inside ``root_dir`` (symlinks included) or raise."""
    if rel is None:
        raise InvalidSubmission("path is required")
    if "\x00" in rel:
        raise InvalidSubmission("path must not contain NUL characters")
    if os.path.isabs(rel) or rel.startswith(("~",)):
        raise PathNotAllowed(f"{rel!r}: paths are relative to the server root")
    root = os.path.realpath(root_dir)
    full = os.path.realpath(os.path.join(root, rel))
    if full != root and not full.startswith(root + os.sep):
        raise PathNotAllowed(f"{rel!r} is outside the server root")
    if must_exist:
        if want_dir and not os.path.isdir(full):
            raise PathNotFound(f"no folder {rel!r} under the server root")
        if not want_dir and not os.path.isfile(full):
            raise PathNotFound(f"no file {rel!r} under the server root")
    return full


def python_literal(value: Any) -> str:
    """JSON value → Python source (papermill's translator for Python kernels)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(python_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{python_literal(k)}: {python_literal(v)}" for k, v in value.items()) + "}"
    return repr(json.loads(json.dumps(value)))


def inject_parameters(nb: NotebookNode, parameters: dict[str, Any]) -> NotebookNode:
    """Insert a cell tagged ``injected-parameters`` after the ``parameters`` cell, else first.

    Like papermill, a previously injected cell is replaced rather than stacked.
    """
    if not parameters:
        return nb
    lines = ["# Parameters"] + [f"{k} = {python_literal(v)}" for k, v in parameters.items()]
    cell = new_code_cell("\n".join(lines) + "\n", metadata={"tags": [INJECTED_TAG]})
    cells = [c for c in nb.cells if INJECTED_TAG not in c.get("metadata", {}).get("tags", [])]
    at = 0
    for i, c in enumerate(cells):
        if PARAMETERS_TAG in c.get("metadata", {}).get("tags", []):
            at = i + 1
            break
    cells.insert(at, cell)
    nb.cells = cells
    return nb


def build_notebook(sub: TaskSubmission, root_dir: str, kernel_name: str) -> tuple[NotebookNode, dict[str, Any]]:
    """Return the notebook to run and the run context (cwd, script file, argv)."""
    context: dict[str, Any] = {"cwd": None, "file": None}
    if sub.cwd is not None:
        context["cwd"] = resolve_path(root_dir, sub.cwd or ".", want_dir=True)
    if sub.code is not None:
        nb = new_notebook(cells=[new_code_cell(sub.code)])
    elif sub.cells is not None:
        nb = new_notebook(cells=[new_code_cell(src) for src in sub.cells])
    elif sub.notebook is not None:
        nb = nbformat.reads(json.dumps(sub.notebook), as_version=4)  # normalises list-of-lines sources
    else:
        assert sub.path is not None
        full = resolve_path(root_dir, sub.path)
        if context["cwd"] is None:
            context["cwd"] = os.path.dirname(full)
        try:
            if full.endswith(".ipynb"):
                nb = nbformat.read(full, as_version=4)
            else:
                with open(full, encoding="utf-8") as f:
                    nb = new_notebook(cells=[new_code_cell(f.read())])
                context["file"] = full
        except (OSError, UnicodeDecodeError, ValueError, nbformat.reader.NotJSONError) as e:
            raise InvalidSubmission(f"cannot read {sub.path!r}: {e}") from None
    nb.metadata.setdefault("kernelspec", {})
    nb.metadata["kernelspec"].update({"name": kernel_name, "display_name": kernel_name})
    inject_parameters(nb, sub.parameters)
    return nb, context


def setup_code(context: dict[str, Any]) -> str | None:
    """Silent code run before the first cell: cwd, ``__file__`` and ``sys.argv`` for scripts."""
    lines = []
    if context.get("cwd"):
        lines.append(f"import os as __tro; __tro.chdir({context['cwd']!r}); del __tro")
    if context.get("file"):
        lines.append(f"import sys as __trs; __trs.argv = [{context['file']!r}]; del __trs")
        lines.append(f"__file__ = {context['file']!r}")
    return "\n".join(lines) or None
