"""``TaskResults``: what a task gives back besides its logs: recorded values, files, an HTML report.

Attached to the service as ``TaskRun.results``; the handlers (``handlers/results.py``) and the
dispatcher call it. Guarantees:

* values: ``record()`` messages arrive as ``value`` events (``values.py``, checked in the
  runner); the task carries the latest per name (``Task.values``), ``values(id)`` gives every
  recording in order; the list route sorts (``parse_sort``) and filters (``parse_where``) by
  them in SQL (``TaskStore.list_tasks``);
* files: a submission's ``inputs`` are checked at submission (under the server root, inside
  the task's cwd, existing; else 400 naming ``inputs[i]``); its ``outputs`` are collected where
  the task ran (``execution/artifacts.py``) and kept here, byte-identical, with a manifest of
  what was kept, refused (with the reason) and missing: one transaction, before the task's
  terminal status, announced by an ``artifacts`` event;
* HTML: the executed notebook through nbconvert's ``HTMLExporter`` in a thread, off the loop;
  ``no_input`` drops code and prompts, as ``jupyter nbconvert --no-input`` does.
"""

from __future__ import annotations

import asyncio
import json
import mimetypes
import os
import re
from typing import TYPE_CHECKING, Any

from ..errors import InvalidSubmission, PathNotAllowed, PathNotFound, TaskNotFound
from ..execution.artifacts import Caps, Collected, pattern_problem
from ..execution.submission import resolve_path
from ..models import EventType, Task, TaskSubmission, isotime
from ..values import NAME_PATTERN

if TYPE_CHECKING:
    from .service import TaskRun

#: artifact names in the store: the manifest, and each kept file under this prefix
MANIFEST = "files"
FILE_PREFIX = "file:"

_NAME = NAME_PATTERN.pattern
_SORT = re.compile(rf"(-?)values\.({_NAME})")
_CONDITION = re.compile(rf"values\.({_NAME}?)(?:(>=|<=|!=|=|>|<)(.*))?", re.DOTALL)


def parse_sort(raw: str | None) -> tuple[str, bool] | None:
    """``values.NAME`` (ascending) or ``-values.NAME`` (descending) → (name, descending)."""
    if raw is None or raw == "":
        return None
    m = _SORT.fullmatch(raw)
    if not m:
        raise InvalidSubmission(f"'sort' must be values.NAME or -values.NAME (a recorded value's name), not {raw[:100]!r}")
    return m.group(2), m.group(1) == "-"


def parse_where(raw: str | None) -> list[tuple[str, str, Any]]:
    """``values.acc>=0.9,values.model=resnet,values.loss``: every condition must hold.

    A right-hand side is read as JSON when it parses (numbers, true, false, null, "quoted"), else
    as a string; a bare ``values.NAME`` asks only that it was recorded."""
    if raw is None or raw == "":
        return []
    out: list[tuple[str, str, Any]] = []
    for part in raw.split(","):
        m = _CONDITION.fullmatch(part.strip())
        if not m or not NAME_PATTERN.fullmatch(m.group(1) or ""):
            raise InvalidSubmission(
                f"'where' takes conditions like values.accuracy>=0.9 (operators = != > >= < <=, comma-separated), not {part[:100]!r}"
            )
        name, op, text = m.group(1), m.group(2), m.group(3)
        if op is None:
            out.append((name, "exists", None))
            continue
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        if isinstance(value, (dict, list)) or (isinstance(value, float) and value != value):
            raise InvalidSubmission(f"'where': compare values.{name} with a number, a string, true, false or null")
        if (value is None or isinstance(value, bool)) and op not in ("=", "!="):
            raise InvalidSubmission(f"'where': values.{name} can only be = or != {json.dumps(value)}")
        if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
            value = float(value)  # past SQLite's INTEGER; SQLite's JSON reads such numbers as REAL too
        if isinstance(value, str) and len(value) > 1000:
            raise InvalidSubmission(f"'where': the value compared with values.{name} is longer than 1000 characters")
        out.append((name, op, value))
    return out


def export_html(nb: dict[str, Any], no_input: bool) -> str:
    """The notebook as a standalone HTML page (nbconvert's lab template)."""
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(exclude_input=no_input, exclude_input_prompt=no_input, exclude_output_prompt=no_input)
    body, _resources = exporter.from_notebook_node(nbformat.from_dict(nb))
    return body


def content_type(path: str) -> str:
    guessed, encoding = mimetypes.guess_type(path, strict=False)
    if guessed is None or encoding is not None:  # a .csv.gz is gzip bytes, not text/csv
        return "application/octet-stream"
    return guessed


