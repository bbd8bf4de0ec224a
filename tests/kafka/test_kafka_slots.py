"""The consumer's concurrency bound: at most ``limit`` at once, waiters served in order."""

from __future__ import annotations

import asyncio

from fastapi_opinionated_eventbus.backends.kafka.slots import Slots


async def _hold(slots: Slots, seconds: float, log: list[int], index: int) -> None:
    if not slots.try_take():
        await slots.take()
    try:
        log.append(index)
        await asyncio.sleep(seconds)
    finally:
        slots.give()


async def test_at_most_limit_hold_a_slot_and_waiters_go_in_order() -> None:
    slots, log = Slots(2), list[int]()
    running = peak = 0

    async def hold(index: int) -> None:
        nonlocal running, peak
        if not slots.try_take():
            await slots.take()
        try:
            running += 1
            peak = max(peak, running)
            log.append(index)
            await asyncio.sleep(0.01)
        finally:
            running -= 1
            slots.give()

    await asyncio.gather(*(hold(i) for i in range(10)))
    assert (peak, log) == (2, list(range(10)))
    assert slots.try_take() and slots.try_take() and not slots.try_take()


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    slots, log = Slots(2), list[int]()
    tasks = [asyncio.create_task(_hold(slots, 0.05, log, i)) for i in range(4)]
    await asyncio.sleep(0.01)
    tasks[2].cancel()  # waiting for a slot
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[2], asyncio.CancelledError)
    assert log == [0, 1, 3]
    assert slots.try_take() and slots.try_take() and not slots.try_take()


async def test_a_slot_handed_to_a_waiter_cancelled_meanwhile_goes_on() -> None:
    slots = Slots(1)
    assert slots.try_take()
    first = asyncio.create_task(slots.take())
    second = asyncio.create_task(slots.take())
    await asyncio.sleep(0)
    slots.give()  # to the first waiter, which is cancelled before it runs
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    await asyncio.wait_for(second, 1)  # the slot went on to the next waiter
    slots.give()
    assert slots.try_take() and not slots.try_take()


async def test_a_waiter_popped_by_give_after_its_cancellation_frees_the_slot() -> None:
    slots = Slots(1)
    assert slots.try_take()
    waiting = asyncio.create_task(slots.take())
    await asyncio.sleep(0)
    waiting.cancel()  # its future is cancelled now; the task unwinds on its next step
    slots.give()  # before that: skips the cancelled waiter, taking it off the queue
    [outcome] = await asyncio.gather(waiting, return_exceptions=True)
    assert isinstance(outcome, asyncio.CancelledError)
    assert slots.try_take() and not slots.try_take()
