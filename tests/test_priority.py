"""Handler priorities: a higher priority group finishes before a lower one starts; handlers
of equal priority run concurrently."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from support import AppDir, Factory, domain

from fastapi_opinionated_eventbus import EventBus, OnInternalEvent, eventbus_api
from fastapi_opinionated_eventbus.testing import running, started_bus

# Declared lowest first: the order of declaration must not decide the order of running.
PRIORITY_SRC = """
    import asyncio
    import time

    from fastapi_opinionated_eventbus import OnInternalEvent

    order = []


    @OnInternalEvent("job.run", priority=-5)
    def lowest():  # sync, in a worker thread
        order.append("lowest")


    @OnInternalEvent("job.run")
    async def default_priority():
        order.append("default:start")
        order.append("default:end")


    @OnInternalEvent("job.run", priority=10)
    async def highest():
        order.append("highest:start")
        # Slow and suspending: a lower group that did not wait would start meanwhile.
        for _ in range(5):
            await asyncio.sleep(0.01)
        order.append("highest:end")


    @OnInternalEvent("job.run", priority=5)
    def middle_sync():
        order.append("middle:start")
        time.sleep(0.02)  # a slow sync handler (worker thread)
        order.append("middle:end")
"""


async def test_higher_priority_finishes_before_lower_priority_starts(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    app = eventbus_app_factory(app_dir({"jobs/handlers.py": PRIORITY_SRC}))
    handlers = domain("jobs.handlers")
    async with running(app):
        result = await eventbus_api().emit("job.run")

    assert result.ok and result.handled == 4
    assert handlers.order == [
        "highest:start",
        "highest:end",
        "middle:start",
        "middle:end",
        "default:start",
        "default:end",
        "lowest",
    ]


async def test_priority_order_holds_for_background_events(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    app = eventbus_app_factory(app_dir({"jobs/handlers.py": PRIORITY_SRC}))
    handlers = domain("jobs.handlers")
    async with running(app):
        bus = eventbus_api()
        bus.emit_nowait("job.run")
        assert await bus.drain(5) == 0

    assert handlers.order == [
        "highest:start",
        "highest:end",
        "middle:start",
        "middle:end",
        "default:start",
        "default:end",
        "lowest",
    ]


RENDEZVOUS_SRC = """
    import asyncio
    import threading
    import time

    from fastapi_opinionated_eventbus import OnInternalEvent

    done = []
    a_started = asyncio.Event()
    b_started = asyncio.Event()
    thread_started = threading.Event()


    # Each waits for the others: they only all finish when they run at the same time
    # (run one after another, the first one times out and fails).
    @OnInternalEvent("sync.point", priority=3)
    async def party_a():
        a_started.set()
        async with asyncio.timeout(5):
            await b_started.wait()
            while not thread_started.is_set():
                await asyncio.sleep(0.005)
        done.append("a")


    @OnInternalEvent("sync.point", priority=3)
    async def party_b():
        b_started.set()
        async with asyncio.timeout(5):
            await a_started.wait()
        done.append("b")


    @OnInternalEvent("sync.point", priority=3)
    def party_thread():  # in a worker thread
        thread_started.set()
        deadline = time.monotonic() + 5
        while not (a_started.is_set() and b_started.is_set()):
            if time.monotonic() > deadline:
                raise TimeoutError("the async handlers did not run while this one ran")
            time.sleep(0.005)
        done.append("thread")


    @OnInternalEvent("sync.point", priority=1)
    async def after():
        done.append(("after", sorted(x for x in done if isinstance(x, str))))
"""


async def test_handlers_of_equal_priority_run_concurrently(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    app = eventbus_app_factory(app_dir({"sync/handlers.py": RENDEZVOUS_SRC}))
    handlers = domain("sync.handlers")
    async with running(app):
        result = await eventbus_api().emit("sync.point")

    assert result.failures == ()
    assert result.handled == 4
    assert sorted(x for x in handlers.done if isinstance(x, str)) == ["a", "b", "thread"]
    # The lower group ran after the whole equal-priority group.
    assert handlers.done[-1] == ("after", ["a", "b", "thread"])


async def test_a_failing_higher_priority_handler_does_not_stop_lower_ones() -> None:
    order: list[str] = []

    async def first() -> None:
        order.append("first")
        raise RuntimeError("first failed")

    def second() -> None:
        order.append("second")

    async with started_bus() as bus:
        bus.subscribe("evt", second, priority=0)
        bus.subscribe("evt", first, priority=1)
        result = await bus.emit("evt")

    assert order == ["first", "second"]
    assert result.handled == 2
    assert [str(f.exception) for f in result.failures] == ["first failed"]


async def test_priorities_order_pattern_and_exact_handlers_together() -> None:
    order: list[str] = []

    async def audit_everything() -> None:
        order.append("*:start")
        await asyncio.sleep(0.01)
        order.append("*:end")

    async def exact() -> None:
        order.append("exact")

    async def pattern_low() -> None:
        order.append("order.*")

    async with started_bus() as bus:
        bus.subscribe("order.placed", exact, priority=5)
        bus.subscribe("*", audit_everything, priority=10)
        bus.subscribe("order.*", pattern_low, priority=-1)
        result = await bus.emit("order.placed")

    assert result.ok and result.handled == 3
    assert order == ["*:start", "*:end", "exact", "order.*"]


async def test_sync_handler_of_higher_priority_blocks_the_lower_group_until_it_returns() -> None:
    order: list[str] = []
    gate = threading.Event()

    def slow_sync() -> None:
        order.append("sync:start")
        if not gate.wait(5):
            raise TimeoutError("never released")
        order.append("sync:end")

    async def low() -> None:
        order.append("low")

    async with started_bus() as bus:
        bus.subscribe("evt", low, priority=0)
        bus.subscribe("evt", slow_sync, priority=2)
        task = asyncio.create_task(bus.emit("evt"))
        async with asyncio.timeout(5):
            while True:
                if "sync:start" in order:
                    break
                await asyncio.sleep(0.005)
        # Let the loop run a while: the lower group must not start before the release.
        for _ in range(20):
            await asyncio.sleep(0)
        assert order == ["sync:start"]
        gate.set()
        result = await task

    assert result.ok
    assert order == ["sync:start", "sync:end", "low"]


@pytest.mark.parametrize("priority", ["high", 1.5, True, None])
def test_priority_must_be_an_int(priority: Any) -> None:
    async def handler() -> None:
        pass

    with pytest.raises(TypeError, match=r"priority must be an int"):
        OnInternalEvent("evt", priority=priority)
    with pytest.raises(TypeError, match=r"priority must be an int"):
        EventBus().subscribe("evt", handler, priority=priority)
