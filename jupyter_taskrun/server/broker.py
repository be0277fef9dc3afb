"""In-process fan-out of persisted events to live subscribers (SSE, WebSocket, waiters).

Publishers call ``publish`` only after the event is in the store, so a subscriber
that falls behind can always catch up from the store: when its bounded queue
overflows the queue is dropped and the subscriber is marked ``lagged`` — it is
told to re-read, never silently given a gap. A stalled client therefore costs
at most ``maxsize`` events of memory and never slows the task or other clients.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Generic, TypeVar

T = TypeVar("T")

#: Key of the global change feed (per-task streams use the task id).
ALL_TASKS = "*"


class Subscription(Generic[T]):
    """One consumer's view of a stream: a bounded buffer plus a wake-up signal.

    Single consumer: one coroutine waits on it at a time (each stream, each ``TaskRun.wait``
    subscribes on its own); a second concurrent ``wait`` would take over the wake-up.
    """

    def __init__(self, broker: EventBroker, key: str, maxsize: int):
        self.broker = broker
        self.key = key
        self.maxsize = maxsize
        self._items: deque[T] = deque()
        self._waiter: asyncio.Future[bool] | None = None
        self.lagged = False
        self.closed = False

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(True)

    def _push(self, item: T) -> None:
        if self.lagged:
            return
        if len(self._items) >= self.maxsize:
            # drop the backlog; the consumer re-reads from the store from its last seq
            self._items.clear()
            self.lagged = True
        else:
            self._items.append(item)
        self._wake()

    def close(self) -> None:
        """Wake the consumer for the last time: its stream is over (it still unsubscribes)."""
        self.closed = True
        self._wake()

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait until something is buffered, the subscriber lagged, or it was closed; False on timeout.

        A bare future and a timer handle, not ``asyncio.wait_for``: that makes a Task per
        wait, which with 1,000 subscribers was a fifth of the server's CPU.
        """
        if self._items or self.lagged or self.closed:
            return True
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = None
        if timeout is not None:

            def expire() -> None:
                if not waiter.done():
                    waiter.set_result(False)

            timer = loop.call_later(max(0.0, timeout), expire)
        try:
            return await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def drain(self) -> list[T]:
        items = list(self._items)
        self._items.clear()
        return items

    def reset_lag(self) -> None:
        """Called by the consumer once it has re-read from the store."""
        self.lagged = False
        self._items.clear()

    def unsubscribe(self) -> None:
        self.broker.unsubscribe(self)

    def __enter__(self) -> Subscription[T]:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.unsubscribe()


class EventBroker:
    """Keyed publish/subscribe with per-subscriber bounded queues."""

    def __init__(self, maxsize: int = 10_000):
        self.maxsize = maxsize
        self._subs: dict[str, set[Subscription[Any]]] = {}

    def subscribe(self, key: str, maxsize: int | None = None) -> Subscription[Any]:
        sub: Subscription[Any] = Subscription(self, key, maxsize or self.maxsize)
        self._subs.setdefault(key, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription[Any]) -> None:
        subs = self._subs.get(sub.key)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.key]

    def publish(self, key: str, items: list[Any]) -> None:
        for sub in tuple(self._subs.get(key, ())):
            for item in items:
                sub._push(item)

    def close_key(self, key: str) -> None:
        """Wake every subscriber of ``key`` for the last time (e.g. the task was deleted)."""
        for sub in tuple(self._subs.get(key, ())):
            sub.close()

    def close_all(self) -> None:
        for key in list(self._subs):
            self.close_key(key)

    def subscriber_count(self, key: str | None = None) -> int:
        if key is None:
            return sum(len(s) for s in self._subs.values())
        return len(self._subs.get(key, ()))
