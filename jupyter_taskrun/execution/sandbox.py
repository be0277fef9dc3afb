"""An optional sandbox for task kernels: Debian's ``bubblewrap`` (``c.TaskRun.sandbox = "bwrap"``).

Without it, task code runs as the server's OS user and can read what that user reads:
the server's token (``/proc/<server>/environ``, ``jpserver-*.json``), the whole task
store, other users' files. API isolation alone cannot protect users from each other.

Inside the sandbox each task kernel gets:

- its own PID namespace and ``/proc``: the server and other kernels are not visible, and
  when the kernel dies (or is killed) every process it started dies with the namespace, so
  no daemon outlives its task, whatever it forks;
- a private ``/tmp``; the server's runtime folder (tokens, connection files) and data
  folders (the task store, kernel specs) hidden behind empty tmpfs mounts; only its own
  connection file is visible, read-only;
- a read-only view of everything else, with only its working folder and the declared
  ``sandbox_writable_paths`` writable.

The kernel protocol is unchanged (ZMQ over 127.0.0.1: the network namespace is shared),
as are metrics (the host sees the sandbox's processes as the kernel's descendants), kill
semantics (SIGKILL of the kernel's process group; ``--die-with-parent`` and the PID
namespace take the rest) and the durable output pipes (inherited file descriptors).

What stays the deployer's job: a separate OS user per Jupyter user (JupyterHub), resource
limits beyond ``memory_limit``, and network policy.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field


class SandboxUnavailable(RuntimeError):
    """The sandbox was asked for but cannot run on this machine."""


@dataclass
class BwrapSandbox:
    """Builds the ``bwrap`` command line that wraps one kernel's command."""

    #: folders to hide (the server's runtime and data folders, the store's folder)
    hidden: list[str] = field(default_factory=list)
    #: folders the task may write besides its working folder
    writable: list[str] = field(default_factory=list)
    executable: str = "bwrap"

    def __post_init__(self) -> None:
        path = shutil.which(self.executable)
        if path is None:
            raise SandboxUnavailable("c.TaskRun.sandbox = 'bwrap' needs bubblewrap: apt-get install bubblewrap")
        self.executable = path

    def wrap(self, cmd: list[str], *, cwd: str | None, connection_file: str | None) -> list[str]:
        args = [
            self.executable,
            "--die-with-parent",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--ro-bind", "/", "/",
            "--dev", "/dev",
            "--proc", "/proc",
            "--tmpfs", "/tmp",
            "--tmpfs", "/dev/shm",
        ]  # fmt: skip
        for folder in _existing(self.hidden):
            args += ["--tmpfs", folder]
        # the kernel's Python must stay reachable even where it lives under a folder hidden above
        # (a virtualenv in /tmp, say): read-only, like the rest
        exe = shutil.which(cmd[0]) if cmd else None
        runtime = [sys.prefix, sys.base_prefix, os.path.dirname(os.path.realpath(exe)) if exe else ""]
        for folder in _existing(runtime):
            args += ["--ro-bind", folder, folder]
        if exe and os.path.dirname(exe) not in runtime:
            args += ["--ro-bind", os.path.dirname(exe), os.path.dirname(exe)]
        if connection_file:
            args += ["--ro-bind", connection_file, connection_file]
        for folder in _existing([cwd or "", *self.writable]):
            args += ["--bind", folder, folder]
        if cwd:
            args += ["--chdir", cwd]
        # the server is not in the kernel's PID namespace: ipykernel would think its parent died;
        # --die-with-parent does that watch instead
        args += ["--setenv", "JPY_PARENT_PID", "1"]
        return [*args, "--", *cmd]


def _existing(paths: Iterable[str]) -> list[str]:
    out: list[str] = []
    for p in paths:
        if p and os.path.isdir(p):
            real = os.path.realpath(p)
            if real not in out and real != "/":
                out.append(real)
    return out
