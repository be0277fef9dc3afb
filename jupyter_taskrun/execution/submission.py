"""Turn a submission into the notebook that will run: one builder for every source kind.

Files are read by the server when the task starts (so a rerun runs the file's
current content), and the built notebook travels to whichever executor runs it
- a Dask worker on another machine never needs the server's file system.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
from collections.abc import Callable
from typing import Any

import nbformat
from nbformat import NotebookNode
from nbformat.corpus.words import generate_corpus_id as random_cell_id

from ..errors import InvalidSubmission, PathNotAllowed, PathNotFound
from ..models import TaskSubmission

INJECTED_TAG = "injected-parameters"
PARAMETERS_TAG = "parameters"


def _code_cell(source: str) -> NotebookNode:
    """``new_code_cell`` without its per-cell schema validation: the source is a checked string,
    and validating thousands of cells holds the GIL long enough to stall the server's loop."""
    return NotebookNode(id=random_cell_id(), cell_type="code", metadata=NotebookNode(), execution_count=None, source=source, outputs=[])


def _notebook(cells: list[NotebookNode]) -> NotebookNode:
    """``new_notebook`` without its whole-notebook validation (same reason as ``_code_cell``)."""
    return NotebookNode(nbformat=4, nbformat_minor=5, metadata=NotebookNode(), cells=cells)


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
    """JSON value → Python source, as papermill's Python translator writes it."""
    if isinstance(value, str):
        return _escaped(value)
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(python_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_escaped(str(k))}: {python_literal(v)}" for k, v in value.items()) + "}"
    return repr(json.loads(json.dumps(value)))


def _escaped(value: str) -> str:
    """papermill's string rule for R and Julia: unicode_escape, then escaped double quotes."""
    return '"' + value.encode("unicode_escape").decode("utf-8").replace('"', r"\"") + '"'


def _r_literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, str):
        return _escaped(value)
    if isinstance(value, dict):
        return "list(" + ", ".join(f"{_escaped(str(k))} = {_r_literal(v)}" for k, v in value.items()) + ")"
    if isinstance(value, list):
        return "list(" + ", ".join(_r_literal(v) for v in value) + ")"
    return str(value)


