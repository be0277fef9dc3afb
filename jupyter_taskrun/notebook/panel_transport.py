"""How the panels follow the server: one background loop per kernel, event streams, polling.

* ``BackgroundLoop``: one daemon thread (``jupyter-taskrun-widgets``) running a private asyncio
  loop, shared by every panel of the kernel. Because it is a thread, panels keep updating while
  the notebook's main thread is busy running other cells.
* ``TaskFollower``: follows one task with ``AsyncTaskRunClient.stream_events`` (which resumes
  after a disconnect with ``Last-Event-ID``: no line lost or repeated); when streaming is
  impossible (refused, too many streams, a proxy that buffers) it polls the REST API instead,
  continuing the log from the byte offsets the events already delivered. The stream is closed as
  soon as the task ends (or the panel is closed).
* ``ChangeFollower``: keeps the task list current from the global change feed (or by re-listing).
* ``RenderThrottle``: renders at most once per ``render_interval``, so a task printing thousands
  of lines does not flood the browser.

Guarantees: models are only changed, and widgets only rendered, under the host panel's lock;
a follower never raises into the kernel (failures become the panel's mode or notice).
The host contract is ``FollowHost``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from typing import Any, Protocol

from .panel_model import TERMINAL

__all__ = ["BackgroundLoop", "ChangeFollower", "RenderThrottle", "TaskFollower", "short_error", "sync_and_async_clients"]

UNREACHABLE = "server unreachable, retrying…"


def short_error(e: BaseException) -> str:
    """The first line of an error's message (at most 300 characters)."""
    text = getattr(e, "message", None) or str(e) or type(e).__name__
    return text.splitlines()[0][:300]


def sync_and_async_clients(client: Any) -> tuple[Any, Any]:
    """(TaskRunClient, AsyncTaskRunClient) for the same server, whichever kind was given (None: discover)."""
    from ..client import AsyncTaskRunClient, TaskRunClient

    if client is None:
        client = TaskRunClient()
    sync = client if isinstance(client, TaskRunClient) else TaskRunClient(client.url, client.token)
    aclient = client if isinstance(client, AsyncTaskRunClient) else AsyncTaskRunClient(client.url, client.token)
    for attr in ("request_timeout", "stream_read_timeout", "reconnect_timeout"):
        setattr(aclient, attr, getattr(client, attr))
    return sync, aclient


class BackgroundLoop:
    """One daemon thread with an asyncio loop, started on first use (again if it died)."""

    _instance: BackgroundLoop | None = None
    _guard = threading.Lock()

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name="jupyter-taskrun-widgets", daemon=True)
        self.thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()

    @classmethod
    def get(cls) -> BackgroundLoop:
        with cls._guard:
            inst = cls._instance
            if inst is None or not inst.thread.is_alive() or inst.loop.is_closed():
                inst = cls._instance = cls()
            return inst

    def submit(self, coro: Any) -> concurrent.futures.Future:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, fn: Any, *args: Any) -> None:
        self.loop.call_soon_threadsafe(fn, *args)


class RenderThrottle:
    """From the background loop: render now, or once ``interval`` s after the last render."""

    def __init__(self, render: Any, interval: float):
        self._render = render  # takes the host's lock itself
        self.interval = interval
        self.last = 0.0
        self._handle: asyncio.TimerHandle | None = None

    @property
    def pending(self) -> bool:
        return self._handle is not None

    def rendered(self) -> None:
        """The host rendered (whatever asked it to)."""
        self.last = time.monotonic()

    def request(self) -> None:
        if self._handle is not None:
            return
        delay = max(0.0, self.last + self.interval - time.monotonic())
        self._handle = asyncio.get_running_loop().call_later(delay, self._fire)

    def _fire(self) -> None:
        self._handle = None
        self._render()

    def cancel(self) -> None:
        """Drop a pending render (call on the loop's thread)."""
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.cancel()


class FollowHost(Protocol):
    """What a follower needs of its panel."""

    lock: threading.RLock
    model: Any  # TaskPanelModel (TaskFollower) or TaskListModel (ChangeFollower)
    aclient: Any
    transport: str  # auto | stream | poll
    poll_interval: float
    throttle: RenderThrottle
    mode: str  # idle | stream | poll | done | closed
    mode_detail: str

    def render(self) -> None: ...  # takes the lock