class TaskResults:
    """Values, files and HTML of the service's tasks (``TaskRun.results``)."""

    def __init__(self, service: TaskRun):
        self.service = service

    # -- submissions and jobs ------------------------------------------------------

    def task_cwd(self, sub: TaskSubmission) -> str:
        """The task's working folder on the server, as ``build_notebook`` will choose it."""
        root = self.service.root_dir
        if sub.cwd is not None:
            return resolve_path(root, sub.cwd or ".", want_dir=True)
        if sub.path is not None:
            return os.path.dirname(resolve_path(root, sub.path))
        return root

    def check(self, sub: TaskSubmission) -> None:
        """``inputs`` exist under the root and inside the task's cwd; ``outputs`` are contained."""
        for i, pattern in enumerate(sub.outputs):
            problem = pattern_problem(pattern)
            if problem:
                raise InvalidSubmission(f"'outputs[{i}]' {problem}")
        if not sub.inputs:
            return
        cwd = self.task_cwd(sub)
        for i, rel in enumerate(sub.inputs):
            try:
                full = resolve_path(self.service.root_dir, rel, must_exist=False)
            except InvalidSubmission as e:
                raise type(e)(f"'inputs[{i}]': {e}") from None
            if not os.path.exists(full):
                raise PathNotFound(f"'inputs[{i}]': no file or folder {rel!r} under the server root")
            if full != cwd and not full.startswith(cwd.rstrip(os.sep) + os.sep):
                raise PathNotAllowed(f"'inputs[{i}]': {rel!r} is not inside the task's working folder")

    def job_fields(self, sub: TaskSubmission, context: dict[str, Any]) -> dict[str, Any]:
        """The ``TaskJob`` fields of a task's files (inputs made relative to its cwd)."""
        s = self.service
        cwd = context.get("cwd") or s.root_dir
        inputs = [os.path.relpath(resolve_path(s.root_dir, rel, must_exist=False), cwd) for rel in sub.inputs]
        return {
            "outputs": list(sub.outputs),
            "artifact_caps": Caps(per_file=s.max_artifact_bytes, per_task=s.max_task_artifact_bytes, files=s.max_artifacts),
            "inputs": inputs,
            "max_staged_input_bytes": s.max_staged_input_bytes,
        }

    def keep_artifacts(self, task: Task, collected: Collected | None) -> None:
        """Store what the task's ``outputs`` collected (one transaction), then say so in an event."""
        if collected is None:
            return
        manifest = collected.manifest()
        store = self.service.store
        with store.transaction():
            for path, data in collected.contents.items():
                store.put_artifact(task.id, FILE_PREFIX + path, data)
            store.put_artifact(task.id, MANIFEST, json.dumps(manifest).encode("utf-8"))
        self.service.recorder.emit(task, EventType.ARTIFACTS, manifest)

    # -- views ---------------------------------------------------------------------

    def values(self, task_id: str) -> dict[str, Any]:
        """The latest value per name and every recording per name, in the order recorded."""
        task = self.service.get(task_id)
        self.service.recorder.flush()
        series: dict[str, list[dict[str, Any]]] = {}
        for ev in self.service.store.iter_events(task_id, (EventType.VALUE.value,)):
            data = ev.data
            point = {"value": data.get("value"), "step": data.get("step"), "time": isotime(ev.time), "seq": ev.seq}
            series.setdefault(str(data.get("name")), []).append(point)
        return {"task_id": task.id, "values": dict(task.values), "series": series}

    def files(self, task_id: str) -> dict[str, Any]:
        task = self.service.get(task_id)
        blob = self.service.store.get_artifact(task_id, MANIFEST)
        manifest = json.loads(blob) if blob else {"files": [], "refused": [], "missing": []}
        files = [{**entry, "content_type": content_type(entry["path"])} for entry in manifest["files"]]
        return {
            "task_id": task.id,
            "outputs": list(task.submission.get("outputs") or []),
            "collected": blob is not None,
            "files": files,
            "refused": manifest["refused"],
            "missing": manifest["missing"],
        }

    def file(self, task_id: str, path: str) -> tuple[bytes, dict[str, Any]]:
        """One kept file's bytes and its listing entry; ``TaskNotFound`` if the task kept no such file."""
        listing = self.files(task_id)
        entry = next((f for f in listing["files"] if f["path"] == path), None)
        data = self.service.store.get_artifact(task_id, FILE_PREFIX + path) if entry else None
        if entry is None or data is None:
            raise TaskNotFound(f"task {task_id} has no output file {path!r}")
        return data, entry

    async def notebook_html(self, nb: dict[str, Any], no_input: bool) -> str:
        return await asyncio.to_thread(export_html, nb, no_input)
