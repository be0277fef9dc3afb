"""Finding the jupyter_taskrun server to talk to, and comparing server URLs.

Order, first match wins:

1. an explicit ``url`` (and ``token``);
2. the ``JUPYTER_TASKRUN_URL`` / ``JUPYTER_TASKRUN_TOKEN`` environment variables;
3. the runtime info files of running Jupyter servers (``jpserver-<pid>.json``, the files of
   ``jupyter_server.serverapp.list_running_servers``): the server that started this kernel
   (``JPY_PARENT_PID``), else the one whose ``root_dir`` contains the current directory (the most
   specific root), else the newest.

A URL given without a token takes the token of the running server with the same address
(loopback aliases and default ports folded), so ``TaskRunClient("http://localhost:8888")`` works
on the server's own machine. Task kernels never receive the server token in their environment.

Guarantees: reading runtime files never imports ``jupyter_server`` (seconds of start-up in a
short-lived CLI); unreadable, half-written or stale files (dead pid) and Unix-socket servers are
skipped; ``ServerNotFound`` is raised only when nothing at all was found.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import urllib.parse
from dataclasses import dataclass
from typing import Any

from .errors import ServerNotFound

__all__ = ["ENV_TOKEN", "ENV_URL", "ServerInfo", "discover_server"]

ENV_URL = "JUPYTER_TASKRUN_URL"
ENV_TOKEN = "JUPYTER_TASKRUN_TOKEN"


@dataclass
class ServerInfo:
    """Where a jupyter_taskrun server is: base URL (ending in ``/``), token, root dir if known."""

    url: str
    token: str = ""
    root_dir: str | None = None
    pid: int | None = None


def normalise_url(url: str) -> str:
    """``host:port`` or a full URL → ``scheme://host:port/path/`` (``http`` by default, trailing slash)."""
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    return url if url.endswith("/") else url + "/"


_LOOPBACK_NAMES = {"localhost", "ip6-localhost", ""}


def is_loopback(host: str | None) -> bool:
    """True for names and addresses of this machine (``localhost``, ``127.x``, ``::1``, ``0.0.0.0``)."""
    host = (host or "").strip("[]").lower()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    return addr.is_loopback or addr.is_unspecified


def url_key(url: str) -> tuple[str, str, int, str]:
    """A comparable identity of a server URL (loopback aliases and default ports folded)."""
    parts = urllib.parse.urlsplit(normalise_url(url))
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if is_loopback(host):
        host = "loopback"
    port = parts.port or (443 if scheme == "https" else 80)
    return scheme, host, port, parts.path.rstrip("/")


_SERVER_INFO_FILE = re.compile(r"^jpserver-(.+)\.json$")


def _pid_alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except PermissionError:  # alive, another user's
        return True
    except (OSError, ValueError, TypeError):
        return False
    return True


def running_servers() -> list[dict[str, Any]]:
    """Runtime info of the running Jupyter servers (TCP ones only), newest first.

    Reads the same ``jpserver-<pid>.json`` files as ``jupyter_server.serverapp.list_running_servers``
    (with the same liveness check), without importing ``jupyter_server.serverapp``, which costs
    seconds of start-up in a short-lived CLI.
    """
    try:
        from jupyter_core.paths import jupyter_runtime_dir

        runtime_dir = jupyter_runtime_dir()
        names = os.listdir(runtime_dir)
    except Exception:  # no runtime dir yet: nothing discovered
        return []
    found: list[tuple[float, dict[str, Any]]] = []
    for name in names:
        if not _SERVER_INFO_FILE.match(name):
            continue
        path = os.path.join(runtime_dir, name)
        try:
            with open(path, encoding="utf-8") as f:
                info = json.load(f)
            mtime = os.path.getmtime(path)
        except (OSError, ValueError):  # unreadable, or being written right now
            continue
        if not isinstance(info, dict) or not _pid_alive(info.get("pid")):
            continue
        if info.get("url") and not info.get("sock"):
            found.append((mtime, info))
    found.sort(key=lambda item: (item[0], int(item[1].get("pid") or 0)), reverse=True)
    return [info for _, info in found]


def _within(path: str, root: str) -> bool:
    try:
        path = os.path.realpath(path)
        root = os.path.realpath(root)
        return os.path.commonpath([path, root]) == root
    except (ValueError, OSError):
        return False


def pick_server(servers: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The server meant among ``servers`` (newest first): our parent, else the cwd's, else the newest."""
    if not servers:
        return None
    parent = os.environ.get("JPY_PARENT_PID")
    if parent and parent.isdigit():
        for info in servers:
            if str(info.get("pid")) == parent:
                return info
    try:
        cwd = os.getcwd()
    except OSError:
        cwd = None
    if cwd:
        containing = [s for s in servers if s.get("root_dir") and _within(cwd, s["root_dir"])]
        if containing:
            # the most specific root wins; among equals the newest (the list is newest first)
            return max(containing, key=lambda s: len(os.path.realpath(s["root_dir"])))
    return servers[0]


def matching_server(url: str) -> dict[str, Any] | None:
    """The runtime info of the running server at ``url``, if it runs on this machine."""
    key = url_key(url)
    for info in running_servers():
        if url_key(info["url"]) == key:
            return info
    return None


def discover_server(url: str | None = None, token: str | None = None) -> ServerInfo:
    """Resolve the server to talk to (see the module docstring for the order).

    ``root_dir`` is filled only when the server was found through its runtime info.
    """
    if url is None:
        url = os.environ.get(ENV_URL) or None
    if url is not None:
        if token is None:
            token = os.environ.get(ENV_TOKEN)
        if token is None:
            match = matching_server(url)
            if match is not None:
                return ServerInfo(normalise_url(url), match.get("token") or "", match.get("root_dir"), match.get("pid"))
        return ServerInfo(normalise_url(url), token or "")
    info = pick_server(running_servers())
    if info is None:
        raise ServerNotFound(f"no Jupyter server found: pass url= and token=, set {ENV_URL} and {ENV_TOKEN}, or start a Jupyter server")
    return ServerInfo(
        url=normalise_url(info["url"]),
        token=token if token is not None else info.get("token") or "",
        root_dir=info.get("root_dir"),
        pid=info.get("pid"),
    )
