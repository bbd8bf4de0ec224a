"""Waiting for acknowledgements with one timer: the publisher's timeout, without shield."""

from __future__ import annotations

import asyncio

from fastapi_opinionated_eventbus.backends.kafka.deadlines import Deadlines


async def test_a_resolved_future_wakes_its_waiter_with_true() -> None:
    deadlines = Deadlines(5.0)
    sent: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    waiter = deadlines.wait(sent)
    sent.set_result(None)
    assert await waiter is True


async def test_waiters_give_up_at_their_own_deadlines_in_order() -> None:
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(0.05)
    first: asyncio.Future[object] = loop.create_future()
    first_waiter = deadlines.wait(first)
    await asyncio.sleep(0.03)
    second: asyncio.Future[object] = loop.create_future()
    second_waiter = deadlines.wait(second)
    started = loop.time()
    assert await first_waiter is False
    assert not second_waiter.done()  # its own deadline is later
    assert await second_waiter is False
    assert loop.time() - started >= 0.045
    assert not first.done() and not second.done()  # never cancelled
    first.set_result(None)  # resolving late changes nothing
    second.set_exception(RuntimeError("late"))
    second.exception()


async def test_cancelling_the_waiter_leaves_the_future_alone() -> None:
    deadlines = Deadlines(5.0)
    sent: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(asyncio.wait_for(deadlines.wait(sent), 5.0))
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert not sent.done()
    sent.set_result(None)
    await asyncio.sleep(0)  # its done callback finds the waiter cancelled: no error