def stop_following(host: Any) -> None:
    """Cancel a panel's follower (which closes its stream) and its pending render; the panel keeps
    what it shows. ``host`` is a ``TaskPanel`` or ``TaskListPanel`` (``_future``, ``_bg``, ``throttle``)."""
    fut, host._future = getattr(host, "_future", None), None
    if fut is not None and not fut.done():
        fut.cancel()
    bg = getattr(host, "_bg", None)
    if bg is not None:
        bg.call(host.throttle.cancel)


class _Follower:
    """What both followers share: their host panel (``lock``, ``mode``, ``render()``) and its mode.

    Their ``run`` loops stay written out: a task stream ends with the task, with 404/403 meaning
    "gone", while the change feed never ends and only falls back to polling.
    """

    def __init__(self, host: Any):
        self.host = host

    def _set_mode(self, mode: str) -> None:
        with self.host.lock:
            self.host.mode = mode
            self.host.render()


class TaskFollower(_Follower):
    """Follows one task for a ``TaskPanel`` (the host: also ``task_id``, ``done_event``,
    ``set_notice(text, error=)`` and ``clear_notice(text)``) until it ends."""

    async def run(self) -> None:
        host = self.host
        ticker = asyncio.ensure_future(self._tick())
        try:
            if host.transport != "poll":
                try:
                    await self._stream()
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    from ..client import TaskRunHTTPError

                    if isinstance(e, TaskRunHTTPError) and e.status == 404:
                        host.set_notice("this task no longer exists", error=True)
                        self._set_mode("done")
                        return
                    if host.transport == "stream":
                        raise
                    host.mode_detail = f"event stream unavailable: {short_error(e)}"
            await self._poll()
        finally:
            ticker.cancel()
            with host.lock:
                if host.mode != "closed":
                    host.mode = "done" if host.model.done else "idle"  # idle: stopped before the end
                if host.model.done:
                    host.done_event.set()
                host.throttle.cancel()
                host.render()

    async def _stream(self) -> None:
        host = self.host
        self._set_mode("stream")
        stream = host.aclient.stream_events(host.task_id, after=host.model.last_seq)
        try:
            async for ev in stream:
                with host.lock:
                    host.model.apply_event(ev)
                    if not (ev.get("type") == "end" or host.model.done):
                        host.throttle.request()
                if ev.get("type") == "end":
                    break
        finally:
            await stream.aclose()  # closed as soon as the task ends
        await self._finish()

    async def _finish(self) -> None:
        """The final task object: metrics, kernel start time, the recorded error."""
        host = self.host
        try:
            task = await host.aclient.get(host.task_id)
        except Exception:  # noqa: BLE001 - keep what the events said
            task = None
        listing = await self._variables(task)
        with host.lock:
            if task is not None:
                host.model.apply_task(task)
            if listing is not None:
                host.model.variables = listing
            host.mode = "done"
            host.done_event.set()
            host.render()

    async def _variables(self, task: dict[str, Any] | None) -> dict[str, Any] | None:
        """What a completed task sent back (``--out``), for the results line; None when unknown."""
        if task is None or task.get("status") != "completed":
            return None
        try:
            return await self.host.aclient.variables(self.host.task_id)
        except Exception:  # noqa: BLE001 - an older server, or gone: no results line
            return None

    async def _tick(self) -> None:
        """Elapsed time ticks every second; the queue position is refreshed while queued."""
        host = self.host
        n = 0
        while not host.model.done:
            await asyncio.sleep(1.0)
            n += 1
            if host.model.status == "queued" and host.mode == "stream" and n % 2 == 0:
                try:
                    task = await host.aclient.get(host.task_id)
                except Exception:  # noqa: BLE001
                    task = None
                if task is not None and task.get("status") == "queued":
                    with host.lock:
                        host.model.task["queue_position"] = task.get("queue_position")
            if not host.throttle.pending:
                host.render()

    async def _poll(self) -> None:
        """The fallback: rebuild the state from the REST API every ``poll_interval`` s.

        Logs continue from the byte offsets already received (nothing is shown twice); outputs
        and metrics are re-read only when the task has new events.
        """
        from ..client import TaskRunHTTPError

        host, model = self.host, self.host.model
        self._set_mode("poll")
        seen_events, failures = -1, 0
        while True:
            ac = host.aclient
            try:
                task = await ac.get(host.task_id)
                terminal = task.get("status") in TERMINAL
                for stream in ("stdout", "stderr"):
                    data = await ac.logs_bytes(host.task_id, stream, model.log_offsets[stream])
                    if data:
                        with host.lock:
                            model.add_log_bytes(stream, data)
                last_event = int(task.get("last_event_id") or 0)
                outputs = metrics = values = None
                if last_event != seen_events or terminal:
                    seen_events = last_event
                    outputs = await ac.outputs(host.task_id)
                    try:
                        metrics = await ac.metrics(host.task_id)
                        values = await ac.values(host.task_id) if task.get("values") else None
                    except TaskRunHTTPError:
                        metrics = values = None
                listing = await self._variables(task) if terminal else None
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - server unreachable: keep trying, say so
                if isinstance(e, TaskRunHTTPError) and e.status in (401, 403, 404):
                    host.set_notice("this task no longer exists" if e.status == 404 else f"not allowed: {short_error(e)}", error=True)
                    return
                failures += 1
                host.mode_detail = f"server unreachable: {short_error(e)}"
                host.set_notice(UNREACHABLE, error=True)
            else:
                failures = 0
                with host.lock:
                    host.clear_notice(UNREACHABLE)
                    model.apply_task(task)
                    if outputs is not None:
                        model.replace_outputs(outputs)
                    if metrics:
                        model.replace_samples(metrics.get("samples") or [])
                    if values is not None:
                        model.replace_values(values)
                    if listing is not None:
                        model.variables = listing
                    model.last_seq = max(model.last_seq, last_event)
                    host.render()
                if terminal:
                    with host.lock:
                        host.mode = "done"
                        host.done_event.set()
                    return
            await asyncio.sleep(min(host.poll_interval * (1 + failures), 30.0))


