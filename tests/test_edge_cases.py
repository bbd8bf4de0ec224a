"""Edge cases of dispatch a review found broken: handlers raising CancelledError on their
own, cancelled emitters, handlers behind plain decorators, generator handlers, and
after-response emits from tasks that outlive their request."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
from support import AppDir, Factory, domain

from fastapi_opinionated_eventbus import eventbus_api
from fastapi_opinionated_eventbus.testing import running, started_bus


async def _raise_cancelled_without_being_cancelled() -> None:
    """What a handler sees when it awaits a future somebody else cancelled."""
    future = asyncio.get_running_loop().create_future()
    future.cancel()
    await future


# ---------------------------------------------------------------- background queue
async def test_background_handler_raising_cancelled_error_does_not_stall_the_queue() -> None:
    ran: list[str] = []

    async def awaits_a_cancelled_future(_: int) -> None:
        await _raise_cancelled_without_being_cancelled()

    async def records(value: int) -> None:
        ran.append(f"later:{value}")

    async with started_bus() as bus:
        bus.subscribe("broken", awaits_a_cancelled_future)
        bus.subscribe("later", records)
        bus.emit_nowait("broken", 1)
        await asyncio.sleep(0)  # the drainer ran "broken" and died with it
        bus.emit_nowait("later", 2)
        left = await asyncio.wait_for(bus.drain(timeout=1), 5)
        assert ran == ["later:2"]
        assert left == 0


async def test_background_cancelled_error_after_suspension_does_not_leak_pending() -> None:
    async def suspends_then_awaits_a_cancelled_future() -> None:
        await asyncio.sleep(0)
        await _raise_cancelled_without_being_cancelled()

    async with started_bus() as bus:
        bus.subscribe("broken", suspends_then_awaits_a_cancelled_future)
        bus.emit_nowait("broken")
        left = await asyncio.wait_for(bus.drain(timeout=1), 5)
        assert left == 0
        assert bus.pending == 0


# ---------------------------------------------------------------- awaited emit
async def test_concurrent_handler_raising_cancelled_error_is_isolated() -> None:
    ran: list[str] = []

    async def awaits_a_cancelled_future() -> None:
        await _raise_cancelled_without_being_cancelled()

    async def sibling() -> None:
        ran.append("sibling")

    async with started_bus() as bus:
        bus.subscribe("evt", awaits_a_cancelled_future)
        bus.subscribe("evt", sibling)
        result = await asyncio.wait_for(bus.emit("evt"), 5)
        assert ran == ["sibling"]
        assert len(result.failures) == 1


async def test_cancelling_the_emitter_waits_for_the_handlers_cleanup() -> None:
    started = asyncio.Event()
    cleaned_up: list[str] = []

    async def slow_first() -> None:
        await asyncio.Event().wait()  # held by the emitting task

    async def slow_second() -> None:
        started.set()
        try:
            await asyncio.Event().wait()  # an eager Task
        finally:
            await asyncio.sleep(0)
            cleaned_up.append("second")

    async with started_bus() as bus:
        bus.subscribe("evt", slow_first)
        bus.subscribe("evt", slow_second)
        emitter = asyncio.create_task(bus.emit("evt"))
        await asyncio.wait_for(started.wait(), 5)
        emitter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(emitter, 5)
        # emit() returned: every handler it started must have finished, cleanup included.
        assert cleaned_up == ["second"]


async def test_async_def_behind_a_plain_decorator_actually_runs() -> None:
    ran: list[int] = []

    async def handler(value: int) -> None:
        ran.append(value)

    # A common decorator written without functools.wraps / markcoroutine.
    def logged(fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return fn(*args, **kwargs)

        return wrapper

    async with started_bus() as bus:
        bus.subscribe("evt", logged(handler))
        result = await asyncio.wait_for(bus.emit("evt", 1), 5)
        # Either it runs, or it is reported: never a silent success that did nothing.
        assert ran == [1] or not result.ok


async def test_async_generator_handler_is_rejected_or_reported() -> None:
    ran: list[int] = []

    async def agen_handler(value: int) -> AsyncIterator[None]:
        ran.append(value)
        yield

    async with started_bus() as bus:
        try:
            bus.subscribe("evt", agen_handler)
        except TypeError:
            return
        result = await asyncio.wait_for(bus.emit("evt", 1), 5)
        assert ran == [1] or not result.ok


# ---------------------------------------------------------------- after response
LATE_SRC = """
    import asyncio

    from fastapi_opinionated.decorators.routing import Post

    from fastapi_opinionated_eventbus import OnInternalEvent, eventbus_api

    go_on = asyncio.Event()
    handled = []


    @OnInternalEvent("job.started")
    async def job(job_id):
        await go_on.wait()  # still running after the response was sent
        eventbus_api().emit_after_response("job.done", job_id)


    @OnInternalEvent("job.done")
    async def done(job_id):
        handled.append(job_id)


    @Post("/jobs/{job_id}")
    async def start(job_id: str):
        eventbus_api().emit_nowait("job.started", job_id)
        return {"ok": True}
"""


async def test_after_response_emit_from_a_background_handler_after_the_response_is_not_lost(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    app = eventbus_app_factory(app_dir({"jobs/handlers.py": LATE_SRC}))
    handlers = domain("jobs.handlers")
    transport = httpx.ASGITransport(app=app)
    async with running(app), httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        response = await c.post("/jobs/j-1")
        assert response.status_code == 200
        handlers.go_on.set()  # the request is over; the background handler goes on
        assert await asyncio.wait_for(eventbus_api().drain(2), 5) == 0
        assert handlers.handled == ["j-1"]
