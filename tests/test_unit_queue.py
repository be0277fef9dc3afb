"""Unit tests of ``server/queue.py`` (no server, no kernel): a bounded priority queue of task ids.

Higher priority first, first-in first-out within a priority; a full queue refuses with
``QueueFull`` (the API's ``429 queue-full``) unless forced; removed tasks are never popped;
``position`` is the 1-based place in line.
"""

from __future__ import annotations

import asyncio

import pytest

from jupyter_taskrun.errors import QueueFull
from jupyter_taskrun.server.queue import TaskQueue


def pop_all(q: TaskQueue) -> list[str]:
    out = []
    while (task_id := q.pop_nowait()) is not None:
        out.append(task_id)
    return out


def test_priority_first_then_fifo():
    q = TaskQueue(100)
    for task_id, priority in [("a", 0), ("b", 5), ("c", 0), ("d", 5), ("e", -1), ("f", 10), ("g", 0)]:
        q.put(task_id, priority)
    assert pop_all(q) == ["f", "b", "d", "a", "c", "g", "e"]


def test_fifo_holds_for_many_equal_priorities():
    q = TaskQueue(10_000)
    ids = [f"t{i}" for i in range(2000)]
    for task_id in ids:
        q.put(task_id)
    assert pop_all(q) == ids


def test_len_contains_and_pop_of_an_empty_queue():
    q = TaskQueue(5)
    assert len(q) == 0 and "a" not in q
    assert q.pop_nowait() is None
    q.put("a")
    q.put("b", 1)
    assert len(q) == 2 and "a" in q and "b" in q
    assert q.pop_nowait() == "b"
    assert "b" not in q and len(q) == 1


def test_bound_raises_queue_full_and_changes_nothing():
    q = TaskQueue(3)
    for task_id in "abc":
        q.put(task_id)
    with pytest.raises(QueueFull) as exc:
        q.put("d")
    assert exc.value.reason == "queue-full"
    assert "d" not in q and len(q) == 3
    assert pop_all(q) == ["a", "b", "c"]


def test_check_room_counts_a_whole_batch():
    q = TaskQueue(5)
    q.put("a")
    q.put("b")
    q.check_room(3)  # exactly fits
    with pytest.raises(QueueFull):
        q.check_room(4)
    assert len(q) == 2


def test_force_bypasses_the_bound():
    # re-queueing after a restart must not lose tasks because the bound was lowered meanwhile
    q = TaskQueue(1)
    q.put("a")
    q.put("b", force=True)
    q.put("c", 3, force=True)
    assert len(q) == 3
    with pytest.raises(QueueFull):
        q.put("d")
    assert pop_all(q) == ["c", "a", "b"]


def test_popping_makes_room_again():
    q = TaskQueue(2)
    q.put("a")
    q.put("b")
    assert q.pop_nowait() == "a"
    q.put("c")
    assert pop_all(q) == ["b", "c"]


def test_removed_tasks_are_never_popped_and_free_their_place():
    q = TaskQueue(3)
    for task_id, priority in [("a", 0), ("b", 1), ("c", 0)]:
        q.put(task_id, priority)
    assert q.remove("b") is True
    assert q.remove("b") is False  # already gone
    assert q.remove("never-queued") is False
    assert "b" not in q and len(q) == 2
    q.put("d")  # the removed task's place is free
    assert pop_all(q) == ["a", "c", "d"]


def test_remove_everything_leaves_an_empty_queue():
    q = TaskQueue(3)
    q.put("a")
    q.put("b")
    q.remove("a")
    q.remove("b")
    assert len(q) == 0 and q.pop_nowait() is None


def test_position_is_the_place_in_line():
    q = TaskQueue(10)
    for task_id, priority in [("a", 0), ("b", 2), ("c", 0), ("d", 2)]:
        q.put(task_id, priority)
    assert [q.position(t) for t in "bdac"] == [1, 2, 3, 4]
    q.remove("d")
    assert q.position("d") is None
    assert [q.position(t) for t in "bac"] == [1, 2, 3]
    q.pop_nowait()
    assert q.position("b") is None and q.position("a") == 1
    assert q.position("unknown") is None


async def test_wait_not_empty_wakes_on_put():
    q = TaskQueue(3)
    waiter = asyncio.ensure_future(q.wait_not_empty())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    q.put("a")
    await asyncio.wait_for(waiter, 1)
    assert q.pop_nowait() == "a"


async def test_wait_not_empty_keeps_waiting_when_the_only_task_was_removed():
    q = TaskQueue(3)
    q.put("a")
    q.remove("a")
    waiter = asyncio.ensure_future(q.wait_not_empty())
    await asyncio.sleep(0.02)
    assert not waiter.done(), "a removed task is not work"
    q.put("b")
    await asyncio.wait_for(waiter, 1)
    assert q.pop_nowait() == "b"


async def test_wait_not_empty_returns_at_once_when_there_is_work():
    q = TaskQueue(3)
    q.put("a")
    await asyncio.wait_for(q.wait_not_empty(), 1)
