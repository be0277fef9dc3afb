"""Files in and out of a task: ``outputs`` collected when it ends, ``inputs`` staged for a Dask worker.

Runs where the task ran (the server's machine, or the Dask worker), after its kernel was killed,
so no file changes while it is read. Nothing here knows the store: ``collect_outputs`` returns a
``Collected`` (file contents plus a manifest) that travels back in the ``JobResult``.

Guarantees:

* containment: a pattern is relative to the task's working folder (no absolute path, no ``..``,
  checked at submission and again here); every match is resolved with its symlinks and one that
  leads out of the working folder is *refused* (listed with the reason), never read;
* caps (``Caps``): a file over ``per_file``, a file past ``per_task`` bytes or ``files`` files in
  all is refused with the reason and its size; nothing is ever cut short;
* what is kept is byte-identical, with its size and sha256;
* a pattern that matches nothing is listed in ``missing``; a matched folder brings every file
  under it (symlinked folders are not followed);
* ``inputs`` are read whole or not at all: a path out of the working folder (symlinks resolved),
  something that is not a regular file (a FIFO would block) or more than the staging cap in all
  raises ``ValueError`` naming the input; folders are read through symlinked folders inside it,
  as a local task would see them.
"""

from __future__ import annotations

import glob
import hashlib
import os
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Caps:
    """Limits of one task's collected files (``c.TaskRun.max_artifact_bytes`` and friends)."""

    per_file: int = 32 * 1024 * 1024
    per_task: int = 128 * 1024 * 1024
    files: int = 1000


