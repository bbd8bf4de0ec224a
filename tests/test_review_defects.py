"""Defects the step-6 review found, each proven by a test that failed before its fix."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from support import AppDir, Factory

from fastapi_opinionated_eventbus import ConfigurationError, EventBus
from fastapi_opinionated_eventbus.testing import started_bus


# ---------------------------------------------------------------- configuration
@pytest.mark.parametrize("url", ["http://localhost:6379/0", "localhost:6379", "redis:/x"])
def test_a_redis_url_with_a_wrong_scheme_is_refused_at_app_create(
    app_dir: AppDir, eventbus_app_factory: Factory, url: str
) -> None:
    root = app_dir({"orders/handlers.py": ""})
    with pytest.raises(ConfigurationError, match="redis_url") as refused:
        eventbus_app_factory(root, backend="redis", redis_url=url)
    assert "redis://, rediss:// (TLS) or unix://" in str(refused.value)


def test_an_unknown_backend_lists_the_known_ones() -> None:
    with pytest.raises(ConfigurationError) as refused:
        EventBus(backend="rabbit")
    message = str(refused.value)
    assert "'rabbit'" in message and "'local'" in message and "'redis'" in message


# ---------------------------------------------------------------- subscribing
class _GeneratorCall:
    def __call__(self, payload: object) -> Iterator[None]:
        yield None


class _AsyncGeneratorCall:
    async def __call__(self, payload: object) -> AsyncIterator[None]:
        yield None


@pytest.mark.parametrize("handler", [_GeneratorCall(), _AsyncGeneratorCall()])
async def test_an_object_whose_call_is_a_generator_is_refused(handler: Any) -> None:
    async with started_bus() as bus:
        with pytest.raises(TypeError, match="__call__ is a generator function"):
            bus.subscribe("x", handler)


# ---------------------------------------------------------------- threads
async def test_plan_cache_eviction_is_safe_across_threads() -> None:
    """emit_nowait is documented thread-safe: threads resolving new names at once must not
    both evict the same cached plan (KeyError)."""
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def emit_many_names(bus: EventBus, worker: int) -> None:
        start.wait()
        try:
            for n in range(3_000):
                bus.emit_nowait(f"w{worker}.n{n}")
        except BaseException as exc:  # collected for the assertion
            errors.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        async with started_bus(pattern_cache_size=2) as bus:
            threads = [threading.Thread(target=emit_many_names, args=(bus, w)) for w in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                await asyncio.to_thread(thread.join, 30)
    finally:
        sys.setswitchinterval(interval)
    assert errors == []
