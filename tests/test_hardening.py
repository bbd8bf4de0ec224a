"""Defects a hostile tester found (step 6b), each proven by a test that failed before."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi_opinionated_eventbus import HandlerTimeout
from fastapi_opinionated_eventbus.testing import started_bus


# ---------------------------------------------------------------- 2. timeouts
async def test_timeout_covers_the_coroutine_a_sync_callable_returns() -> None:
    """An async def behind a decorator written without functools.wraps looks sync; the
    coroutine it returns was awaited outside the timeout, so emit never returned."""

    def logged(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., Any]:
        def wrapper(*args: Any) -> Coroutine[Any, Any, None]:
            return fn(*args)

        return wrapper

    @logged
    async def never_done(_: int) -> None:
        await asyncio.Event().wait()

    async with started_bus() as bus:
        bus.subscribe("stuck", never_done, timeout=0.2)
        result = await asyncio.wait_for(bus.emit("stuck", 1), 10)
    [failure] = result.failures
    assert isinstance(failure.exception, HandlerTimeout)
    assert "coroutine it returned" in str(failure.exception)
