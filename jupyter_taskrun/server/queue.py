"""Bounded priority queue of task ids: higher priority first, FIFO within a priority."""

from __future__ import annotations

import asyncio
import heapq
import itertools

from ..errors import QueueFull


class TaskQueue:
    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self._heap: list[tuple[int, int, str]] = []
        self._ids: set[str] = set()
        self._counter = itertools.count()
        self._not_empty = asyncio.Event()

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, task_id: str) -> bool:
        return task_id in self._ids

    def check_room(self, n: int = 1) -> None:
        if len(self._ids) + n > self.maxsize:
            raise QueueFull(f"the task queue is full ({self.maxsize} tasks); retry later")

    def put(self, task_id: str, priority: int = 0, *, force: bool = False) -> None:
        """Queue a task; ``force`` bypasses the bound (re-queueing after a restart)."""
        if not force:
            self.check_room()
        heapq.heappush(self._heap, (-priority, next(self._counter), task_id))
        self._ids.add(task_id)
        self._not_empty.set()

    def remove(self, task_id: str) -> bool:
        """Drop a queued task (cancel); lazy: the heap entry is skipped when popped."""
        if task_id in self._ids:
            self._ids.discard(task_id)
            return True
        return False

    def position(self, task_id: str) -> int | None:
        """1-based place in line, or None when not queued."""
        if task_id not in self._ids:
            return None
        ahead = sorted(e for e in self._heap if e[2] in self._ids)
        for i, entry in enumerate(ahead):
            if entry[2] == task_id:
                return i + 1
        return None

    def pop_nowait(self) -> str | None:
        while self._heap:
            _, _, task_id = heapq.heappop(self._heap)
            if task_id in self._ids:
                self._ids.discard(task_id)
                if not self._ids:
                    self._not_empty.clear()
                return task_id
        self._not_empty.clear()
        return None

    async def wait_not_empty(self) -> None:
        while not self._ids:
            await self._not_empty.wait()
            if not self._ids:
                self._not_empty.clear()
