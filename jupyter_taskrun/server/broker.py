"""In-process fan-out of persisted events to live subscribers (SSE, WebSocket, waiters).

Publishers call ``publish`` only after the event is in the store, so a subscriber
that falls behind can always catch up from the store: when its bounded queue
overflows the queue is dropped and the subscriber is marked ``lagged`` — it is
told to re-read, never silently given a gap. A stalled client therefore costs
at most ``maxsize`` events of memory and never slows the task or other clients.

Wake-ups come in rounds, paced by what they cost. ``publish`` buffers, then a round wakes every
waiting subscriber of the key: at once if no pause is due, else when it is over (one round carries
everything published meanwhile). The loop time the woken consumers then spend (their writes,
measured from the loop) is the pause before that key's next round. So
fan-out takes at most about half the loop: with one subscriber a round costs microseconds and
adds nothing; with 1,000 each round carries everything published since the last one (fewer,
larger writes) and the rest of the loop (reading the kernel's output, REST) is never starved,
whatever the machine. No constant is tuned to one machine: the pause is the measured cost.
"""

from __future__ import annotations

import asyncio
import time
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
        self._timer: asyncio.TimerHandle | None = None
        self._deadline: float | None = None
        self.lagged = False
        self.closed = False

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(True)

    def _push(self, item: T) -> None:
        """Buffer ``item`` (the broker's next round wakes the consumer)."""
        if self.lagged:
            return
        if len(self._items) >= self.maxsize:
            # drop the backlog; the consumer re-reads from the store from its last seq
            self._items.clear()
            self.lagged = True
        else:
            self._items.append(item)

    @property
    def ready(self) -> bool:
        """Something to hand over: buffered items, a lag, or the end."""
        return bool(self._items) or self.lagged or self.closed

    def close(self) -> None:
        """Wake the consumer for the last time: its stream is over (it still unsubscribes)."""
        self.closed = True
        self._wake()

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait until something is buffered, the subscriber lagged, or it was closed; False on timeout.

        A bare future, not ``asyncio.wait_for`` (a Task per wait was a fifth of the server's CPU
        with 1,000 subscribers), and one timer per subscription that is re-armed only when it
        fires, not one per wait (creating and cancelling 1,000 timers per round was a sixth).
        """
        if self.ready:
            return True
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        if timeout is not None:
            self._deadline = loop.time() + max(0.0, timeout)
            timer = self._timer
            if timer is None or timer.when() > self._deadline:
                if timer is not None:
                    timer.cancel()
                self._timer = loop.call_at(self._deadline, self._expire)
        else:
            self._deadline = None
        try:
            return await waiter
        finally:
            self._waiter = None

    def _expire(self) -> None:
        self._timer = None
        waiter, deadline = self._waiter, self._deadline
        if waiter is None or waiter.done() or deadline is None:
            return  # nobody waits (the next wait arms a new timer), or without a timeout
        loop = asyncio.get_running_loop()
        if loop.time() >= deadline:
            waiter.set_result(False)
        else:  # armed for an earlier wait: this one's deadline is later
            self._timer = loop.call_at(deadline, self._expire)

    def drain(self) -> list[T]:
        items = list(self._items)
        self._items.clear()
        return items

    def reset_lag(self) -> None:
        """Called by the consumer once it has re-read from the store."""
        self.lagged = False
        self._items.clear()

    def unsubscribe(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.broker.unsubscribe(self)

    def __enter__(self) -> Subscription[T]:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.unsubscribe()


class _Pacing:
    """One key's rounds: the one scheduled, when the next may start, the running one's start."""

    __slots__ = ("handle", "next_at", "started", "running")

    def __init__(self) -> None:
        self.handle: asyncio.Handle | None = None
        self.next_at = 0.0
        self.started = 0.0
        #: woken consumers have not all run yet (the round's cost is not known)
        self.running = False


class EventBroker:
    """Keyed publish/subscribe with per-subscriber bounded queues, woken in paced rounds."""

    def __init__(self, maxsize: int = 10_000):
        self.maxsize = maxsize
        self._subs: dict[str, set[Subscription[Any]]] = {}
        self._pacing: dict[str, _Pacing] = {}
        #: rounds run and consumers woken (load-independent counts, for tests and benchmarks)
        self.rounds = 0
        self.wakeups = 0

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
                pacing = self._pacing.pop(sub.key, None)
                if pacing is not None and pacing.handle is not None:
                    pacing.handle.cancel()

    def publish(self, key: str, items: list[Any]) -> None:
        subs = self._subs.get(key)
        if not subs or not items:
            return
        for sub in subs:
            for item in items:
                sub._push(item)
        self._schedule_round(key)

    def _schedule_round(self, key: str) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # no loop, so nobody waits: wait() finds the items
            return
        pacing = self._pacing.get(key)
        if pacing is None:
            pacing = self._pacing[key] = _Pacing()
        if pacing.handle is None:  # else the scheduled round will carry these items too
            self._round(key, pacing)

    def _round(self, key: str, pacing: _Pacing) -> None:
        """Wake every subscriber of ``key`` with something to take, now if no pause is due (a
        waiter is woken as directly as by a plain publish), else once it is over. The woken
        consumers run between two callbacks (asyncio runs callbacks in order): their difference
        is what this round cost the loop."""
        pacing.handle = None
        loop = asyncio.get_running_loop()
        delay = pacing.next_at - time.monotonic()
        if pacing.running or delay > 0:
            pacing.handle = loop.call_later(max(0.0, delay), self._round, key, pacing)
            return
        ready = [sub for sub in self._subs.get(key, ()) if sub.ready and sub._waiter is not None]
        if not ready:
            return
        pacing.running = True
        loop.call_soon(self._round_started, pacing)
        for sub in ready:
            sub._wake()
        loop.call_soon(self._round_ended, pacing)
        self.rounds += 1
        self.wakeups += len(ready)

    @staticmethod
    def _round_started(pacing: _Pacing) -> None:
        pacing.started = time.monotonic()

    @staticmethod
    def _round_ended(pacing: _Pacing) -> None:
        pacing.running = False
        now = time.monotonic()
        # the next round waits as long as this one took: fan-out gets at most half the loop
        pacing.next_at = now + (now - pacing.started)

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
