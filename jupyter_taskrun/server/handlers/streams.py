"""Live streams: Server-Sent Events (per task and global) and the WebSocket twin.

Every stream follows one protocol: subscribe to the broker first, replay from
the store after the client's last seen id, then forward live events, skipping
anything already sent. A subscriber that lagged re-reads from the store, so a
resumed or slow client gets no gap and no duplicate.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import authorized, ws_authenticated
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from tornado import web
from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketClosedError, WebSocketHandler

from ..broker import ALL_TASKS, Subscription
from ...errors import TaskNotFound, TaskRunError
from ...models import Change, TaskEvent
from ..service import TaskRun
from ..store import SQLITE_MAX_INT
from .base import AUTH_RESOURCE, TaskRunHandler, TaskRunHTTPError, http_error, log_refusal, owner_name, scrubbed_summary, write_json_error

REPLAY_PAGE = 1000


def _retrieve(fut: Any) -> None:
    """Done callback: a write that failed because the socket closed is not an error to log."""
    if not fut.cancelled():
        fut.exception()


async def follow_task(
    taskrun: TaskRun,
    task_id: str,
    after: int,
    send: Callable[[list[TaskEvent]], Awaitable[None]],
    keepalive: Callable[[], Awaitable[None]],
    sub: Subscription[TaskEvent],
    keepalive_interval: float,
) -> str | None:
    """Replay then follow one task's events; returns its final status (None if it was deleted)."""
    last = after
    while True:
        # (re)read from the store: the initial replay, and after a lag. The buffer is reset
        # *before* reading, so an event published while a replay write is blocked stays
        # buffered (or flags a new lag); duplicates are skipped by seq.
        sub.reset_lag()
        while True:
            page = taskrun.read_events(task_id, last, REPLAY_PAGE)
            if page:
                await send(page)
                last = page[-1].seq
            if len(page) < REPLAY_PAGE:
                break
        while True:
            try:
                task = taskrun.get(task_id)
            except TaskNotFound:
                return None
            if task.status.is_terminal and last >= task.last_seq:
                return task.status.value
            if not await sub.wait(keepalive_interval):
                await keepalive()
                continue
            if sub.closed:
                try:
                    taskrun.get(task_id)
                except TaskNotFound:
                    return None
                raise StreamClosedError()
            if sub.lagged:
                break
            fresh = [e for e in sub.drain() if e.seq > last]
            if fresh:
                await send(fresh)
                last = fresh[-1].seq
                await fair_share_pause(sub)


#: Approximate loop time one stream write costs (tornado's HTTP/1.1 chunk + socket send).
WRITE_COST = 40e-6


async def fair_share_pause(sub: Subscription[Any]) -> None:
    """After a write, under fan-out, rest (subscribers on its key) x WRITE_COST seconds.

    One write per event per subscriber saturates the loop past a few hundred
    subscribers (1,000 x 50 events/s = 50k writes/s), and then everyone's latency
    grows without bound. Resting, a subscriber is not even woken by what is
    published meanwhile (it just buffers), and the next write carries all of it:
    at most ~25k writes/s in all, <= 40 ms more latency at 1,000 subscribers, none for one.
    """
    spacing = WRITE_COST * sub.broker.subscriber_count(sub.key)
    if spacing >= 0.002:
        await asyncio.sleep(spacing)


def sse_frame(item: TaskEvent | Change) -> str:
    return f"id: {item.seq}\nevent: {item.type}\ndata: {item.json}\n\n"


class SSEHandler(TaskRunHandler):
    """Common SSE plumbing: headers, per-user stream slots, disconnect detection."""

    _sub: Subscription[Any] | None = None

    def start_stream(self) -> None:
        self.taskrun.acquire_stream(self.username)
        self._slot_user = self.username
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")  # proxies must not buffer a live stream

    def end_stream(self) -> None:
        if self._sub is not None:
            self._sub.unsubscribe()
            self._sub = None
        if getattr(self, "_slot_user", None) is not None:
            self.taskrun.release_stream(self._slot_user)
            self._slot_user = None

    def on_connection_close(self) -> None:
        # wake the waiting loop so a vanished client frees its subscription now
        if self._sub is not None:
            self._sub._close()

    async def keepalive(self) -> None:
        self.write(": keepalive\n\n")
        await self.flush()


class TaskEventsHandler(SSEHandler):
    """``/taskrun/api/tasks/{id}/events``: replay + live + ``end``."""

    @web.authenticated
    @authorized
    async def get(self, task_id: str) -> None:
        await self.visible_task(task_id)
        after = self.last_event_id()
        self.start_stream()
        self._sub = self.taskrun.broker.subscribe(task_id)

        async def send(events: list[TaskEvent]) -> None:
            self.write("".join(sse_frame(e) for e in events))
            await self.flush()

        try:
            final = await follow_task(
                self.taskrun, task_id, after, send, self.keepalive, self._sub, self.taskrun.sse_keepalive_interval
            )
            # no id: the end marker must not move the client's resume point
            end = {"task_id": task_id, "status": final, "deleted": final is None}
            self.write(f"event: end\ndata: {json.dumps(end)}\n\n")
            await self.flush()
        except StreamClosedError:
            pass
        finally:
            self.end_stream()
        if not self._finished:
            self.finish(set_content_type="text/event-stream; charset=utf-8")


