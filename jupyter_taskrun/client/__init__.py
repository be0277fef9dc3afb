"""Python clients of the jupyter_taskrun HTTP API: ``TaskRunClient`` (sync) and ``AsyncTaskRunClient``.

Both speak the REST + Server-Sent-Events API described in ``docs/API_CONTRACT.md`` and return plain
JSON dicts exactly as the server sends them; event streams (``stream_events``, ``stream_changes``)
reconnect transparently after a dropped connection, resuming with ``Last-Event-ID`` so that no event
is lost or repeated.

The package, one concern per module:

* ``errors.py`` — ``TaskRunHTTPError``, ``TaskRunConnectionError``, ``ServerNotFound``;
* ``discovery.py`` — which server to talk to (``discover_server``, ``ServerInfo``);
* ``sse.py`` — the SSE frame decoder and the resume / reconnect state machine, without I/O;
* ``_core.py`` — what both clients share: the API's calls, request building, response mapping;
* ``sync.py`` — ``TaskRunClient`` (standard library only; safe inside a running kernel);
* ``aio.py`` — ``AsyncTaskRunClient`` (asyncio).

This module re-exports the public names; importing it does not import tornado or jupyter_server.
"""

from __future__ import annotations

from .aio import AsyncTaskRunClient
from .discovery import ServerInfo, discover_server
from .errors import ServerNotFound, TaskRunConnectionError, TaskRunHTTPError
from .sync import TaskRunClient

__all__ = [
    "AsyncTaskRunClient",
    "ServerInfo",
    "ServerNotFound",
    "TaskRunClient",
    "TaskRunConnectionError",
    "TaskRunHTTPError",
    "discover_server",
]
