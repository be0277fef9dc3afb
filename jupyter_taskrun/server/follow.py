"""Replay-then-live: the one protocol every live stream of the service follows.

``TaskRun.follow`` (one task's events) and ``TaskRun.follow_changes`` (every task's
created/status/progress/deleted entries) return a ``Follower``: an async iterator that
subscribes to the broker *first*, then replays from the store after the client's last
seen id, then yields live items, skipping ids already yielded. A subscriber whose
bounded queue overflowed (lagged) re-reads from the store. So a resumed or slow client
gets no gap and no duplicate, and costs at most the broker's queue bound in memory.

What a follower yields: a non-empty ``list`` of events/changes (one write's worth),
``KEEPALIVE`` (nothing new for the keep-alive interval: the transport proves it is alive),
``FeedStart`` (first item of a feed followed from "now") and ``StreamEnd`` (last item of a
task's stream: it ended or was deleted). A transport only encodes them; it calls
``close()`` when its client goes away (from any callback) and ``aclose()`` where it
iterates, once it is done.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ..errors import TaskNotFound
from ..models import Change, Task, TaskEvent
from .broker import Subscription

if TYPE_CHECKING:
    from .service import TaskRun

T = TypeVar("T")

#: events or changes read from the store per query while replaying
REPLAY_PAGE = 1000


class Keepalive:
    """Nothing new within the keep-alive interval."""

    def __repr__(self) -> str:
        return "KEEPALIVE"


KEEPALIVE = Keepalive()


@dataclass(frozen=True)
class FeedStart:
    """A feed followed from now on: the resume point a client should remember."""

    last_event_id: int


@dataclass(frozen=True)
class StreamEnd:
    """A task's stream is over: the task is terminal and everything was yielded, or it was deleted."""

    task_id: str
    #: the terminal status; None when the task was deleted
    status: str | None

    @property
    def deleted(self) -> bool:
        return self.status is None

    def to_dict(self) -> dict[str, Any]:
        return {"task_id": self.task_id, "status": self.status, "deleted": self.deleted}


class Follower(Generic[T]):
    """One client's replay-then-live stream (see the module docstring); single consumer."""

    def __init__(self, sub: Subscription[Any], produce: Callable[[Follower[T], Subscription[Any]], AsyncGenerator[T, None]]):
        self._sub = sub
        #: set by close(): the consumer is gone, stop wherever the stream waits
        self.closed = False
        self._items = produce(self, sub)

    def __aiter__(self) -> Follower[T]:
        return self

    def __anext__(self) -> Any:
        return self._items.__anext__()

    def close(self) -> None:
        """End the stream from outside (its client went away); the iteration stops at once."""
        self.closed = True
        self._sub.close()
        self._sub.unsubscribe()  # nothing more is buffered for a client that is gone

    async def aclose(self) -> None:
        """Close and release the subscription; call it where the follower is iterated."""
        self.close()
        try:
            await self._items.aclose()
        finally:
            self._sub.unsubscribe()

    async def __aenter__(self) -> Follower[T]:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


FollowItem = list[TaskEvent] | Keepalive | StreamEnd
FeedItem = list[Change] | Keepalive | FeedStart


def task_events(service: TaskRun, task_id: str, after: int, interval: float) -> Callable[..., AsyncGenerator[FollowItem, None]]:
    """The producer of ``TaskRun.follow``: one task's events after ``after``, then ``StreamEnd``."""

    async def produce(follower: Follower[FollowItem], sub: Subscription[TaskEvent]) -> AsyncGenerator[FollowItem, None]:
        last = after
        while True:
            # (re)read from the store: the initial replay, and after a lag. The buffer is reset
            # *before* reading, so an event published while a replay write is blocked stays
            # buffered (or flags a new lag); duplicates are skipped by seq.
            sub.reset_lag()
            while True:
                try:
                    page = service.read_events(task_id, last, REPLAY_PAGE)
                except TaskNotFound:
                    yield StreamEnd(task_id, None)
                    return
                if page:
                    yield page
                    last = page[-1].seq
                if len(page) < REPLAY_PAGE:
                    break
            while True:
                try:
                    task = service.get(task_id)
                except TaskNotFound:
                    yield StreamEnd(task_id, None)
                    return
                if task.status.is_terminal and last >= task.last_seq:
                    yield StreamEnd(task_id, task.status.value)
                    return
                if not await sub.wait(interval):
                    yield KEEPALIVE
                    continue
                if sub.closed:
                    # the consumer left, the task was deleted, or the server is stopping
                    if not follower.closed:
                        try:
                            service.get(task_id)
                        except TaskNotFound:
                            yield StreamEnd(task_id, None)
                    return
                if sub.lagged:
                    break
                fresh = [e for e in sub.drain() if e.seq > last]
                if fresh:
                    yield fresh
                    last = fresh[-1].seq

    return produce


def changes(service: TaskRun, after: int | None, owner: str | None, interval: float) -> Callable[..., AsyncGenerator[FeedItem, None]]:
    """The producer of ``TaskRun.follow_changes``: the change feed after ``after`` (None: from now),
    showing ``owner``'s tasks only (None: everyone's). It never ends by itself."""

    def visible(change: Change) -> bool:
        # every change carries its task's owner; one without (older store) is shown to admins only
        return owner is None or change.data.get("owner") in (owner, "")

    async def produce(follower: Follower[FeedItem], sub: Subscription[Change]) -> AsyncGenerator[FeedItem, None]:
        if after is None:
            last = service.store.last_change_seq()
            yield FeedStart(last)
        else:
            last = after
        while True:
            sub.reset_lag()  # before reading, as in task_events
            while True:
                page = service.store.read_changes(last, REPLAY_PAGE)
                batch = [c for c in page if c.seq > last and visible(c)]
                if page:
                    last = max(last, page[-1].seq)
                if batch:
                    yield batch
                if len(page) < REPLAY_PAGE:
                    break
            while not sub.lagged:
                if not await sub.wait(interval):
                    yield KEEPALIVE
                    continue
                if sub.closed:
                    return
                if sub.lagged:
                    break
                items = sub.drain()
                batch = [c for c in items if c.seq > last and visible(c)]
                if items:
                    last = max(last, items[-1].seq)
                if batch:
                    yield batch

    return produce


async def until_terminal(service: TaskRun, task_id: str, timeout: float | None) -> Task:
    """``TaskRun.wait``: the task once it ends and all its events are stored (so that its logs and
    outputs are whole when the waiter reads them, even while a full disk holds writes back), or as
    it is after ``timeout`` seconds (live only: each wake-up re-reads the task, so a one-item
    queue is enough; the broker publishes only what is stored, so the last wake-up comes after it)."""

    def ended(task: Task) -> bool:
        return task.status.is_terminal and not service.recorder.has_unwritten(task_id)

    task = service.get(task_id)
    if ended(task):
        return task
    deadline = None if timeout is None else time.monotonic() + timeout
    with service.broker.subscribe(task_id, maxsize=1) as sub:
        while True:
            task = service.get(task_id)
            if ended(task):
                return task
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return task
            if not await sub.wait(remaining):
                return service.get(task_id)
            sub.reset_lag()
            sub.drain()
            if sub.closed:
                return service.get(task_id)