class ChangesHandler(SSEHandler):
    """``/taskrun/api/events``: every task's created/status/progress/deleted, resumable."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        after = self.last_event_id()
        owner = None if await self.sees_all() else self.username
        self.start_stream()
        sub = self._sub = self.taskrun.broker.subscribe(ALL_TASKS)
        last = after
        interval = self.taskrun.sse_keepalive_interval

        def visible(change: Any) -> bool:
            # every change carries its task's owner; one without (older store) is shown to admins only
            return owner is None or change.data.get("owner") in (owner, "")

        async def send(changes: list[Any]) -> None:
            nonlocal last
            frames = [sse_frame(c) for c in changes if c.seq > last and visible(c)]
            if changes:
                last = max(last, changes[-1].seq)
            if frames:
                self.write("".join(frames))
                await self.flush()

        try:
            # a fresh client (no resume point) starts live; the list view loads /tasks itself
            if after == 0 and self.request.headers.get("Last-Event-ID") is None and self.query("after") is None:
                last = self.taskrun.store.last_change_seq()
                self.write(f"retry: 2000\nid: {last}\nevent: hello\ndata: {json.dumps({'last_event_id': last})}\n\n")
                await self.flush()
            while True:
                sub.reset_lag()  # before reading, as in follow_task
                while True:
                    page = self.taskrun.store.read_changes(last, REPLAY_PAGE)
                    await send(page)
                    if len(page) < REPLAY_PAGE:
                        break
                while not sub.lagged:
                    if not await sub.wait(interval):
                        await self.keepalive()
                        continue
                    if sub.closed:
                        raise StreamClosedError()
                    if sub.lagged:
                        break
                    await send(sub.drain())
                    await fair_share_pause(sub)
        except StreamClosedError:
            pass
        finally:
            self.end_stream()
        if not self._finished:
            self.finish(set_content_type="text/event-stream; charset=utf-8")


class TaskWebSocketHandler(WebSocketMixin, WebSocketHandler, JupyterHandler):
    """``/taskrun/api/tasks/{id}/ws``: the task's events as JSON messages."""

    auth_resource = AUTH_RESOURCE

    def set_default_headers(self) -> None:
        """JupyterHandler's headers make no sense for a websocket."""

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # refusals before the upgrade are JSON, like every other taskrun route (not Jupyter's HTML page)
        if not write_json_error(self, status_code, kwargs.get("exc_info", (None, None, None))[1]):
            super().write_error(status_code, **kwargs)

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if not log_refusal(self, value):
            super().log_exception(typ, value, tb)

    @property
    def taskrun(self) -> TaskRun:
        return self.settings["taskrun"]

    @property
    def username(self) -> str:
        return owner_name(self.current_user)

    #: incoming frames a socket may send: a burst of this many, refilled at WS_MESSAGE_RATE per second
    WS_MESSAGE_BURST = 100
    WS_MESSAGE_RATE = 20.0
    #: largest incoming message (clients only send tiny control messages); tornado closes with 1009
    WS_MAX_MESSAGE_BYTES = 64 * 1024
    #: unflushed bytes a socket may have queued before it is closed as not reading (1008)
    WS_MAX_PENDING_BYTES = 4 * 1024 * 1024

    @property
    def max_message_size(self) -> int:
        return self.WS_MAX_MESSAGE_BYTES

    def _request_summary(self) -> str:
        return scrubbed_summary(self)

    def _refuse(self, status: int, message: str, reason: str) -> None:
        raise TaskRunHTTPError(status, message, reason)

    def _check_handshake(self) -> None:
        """Refuse, as JSON, every handshake tornado would refuse (before any slot is taken)."""
        headers = self.request.headers
        if headers.get("Upgrade", "").lower() != "websocket":
            self._refuse(400, 'this is a WebSocket endpoint: send "Upgrade: websocket"', "invalid")
        if "upgrade" not in [s.strip().lower() for s in headers.get("Connection", "").split(",")]:
            self._refuse(400, '"Connection" must be "Upgrade"', "invalid")
        check = getattr(self, "_check_cross_origin", None)
        if check is not None:
            refused = check(self.check_origin) is not None
        else:
            origin = headers.get("Origin")
            refused = origin is not None and not self.check_origin(origin)
        if refused:
            self._refuse(403, "cross-origin WebSocket connections are not allowed", "forbidden")
        if not all(headers.get(f) for f in ("Host", "Sec-Websocket-Key", "Sec-Websocket-Version")):
            self._refuse(400, "missing or invalid WebSocket headers", "invalid")
        if headers.get("Sec-WebSocket-Version") != "13":
            self.set_header("Sec-WebSocket-Version", "13")
            self._refuse(426, "only WebSocket version 13 is supported", "invalid")

    async def pre_get(self) -> None:
        user = self.current_user
        if not await ensure_async(self.authorizer.is_authorized(self, user, "read", AUTH_RESOURCE)):
            raise web.HTTPError(403)
        await self.taskrun.start()
        try:
            task = self.taskrun.get(self.task_id)
            sees_all = await ensure_async(self.authorizer.is_authorized(self, user, "read", "taskrun:all"))
            if task.owner and task.owner != self.username and not sees_all:
                raise TaskNotFound(f"no task with id {self.task_id!r}")
            after = self.get_query_argument("after", "0", strip=False)
            if not (after.isascii() and after.isdigit()) or int(after) > SQLITE_MAX_INT:
                raise web.HTTPError(400, "'after' must be a non-negative 64-bit integer")
            self.after = int(after)
            self._check_handshake()
            # over the limit: a 429 before the upgrade. The slot itself is taken in open(),
            # once the handshake is accepted, so a refused handshake never holds one.
            self.taskrun.acquire_stream(self.username)
            self.taskrun.release_stream(self.username)
        except TaskRunError as e:
            raise http_error(e) from None

    @ws_authenticated
    async def get(self, task_id: str) -> None:
        self.task_id = task_id
        self._slot = False
        self._policy_closed = False
        self._follow: asyncio.Task[Any] | None = None
        await self.pre_get()
        await super().get(task_id)

    async def open(self, task_id: str) -> None:  # type: ignore[override]
        try:
            self.taskrun.acquire_stream(self.username)
        except TaskRunError:
            self.close(1013, "too many live event streams")
            return
        self._slot = True
        self._tokens = float(self.WS_MESSAGE_BURST)
        self._tokens_at = asyncio.get_running_loop().time()
        super().open()
        self._sub = self.taskrun.broker.subscribe(task_id)
        self._send_nowait(json.dumps({"type": "connected", "task_id": task_id, "after": self.after}))
        self._follow = asyncio.ensure_future(self._forward())

    def _send_nowait(self, message: str) -> None:
        try:
            fut = self.write_message(message)
        except WebSocketClosedError:
            return
        fut.add_done_callback(_retrieve)

    def _pending_bytes(self) -> int:
        conn = self.ws_connection
        stream = getattr(conn, "stream", None)
        return int(getattr(stream, "_write_buffer_size", 0) or 0)

    def _policy_close(self, why: str) -> None:
        """Close an abusive socket (1008 policy violation), logged once, and stop reading it."""
        if self._policy_closed:
            return
        self._policy_closed = True
        self.log.warning("taskrun: closing the WebSocket of task %s (user %s): %s", self.task_id, self.username, why)
        conn = self.ws_connection
        self.close(1008, why[:100])
        # a client that does not read will not answer the close frame: do not wait 5 s for it
        if conn is not None:
            asyncio.get_running_loop().call_later(1.0, conn._abort)

    async def _forward(self) -> None:
        async def send(events: list[TaskEvent]) -> None:
            for e in events:
                await self.write_message(e.json)

        async def keepalive() -> None:
            self.ping()

        try:
            final = await follow_task(self.taskrun, self.task_id, self.after, send, keepalive, self._sub, self.taskrun.sse_keepalive_interval)
            await self.write_message(json.dumps({"type": "end", "task_id": self.task_id, "status": final, "deleted": final is None}))
            self.close(1000)
        except (WebSocketClosedError, StreamClosedError):
            pass

    def _take_token(self) -> bool:
        now = asyncio.get_running_loop().time()
        self._tokens = min(float(self.WS_MESSAGE_BURST), self._tokens + (now - self._tokens_at) * self.WS_MESSAGE_RATE)
        self._tokens_at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def on_ping(self, data: bytes) -> None:
        # tornado answers pings itself (at most one pong outstanding); count them against the rate
        if not getattr(self, "_policy_closed", True) and not self._take_token():
            self._policy_close("too many messages")

    async def on_message(self, message: str | bytes) -> None:
        # async: tornado reads the next frame only once this reply is flushed (back-pressure)
        if self._policy_closed:
            return
        if not self._take_token():
            self._policy_close("too many messages")
            return
        if self._pending_bytes() > self.WS_MAX_PENDING_BYTES:
            self._policy_close("the client does not read")
            return
        try:
            msg = json.loads(message)
        except ValueError:
            msg = None
        if isinstance(msg, dict) and msg.get("type") == "ping":
            reply = json.dumps({"type": "pong"})
        else:
            reply = json.dumps({"type": "error", "message": "unknown message; send {\"type\": \"ping\"}"})
        try:
            await self.write_message(reply)
        except (WebSocketClosedError, StreamClosedError):
            pass

    def on_close(self) -> None:
        sub = getattr(self, "_sub", None)
        if sub is not None:
            sub.unsubscribe()
            sub._close()
        if getattr(self, "_follow", None) is not None:
            self._follow.cancel()
        if getattr(self, "_slot", False):
            self._slot = False
            self.taskrun.release_stream(self.username)
