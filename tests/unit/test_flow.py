"""Capacity, the Redis consumer's slots for entries in flight, on its own (no Redis: it is
plain asyncio). The Acker needs a server: see tests/redis/test_redis_flow.py."""

from __future__ import annotations

import asyncio

from fastapi_opinionated_eventbus.backends.redis.flow import Capacity


async def let_waiters_run() -> None:
    """Give every ready task its turn: a waiter that could go on has then done so."""
    for _ in range(5):
        await asyncio.sleep(0)


def test_try_reserve_takes_what_is_free_up_to_what_is_wanted() -> None:
    capacity = Capacity(3)

    assert capacity.try_reserve(2) == 2
    assert capacity.try_reserve(5) == 1  # only one slot left
    assert capacity.try_reserve(1) == 0  # full
    capacity.release(2)
    assert capacity.try_reserve(5) == 2
    assert capacity.try_reserve(0) == 0
    assert capacity.try_reserve(-4) == 0


async def test_reserve_returns_at_once_when_there_is_room() -> None:
    capacity = Capacity(4)
    assert await asyncio.wait_for(capacity.reserve(3), 5) == 3
    assert await asyncio.wait_for(capacity.reserve(3), 5) == 1


async def test_reserve_waits_for_a_release_and_takes_only_what_it_freed() -> None:
    capacity = Capacity(2)
    assert capacity.try_reserve(2) == 2
    waiter = asyncio.create_task(capacity.reserve(5))

    await let_waiters_run()
    assert not waiter.done()  # no room: it waits

    capacity.release(1)
    assert await asyncio.wait_for(waiter, 5) == 1
    assert capacity.try_reserve(1) == 0


async def test_one_release_wakes_every_waiter_that_now_fits() -> None:
    capacity = Capacity(2)
    capacity.try_reserve(2)
    waiters = [asyncio.create_task(capacity.reserve(1)) for _ in range(3)]
    await let_waiters_run()

    capacity.release(2)
    await let_waiters_run()

    done = [w for w in waiters if w.done()]
    assert [w.result() for w in done] == [1, 1]
    [still_waiting] = [w for w in waiters if not w.done()]
    capacity.release(1)
    assert await asyncio.wait_for(still_waiting, 5) == 1


async def test_releasing_nothing_changes_nothing() -> None:
    capacity = Capacity(1)
    capacity.try_reserve(1)
    waiter = asyncio.create_task(capacity.reserve(1))
    await let_waiters_run()

    capacity.release(0)
    capacity.release(-1)
    await let_waiters_run()

    assert not waiter.done()
    capacity.release(1)
    assert await asyncio.wait_for(waiter, 5) == 1


async def test_many_readers_never_hold_more_than_the_size() -> None:
    size = 3
    capacity = Capacity(size)
    in_flight = 0
    most = 0
    handled = 0

    async def reader(wanted: int) -> None:
        nonlocal in_flight, most, handled
        for _ in range(5):
            taken = await capacity.reserve(wanted)
            assert 1 <= taken <= wanted
            in_flight += taken
            most = max(most, in_flight)
            await asyncio.sleep(0)  # entries in flight while the others try to read
            in_flight -= taken
            handled += taken
            capacity.release(taken)

    await asyncio.wait_for(asyncio.gather(*(reader(w) for w in (1, 2, 3, 5, 2, 1, 4))), 5)

    assert most == size  # full at times, never beyond
    assert in_flight == 0
    assert handled >= 7 * 5
    assert capacity.try_reserve(size + 1) == size  # every slot came back
