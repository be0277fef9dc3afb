"""Unit tests of ``server/broker.py`` (no server, no kernel): what the module docstring promises.

Subscribers of a key get every published item, in publish order, and nothing of other keys;
a subscriber whose bounded queue overflows drops its backlog and is marked ``lagged`` (never
handed a gap) until it resets; closing a key wakes its subscribers for the last time;
unsubscribing (or leaving the ``with`` block) forgets the subscriber. Wake-ups come in rounds:
what is published before a round runs goes out in it, and a key's next round waits as long as
its consumers took in the last one (measured, no constant).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from jupyter_taskrun.server.broker import ALL_TASKS, EventBroker


def test_subscribe_counts_and_unsubscribe_forgets():
    broker = EventBroker()
    a = broker.subscribe("t1")
    b = broker.subscribe("t1")
    c = broker.subscribe(ALL_TASKS)
    assert broker.subscriber_count("t1") == 2
    assert broker.subscriber_count(ALL_TASKS) == 1
    assert broker.subscriber_count() == 3
    assert broker.subscriber_count("nobody") == 0
    a.unsubscribe()
    assert broker.subscriber_count("t1") == 1
    a.unsubscribe()  # twice is harmless
    assert broker.subscriber_count("t1") == 1
    with b:
        pass
    assert broker.subscriber_count("t1") == 0
    assert broker.subscriber_count() == 1
    c.unsubscribe()
    assert broker.subscriber_count() == 0


def test_maxsize_defaults_to_the_broker_s():
    broker = EventBroker(maxsize=7)
    assert broker.subscribe("k").maxsize == 7
    assert broker.subscribe("k", maxsize=3).maxsize == 3


def test_fan_out_keeps_publish_order_for_every_subscriber_and_only_their_key():
    broker = EventBroker()
    subs = [broker.subscribe("t1") for _ in range(5)]
    other = broker.subscribe("t2")
    broker.publish("t1", [1, 2, 3])
    broker.publish("t2", ["x"])
    broker.publish("t1", [4])
    broker.publish("t1", [])
    broker.publish("nobody-listens", [99])
    for sub in subs:
        assert sub.drain() == [1, 2, 3, 4]
        assert sub.drain() == []  # drained means gone
        assert not sub.lagged
    assert other.drain() == ["x"]


def test_a_subscriber_added_later_sees_only_later_items():
    broker = EventBroker()
    early = broker.subscribe("k")
    broker.publish("k", [1])
    late = broker.subscribe("k")
    broker.publish("k", [2])
    assert early.drain() == [1, 2]
    assert late.drain() == [2]


def test_overflow_drops_the_backlog_and_marks_lagged_without_a_gap():
    broker = EventBroker()
    slow = broker.subscribe("k", maxsize=3)
    fast = broker.subscribe("k", maxsize=100)
    broker.publish("k", [1, 2, 3])
    assert not slow.lagged  # exactly full is not an overflow
    broker.publish("k", [4, 5])
    assert slow.lagged
    # nothing is handed out once lagged: the consumer must re-read from the store
    assert slow.drain() == []
    broker.publish("k", [6])
    assert slow.drain() == []
    assert slow.lagged
    # the other subscriber is unaffected
    assert fast.drain() == [1, 2, 3, 4, 5, 6]
    # after the re-read the subscriber gets new items again, from the next one published
    slow.reset_lag()
    assert not slow.lagged
    broker.publish("k", [7, 8])
    assert slow.drain() == [7, 8]


def test_reset_lag_discards_what_was_buffered():
    broker = EventBroker()
    sub = broker.subscribe("k", maxsize=10)
    broker.publish("k", [1, 2])
    sub.reset_lag()  # the consumer re-reads from the store, which already holds these
    assert sub.drain() == []


async def test_wait_returns_at_once_when_something_is_there():
    broker = EventBroker()
    sub = broker.subscribe("k", maxsize=1)
    broker.publish("k", [1])
    assert await asyncio.wait_for(sub.wait(), 1) is True
    sub.drain()
    broker.publish("k", [2, 3])  # overflow: lagged also wakes
    assert sub.lagged and await asyncio.wait_for(sub.wait(), 1) is True


async def test_wait_times_out_with_false():
    sub = EventBroker().subscribe("k")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    assert await sub.wait(0.05) is False
    assert loop.time() - t0 >= 0.04
    assert await sub.wait(0) is False


async def test_publish_wakes_a_waiting_subscriber():
    broker = EventBroker()
    sub = broker.subscribe("k")
    waiter = asyncio.ensure_future(sub.wait(5))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    broker.publish("k", ["event"])
    assert await asyncio.wait_for(waiter, 1) is True
    assert sub.drain() == ["event"]


async def test_close_key_wakes_its_subscribers_for_the_last_time():
    broker = EventBroker()
    subs = [broker.subscribe("k") for _ in range(3)]
    bystander = broker.subscribe("other")
    waiters = [asyncio.ensure_future(s.wait(5)) for s in subs]
    await asyncio.sleep(0.01)
    broker.close_key("k")
    assert await asyncio.wait_for(asyncio.gather(*waiters), 1) == [True, True, True]
    assert all(s.closed for s in subs)
    assert not bystander.closed
    # a closed subscription does not block its consumer any more
    assert await asyncio.wait_for(subs[0].wait(5), 1) is True


async def test_close_all_closes_every_key():
    broker = EventBroker()
    subs = [broker.subscribe(key) for key in ("a", "b", ALL_TASKS)]
    broker.close_all()
    assert all(s.closed for s in subs)
    for s in subs:
        assert await asyncio.wait_for(s.wait(5), 1) is True


def test_publish_while_a_subscriber_leaves_is_safe():
    broker = EventBroker()
    subs = [broker.subscribe("k", maxsize=1) for _ in range(3)]
    for s in subs:
        s.unsubscribe()
    broker.publish("k", [1, 2])
    assert broker.subscriber_count() == 0


@pytest.mark.parametrize("maxsize", [1, 2, 50])
def test_memory_is_bounded_by_maxsize(maxsize):
    broker = EventBroker()
    sub = broker.subscribe("k", maxsize=maxsize)
    for i in range(1000):
        broker.publish("k", [i])
        assert len(sub._items) <= maxsize


async def test_what_is_published_before_a_round_runs_goes_out_in_that_one_round():
    broker = EventBroker()
    subs = [broker.subscribe("k") for _ in range(5)]
    waiters = [asyncio.ensure_future(s.wait(5)) for s in subs]
    await asyncio.sleep(0.01)
    for i in range(4):  # four stored batches in one loop turn: one wake-up per subscriber
        broker.publish("k", [i])
    assert await asyncio.wait_for(asyncio.gather(*waiters), 1) == [True] * 5
    assert [s.drain() for s in subs] == [[0, 1, 2, 3]] * 5
    assert (broker.rounds, broker.wakeups) == (1, 5)


async def test_the_next_round_waits_as_long_as_the_last_one_cost():
    broker = EventBroker()
    sub = broker.subscribe("k")
    loop = asyncio.get_running_loop()

    async def consumer(cost: float) -> float:
        """Wait, take what is there, block the loop for ``cost`` s (a slow round); return the wake time."""
        assert await sub.wait(5)
        woke = loop.time()
        sub.drain()
        time.sleep(cost)
        return woke

    first = asyncio.ensure_future(consumer(0.05))
    await asyncio.sleep(0.01)
    broker.publish("k", [1])
    await first
    second = asyncio.ensure_future(consumer(0.0))
    await asyncio.sleep(0)  # the consumer waits again; the round's end is recorded meanwhile
    published = loop.time()
    broker.publish("k", [2])
    woke = await asyncio.wait_for(second, 5)
    # the last round blocked the loop for 50 ms: this one starts no sooner than ~50 ms after it ended
    assert woke - published >= 0.04
    third = asyncio.ensure_future(consumer(0.0))
    await asyncio.sleep(0.01)  # a cheap round (microseconds) costs the next one nothing
    published = loop.time()
    broker.publish("k", [3])
    assert await asyncio.wait_for(third, 1) - published < 0.5


async def test_one_timer_per_subscription_still_times_every_wait_out():
    sub = EventBroker().subscribe("k")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    assert await sub.wait(0.05) is False  # arms the timer
    assert await sub.wait(0.3) is False  # the first timer fired: a new one, for the later deadline
    assert loop.time() - t0 >= 0.33
    t1 = loop.time()
    long = asyncio.ensure_future(sub.wait(30))
    await asyncio.sleep(0.01)
    sub._push("x")
    sub._wake()
    assert await long is True
    sub.drain()
    assert await sub.wait(0.05) is False  # earlier than the armed 30 s timer: re-armed
    assert loop.time() - t1 < 5
    sub.unsubscribe()
    assert sub._timer is None