def _julia_literal(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _escaped(value)
    if isinstance(value, dict):
        return "Dict(" + ", ".join(f"{_escaped(str(k))} => {_julia_literal(v)}" for k, v in value.items()) + ")"
    if isinstance(value, list):
        return "[" + ", ".join(_julia_literal(v) for v in value) + "]"
    return str(value)


def _bash_literal(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "(" + " ".join(_bash_literal(v) for v in value) + ")"
    if isinstance(value, dict):
        raise InvalidSubmission("a bash kernel cannot take an object as a parameter (papermill cannot either)")
    return shlex.quote(str(value))


def _r_name(name: str) -> str:
    return name.lstrip("_")  # papermill: leading '_' is not legal in R names


#: kernel language → (literal, assignment): papermill's translators for the languages it supports
TRANSLATORS: dict[str, tuple[Callable[[Any], str], Callable[[str, str], str]]] = {
    "python": (python_literal, lambda k, v: f"{k} = {v}"),
    "r": (_r_literal, lambda k, v: f"{_r_name(k)} = {v}"),
    "julia": (_julia_literal, lambda k, v: f"{k} = {v}"),
    "bash": (_bash_literal, lambda k, v: f"{k}={v}"),
}


def parameters_source(parameters: dict[str, Any], language: str = "python") -> str:
    """The injected cell's source in the kernel's language, as papermill writes it.

    Raises InvalidSubmission for a language papermill has no translator for: Python is
    never injected into another language's kernel.
    """
    translator = TRANSLATORS.get((language or "python").lower())
    if translator is None:
        known = ", ".join(sorted(TRANSLATORS))
        raise InvalidSubmission(f"parameters cannot be passed to a {language!r} kernel: parameters are translated for {known}")
    literal, assign = translator
    lines = ["# Parameters"] + [assign(k, literal(v)) for k, v in parameters.items()]
    return "\n".join(lines) + "\n"


def inject_parameters(nb: NotebookNode, parameters: dict[str, Any], language: str = "python") -> NotebookNode:
    """Insert a cell tagged ``injected-parameters`` after the ``parameters`` cell, else first.

    Like papermill, a previously injected cell is replaced rather than stacked.
    """
    if not parameters:
        return nb
    cell = _code_cell(parameters_source(parameters, language))
    cell.metadata["tags"] = [INJECTED_TAG]
    cells = [c for c in nb.cells if INJECTED_TAG not in c.get("metadata", {}).get("tags", [])]
    at = 0
    for i, c in enumerate(cells):
        if PARAMETERS_TAG in c.get("metadata", {}).get("tags", []):
            at = i + 1
            break
    cells.insert(at, cell)
    nb.cells = cells
    return nb


def normalize_notebook(value: Any, kernel_name: str, language: str = "python") -> NotebookNode:
    """Accept what Jupyter accepts: any notebook ``nbformat.read`` reads, made runnable.

    Upgraded to v4 (``nbformat.convert``), normalised (``nbformat.validator.normalize``:
    missing ids, stray properties), then every small deviation that real notebooks carry
    is repaired rather than refused: a missing or partial kernelspec is filled from the
    task's kernel, sources given as lists are joined, non-list tags dropped, unknown cell
    types dropped, stale outputs and execution counts cleared (nbclient replaces them too).
    Refused, with the reason: not JSON, not v4 after upgrade, no cell list.
    """
    if isinstance(value, (str, bytes)):
        try:
            value = json.loads(value)
        except ValueError as e:
            raise InvalidSubmission(f"not a notebook: not JSON ({e})") from None
    if not isinstance(value, dict):
        raise InvalidSubmission("not a notebook: a notebook is a JSON object")
    version = value.get("nbformat")
    if isinstance(version, bool) or not isinstance(version, int):
        raise InvalidSubmission("not a notebook: it has no 'nbformat' version number")
    if not isinstance(value.get("cells", value.get("worksheets")), list):
        raise InvalidSubmission("not a notebook: it has no list of 'cells'")
    try:
        nb = nbformat.convert(nbformat.from_dict(value), 4)
    except Exception as e:  # nbformat raises several types for what it cannot upgrade
        raise InvalidSubmission(f"not a runnable notebook: cannot upgrade it to nbformat v4 ({e})") from None
    if nb.get("nbformat") != 4 or not isinstance(nb.get("cells"), list):
        raise InvalidSubmission("not a runnable notebook: it is not nbformat v4 after upgrade")
    cells = []
    for raw in nb.cells:
        if not isinstance(raw, dict) or raw.get("cell_type") not in ("code", "markdown", "raw"):
            continue
        cell = nbformat.from_dict(raw)
        source = cell.get("source", "")
        if isinstance(source, list):
            source = "".join(str(s) for s in source)
        cell["source"] = source if isinstance(source, str) else ""
        metadata = cell.get("metadata")
        cell["metadata"] = metadata = metadata if isinstance(metadata, dict) else {}
        tags = metadata.get("tags")
        if tags is not None and not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
            del metadata["tags"]
        if cell.cell_type == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
        cells.append(cell)
    if not cells:
        raise InvalidSubmission("not a runnable notebook: it has no cells")
    nb.cells = cells
    metadata = nb.get("metadata")
    nb["metadata"] = metadata = nbformat.from_dict(metadata if isinstance(metadata, dict) else {})
    spec = metadata.get("kernelspec")
    spec = dict(spec) if isinstance(spec, dict) else {}
    spec.update({"name": kernel_name, "display_name": spec.get("display_name") or kernel_name})
    if not isinstance(spec.get("display_name"), str):
        spec["display_name"] = kernel_name
    spec.setdefault("language", language)
    metadata["kernelspec"] = spec
    with contextlib.suppress(Exception):
        _, normalized = nbformat.validator.normalize(nb, version=4, version_minor=nb.get("nbformat_minor", 5))
        nb = nbformat.from_dict(normalized)
    return nb


def build_notebook(sub: TaskSubmission, root_dir: str, kernel_name: str, language: str = "python") -> tuple[NotebookNode, dict[str, Any]]:
    """Return the notebook to run and the run context (cwd, script file, argv)."""
    context: dict[str, Any] = {"cwd": None, "file": None, "args": list(sub.args)}
    if sub.cwd is not None:
        context["cwd"] = resolve_path(root_dir, sub.cwd or ".", want_dir=True)
    if sub.code is not None:
        nb = _notebook([_code_cell(sub.code)])
    elif sub.cells is not None:
        nb = _notebook([_code_cell(src) for src in sub.cells])
    elif sub.notebook is not None:
        nb = normalize_notebook(sub.notebook, kernel_name, language)
    else:
        assert sub.path is not None
        full = resolve_path(root_dir, sub.path)
        if context["cwd"] is None:
            context["cwd"] = os.path.dirname(full)
        try:
            if full.endswith(".ipynb"):
                with open(full, "rb") as f:
                    nb = normalize_notebook(f.read(), kernel_name, language)
            else:
                with open(full, encoding="utf-8") as f:
                    nb = _notebook([_code_cell(f.read())])
                context["file"] = full
        except (OSError, UnicodeDecodeError, ValueError, nbformat.reader.NotJSONError) as e:
            raise InvalidSubmission(f"cannot read {sub.path!r}: {e}") from None
    if sub.code is not None or sub.cells is not None or context["file"]:
        nb.metadata["kernelspec"] = {"name": kernel_name, "display_name": kernel_name, "language": language}
    inject_parameters(nb, sub.parameters, language)
    return nb, context


def setup_code(context: dict[str, Any]) -> str | None:
    """Silent code run before the first cell: cwd, ``__file__`` and ``sys.argv`` for scripts."""
    lines = []
    if context.get("cwd"):
        lines.append(f"import os as __tro; __tro.chdir({context['cwd']!r}); del __tro")
    if context.get("file") or context.get("args"):
        argv = [context.get("file") or "-c", *context.get("args", [])]  # python FILE ARG... / python -c CODE ARG...
        lines.append(f"import sys as __trs; __trs.argv = {argv!r}; del __trs")
    if context.get("file"):
        lines.append(f"__file__ = {context['file']!r}")
        # python script.py prints no hint on sys.exit(); IPython's is for interactive users
        lines.append("import warnings as __trw; __trw.filterwarnings('ignore', 'To exit: use'); del __trw")
    return "\n".join(lines) or None