@dataclass
class Collected:
    """What ``collect_outputs`` found: contents by path, and the manifest the API lists."""

    contents: dict[str, bytes] = field(default_factory=dict)
    files: list[dict[str, Any]] = field(default_factory=list)
    refused: list[dict[str, Any]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def manifest(self) -> dict[str, Any]:
        return {"files": self.files, "refused": self.refused, "missing": self.missing}


def pattern_problem(pattern: str) -> str | None:
    """Why a pattern (or an input path) cannot be used, or None: relative, no ``..``, no NUL."""
    if not isinstance(pattern, str) or not pattern or "\x00" in pattern:
        return "must be a non-empty path without NUL characters"
    if os.path.isabs(pattern) or pattern.startswith("~"):
        return "must be relative to the task's working folder"
    if ".." in pattern.replace("\\", "/").split("/"):
        return "must not contain '..'"
    return None


def _inside(root: str, path: str) -> bool:
    return path == root or path.startswith(root + os.sep)


def _matches(cwd: str, pattern: str) -> list[str]:
    """Relative paths of the files a pattern names (folders expanded, sorted, without duplicates)."""
    found: list[str] = []
    for rel in sorted(glob.glob(pattern, root_dir=cwd, recursive=True)):
        full = os.path.join(cwd, rel)
        if os.path.isdir(full) and not os.path.islink(full):
            for folder, dirs, names in os.walk(full):  # symlinked folders are listed, not entered
                dirs.sort()
                for name in sorted(names) + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
                    found.append(os.path.relpath(os.path.join(folder, name), cwd))
        else:
            found.append(os.path.normpath(rel))
    return found


def collect_outputs(cwd: str, patterns: list[str], caps: Caps = Caps()) -> Collected:
    """Read the files ``patterns`` name under ``cwd`` within ``caps`` (see the module docstring)."""
    out = Collected()
    root = os.path.realpath(cwd)
    seen: set[str] = set()
    total = 0
    for pattern in patterns:
        problem = pattern_problem(pattern)
        if problem:
            out.refused.append({"path": pattern, "size": None, "reason": f"the pattern {problem}"})
            continue
        matched = _matches(root, pattern)
        if not matched:
            out.missing.append(pattern)
        for rel in matched:
            rel = rel.replace(os.sep, "/")
            if rel in seen:
                continue
            seen.add(rel)
            full = os.path.join(root, rel)
            real = os.path.realpath(full)
            if not _inside(root, real):
                out.refused.append({"path": rel, "size": None, "reason": "a symlink out of the task's working folder"})
                continue
            if not os.path.isfile(real):
                out.refused.append({"path": rel, "size": None, "reason": "not a regular file"})
                continue
            size = os.path.getsize(real)
            reason = None
            if size > caps.per_file:
                reason = f"larger than the per-file cap of {caps.per_file} bytes (c.TaskRun.max_artifact_bytes)"
            elif len(out.files) >= caps.files:
                reason = f"more than {caps.files} files (c.TaskRun.max_artifacts)"
            elif total + size > caps.per_task:
                reason = f"past the per-task cap of {caps.per_task} bytes (c.TaskRun.max_task_artifact_bytes)"
            if reason is None:
                try:
                    data = _read(real, caps.per_file)
                except OSError as e:
                    reason = f"cannot be read: {e.strerror or e}"
                else:
                    if len(data) > caps.per_file:  # it grew after the size check: refuse, never cut
                        reason = f"larger than the per-file cap of {caps.per_file} bytes (c.TaskRun.max_artifact_bytes)"
                    elif total + len(data) > caps.per_task:
                        reason = f"past the per-task cap of {caps.per_task} bytes (c.TaskRun.max_task_artifact_bytes)"
                    else:
                        total += len(data)
                        out.contents[rel] = data
                        out.files.append({"path": rel, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
                        continue
            out.refused.append({"path": rel, "size": size, "reason": reason})
    return out


def _read(path: str, limit: int) -> bytes:
    """At most ``limit + 1`` bytes of a file (one more than the cap tells it is over)."""
    with open(path, "rb") as f:
        return f.read(limit + 1)


def read_inputs(cwd: str, inputs: list[str], limit: int) -> dict[str, bytes]:
    """The files ``inputs`` name (paths relative to ``cwd``; folders: every file under them), to
    stage on a worker. Raises ``ValueError`` naming the input for a path out of ``cwd`` or past ``limit`` bytes."""
    root = os.path.realpath(cwd)
    files: dict[str, bytes] = {}
    total = 0
    for item in inputs:
        problem = pattern_problem(item)
        if problem:
            raise ValueError(f"input {item!r} {problem}")
        full = os.path.realpath(os.path.join(root, item))
        if not _inside(root, full):
            raise ValueError(f"input {item!r} is outside the task's working folder")
        if os.path.isdir(full):
            names = _files_under(root, full, item)
        elif os.path.isfile(full):
            names = [full]
        else:
            raise ValueError(f"input {item!r} does not exist")
        for name in sorted(names):
            real = os.path.realpath(name)
            if not _inside(root, real):
                raise ValueError(f"input {item!r} holds a symlink out of the task's working folder: {os.path.relpath(name, root)}")
            if not os.path.isfile(real):  # a FIFO would block the read forever
                raise ValueError(f"input {item!r} holds something that is not a regular file: {os.path.relpath(name, root)}")
            total += os.path.getsize(real)
            if total > limit:
                raise ValueError(f"inputs are larger than {limit} bytes in all (c.TaskRun.max_staged_input_bytes)")
            files[os.path.relpath(name, root).replace(os.sep, "/")] = _read(real, limit)
    return files


def _files_under(root: str, folder: str, item: str) -> list[str]:
    """Every file under an input folder, through symlinked folders (a local task sees them too);
    a link back to a folder it is in is not followed (no loop); a symlinked folder out of ``root``
    raises ``ValueError`` naming the input."""
    found: list[str] = []
    for here, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(here)
        if not _inside(root, real):
            raise ValueError(f"input {item!r} holds a symlink out of the task's working folder: {os.path.relpath(here, root)}")
        up, ancestors = here, set()
        while len(up) > len(folder):
            up = os.path.dirname(up)
            ancestors.add(os.path.realpath(up))
        if real in ancestors:
            dirs[:] = []
            continue
        found += [os.path.join(here, n) for n in names]
    return found


def stage_inputs(cwd: str, files: dict[str, bytes]) -> None:
    """Write staged inputs under ``cwd`` at their relative paths (a fresh folder: nothing to overwrite)."""
    root = os.path.realpath(cwd)
    for rel, data in files.items():
        target = os.path.realpath(os.path.join(root, rel))
        if pattern_problem(rel) or not _inside(root, target):
            raise ValueError(f"input {rel!r} is outside the task's working folder")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as f:
            f.write(data)
