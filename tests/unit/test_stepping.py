"""Resumed and start_in on hand-written coroutines: a coroutine whose first step ran
elsewhere finishes in the awaiting task, inside its own context."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from fastapi_opinionated_eventbus._core.stepping import Resumed, start_in

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")
set_inside: contextvars.ContextVar[str] = contextvars.ContextVar("set_inside", default="unset")


def context_with(value: str) -> contextvars.Context:
    context = contextvars.copy_context()
    context.run(request_id.set, value)
    return context


async def test_start_in_returns_none_when_the_coroutine_finished_in_its_first_step() -> None:
    ran: list[str] = []

    async def at_once() -> str:
        ran.append(request_id.get())
        return "dropped"

    assert start_in(at_once(), context_with("r-1")) is None
    assert ran == ["r-1"]


async def test_awaiting_the_rest_returns_the_coroutines_result() -> None:
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def two_steps() -> int:
        value = await future
        await asyncio.sleep(0)
        return value * 2

    rest = start_in(two_steps(), contextvars.copy_context())

    assert isinstance(rest, Resumed)
    future.set_result(21)
    assert await asyncio.wait_for(rest, 5) == 42


async def test_resumed_finishes_a_coroutine_stepped_by_hand() -> None:
    async def counts() -> int:
        total = 0
        for _ in range(3):
            await asyncio.sleep(0)
            total += 1
        return total

    coro = counts()
    context = contextvars.copy_context()
    waiting_on = context.run(coro.send, None)

    assert await Resumed(coro, context, waiting_on) == 3


async def test_an_exception_in_the_first_step_is_raised_by_start_in() -> None:
    async def fails() -> None:
        raise ValueError("first step")

    with pytest.raises(ValueError, match="first step"):
        start_in(fails(), contextvars.copy_context())


async def test_an_exception_after_suspending_is_raised_by_the_await() -> None:
    async def fails_later() -> None:
        await asyncio.sleep(0)
        raise ValueError("later step")

    rest = start_in(fails_later(), contextvars.copy_context())
    assert rest is not None
    with pytest.raises(ValueError, match="later step"):
        await asyncio.wait_for(rest, 5)


async def test_cancelling_the_awaiting_task_cancels_the_coroutine() -> None:
    entered = asyncio.Event()
    seen: list[str] = []

    async def waits_forever() -> None:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            seen.append("cancelled inside")
            raise

    async def awaiting() -> None:
        rest = start_in(waits_forever(), contextvars.copy_context())
        assert rest is not None
        await rest

    task = asyncio.create_task(awaiting())
    await asyncio.wait_for(entered.wait(), 5)
    task.cancel("shutdown")

    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert seen == ["cancelled inside"]
    assert task.cancelled()


async def test_a_coroutine_that_handles_its_cancellation_returns_its_result() -> None:
    entered = asyncio.Event()

    async def handles_it() -> str:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.sleep(0)  # may still suspend while unwinding
            return "cleaned up"
        return "never"

    async def awaiting() -> str:
        rest = start_in(handles_it(), contextvars.copy_context())
        assert rest is not None
        result: str = await rest
        return result

    task = asyncio.create_task(awaiting())
    await asyncio.wait_for(entered.wait(), 5)
    task.cancel()

    assert await asyncio.wait_for(task, 5) == "cleaned up"


async def test_every_step_runs_in_the_given_context() -> None:
    steps: list[tuple[str, str]] = []

    async def three_steps() -> None:
        steps.append((request_id.get(), set_inside.get()))
        set_inside.set("by step 1")
        await asyncio.sleep(0)
        steps.append((request_id.get(), set_inside.get()))
        await asyncio.sleep(0)
        steps.append((request_id.get(), set_inside.get()))

    request_id.set("the awaiting task's")
    context = context_with("the event's")
    rest = start_in(three_steps(), context)
    assert rest is not None
    await asyncio.wait_for(rest, 5)

    assert steps == [
        ("the event's", "unset"),
        ("the event's", "by step 1"),
        ("the event's", "by step 1"),
    ]
    # What the coroutine set stays in its context, not in the awaiting task's.
    assert (request_id.get(), set_inside.get()) == ("the awaiting task's", "unset")
    assert context.run(set_inside.get) == "by step 1"


async def test_the_current_task_inside_is_the_awaiting_task() -> None:
    tasks: list[asyncio.Task[object] | None] = []

    async def records_its_task() -> None:
        tasks.append(asyncio.current_task())
        await asyncio.sleep(0)
        tasks.append(asyncio.current_task())

    async def awaiting() -> None:
        rest = start_in(records_its_task(), contextvars.copy_context())
        assert rest is not None
        await rest

    task = asyncio.create_task(awaiting())
    await asyncio.wait_for(task, 5)

    assert tasks == [task, task]


async def test_a_timeout_entered_in_the_first_step_still_applies() -> None:
    # asyncio.timeout binds to the current task on entry: only right if the rest runs in
    # the same task that ran the first step.
    async def outruns_its_timeout() -> None:
        async with asyncio.timeout(0.01):
            await asyncio.Event().wait()

    async def awaiting() -> None:
        rest = start_in(outruns_its_timeout(), contextvars.copy_context())
        assert rest is not None
        await rest

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncio.create_task(awaiting()), 5)