class ChangeFollower(_Follower):
    """Keeps a ``TaskListPanel``'s model current: the change feed, else re-listing every ``poll_interval`` s."""

    async def run(self) -> None:
        host = self.host
        ticker = asyncio.ensure_future(self._tick())
        try:
            if host.transport != "poll":
                try:
                    await self._stream()
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # noqa: BLE001 - fall back to polling
                    host.mode_detail = f"change feed unavailable: {short_error(e)}"
            self._set_mode("poll")
            while True:
                await self.relist()
                await asyncio.sleep(host.poll_interval)
        finally:
            ticker.cancel()

    async def _stream(self) -> None:
        host = self.host
        self._set_mode("stream")
        stream = host.aclient.stream_changes()
        # a change between the first list and the stream opening is caught by re-listing once it is up
        resync = asyncio.get_running_loop().call_later(1.0, lambda: asyncio.ensure_future(self.relist()))
        try:
            async for change in stream:
                with host.lock:
                    host.model.apply_change(change)
                    stale = host.model.counts_stale
                    host.model.counts_stale = False
                    host.throttle.request()
                if stale:  # exact counts come from GET /status
                    asyncio.ensure_future(self.refresh_counts())
        finally:
            resync.cancel()
            await stream.aclose()

    async def refresh_counts(self) -> None:
        host = self.host
        try:
            counts = await host.aclient.status()
        except Exception:  # noqa: BLE001
            return
        with host.lock:
            host.model.set_counts(counts)
            host.throttle.request()

    async def relist(self) -> None:
        host = self.host
        model = host.model
        try:
            page = await host.aclient.list(status=model.filter_status, tag=model.filter_tag, limit=model.limit)
        except Exception:  # noqa: BLE001
            return
        with host.lock:
            model.merge_page(page)
            host.throttle.request()
        await self.refresh_counts()

    async def _tick(self) -> None:
        """Ages and durations move on even when nothing happens."""
        while True:
            await asyncio.sleep(5.0)
            if not self.host.throttle.pending:
                self.host.render()
