"""Graceful shutdown through the app's lifespan: in-flight background events are drained
within shutdown_timeout, the ones that do not finish are cancelled and reported by name and
id, and the bus refuses background emits once shutdown began and every emit after it."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

import pytest
from support import AppDir, Factory, domain, strip_ansi

from fastapi_opinionated_eventbus import EventBus, EventBusClosed, eventbus_api
from fastapi_opinionated_eventbus.testing import running


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.005)


SLOW_SRC = """
    import asyncio

    from fastapi_opinionated_eventbus import OnInternalEvent

    done = []


    @OnInternalEvent("thumbnail.render")
    async def render(n):
        await asyncio.sleep(0.05)
        done.append(n)
"""


async def test_1000_in_flight_background_events_all_finish_during_shutdown(
    app_dir: AppDir, eventbus_app_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    app = eventbus_app_factory(app_dir({"media/handlers.py": SLOW_SRC}), shutdown_timeout=20)
    handlers = domain("media.handlers")
    async with running(app):
        bus = eventbus_api()
        for n in range(1000):
            bus.emit_nowait("thumbnail.render", n)
        # Everything is still in flight when the app begins to shut down.
        assert bus.pending == 1000
        assert handlers.done == []

    assert len(handlers.done) == 1000
    assert sorted(handlers.done) == list(range(1000))
    assert bus.lost_events == 0
    assert bus.pending == 0
    assert "Shutdown:" not in strip_ansi(caplog.text)


STUCK_SRC = """
    import asyncio
    import threading

    from fastapi_opinionated_eventbus import OnInternalEvent

    never = asyncio.Event()
    release_thread = threading.Event()
    finished = []
    cancelled = []
    thread_returned = threading.Event()


    @OnInternalEvent("sync.stuck")
    async def stuck(n):
        try:
            await never.wait()
        except asyncio.CancelledError:
            cancelled.append(n)
            raise


    @OnInternalEvent("sync.quick")
    async def quick(n):
        await asyncio.sleep(0)
        finished.append(n)


    @OnInternalEvent("sync.stuck_in_thread")
    def stuck_in_thread(n):
        release_thread.wait(10)
        thread_returned.set()
"""


async def test_events_still_running_at_the_shutdown_timeout_are_cancelled_and_reported(
    app_dir: AppDir, eventbus_app_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    app = eventbus_app_factory(app_dir({"sync/handlers.py": STUCK_SRC}), shutdown_timeout=0.1)
    handlers = domain("sync.handlers")
    try:
        async with running(app):
            bus = eventbus_api()
            stuck = [bus.emit_nowait("sync.stuck", n) for n in range(3)]
            stuck.append(bus.emit_nowait("sync.stuck_in_thread", 3))
            for n in range(2):
                bus.emit_nowait("sync.quick", n)

        # The async handlers were cancelled: lost. The sync one runs on in its thread: it
        # is abandoned, not lost (6b item 5).
        assert (bus.lost_events, bus.abandoned_events) == (3, 1)
        assert sorted(handlers.finished) == [0, 1]
        log = strip_ansi(caplog.text)
        assert (
            "Shutdown: 3 background event(s) did not finish within 0.1s and were cancelled "
            "and lost" in log
        )
        assert "Shutdown: 1 background event(s) did not finish within 0.1s and were " in log
        for envelope in stuck:
            assert f"{envelope.name!r} (id={envelope.id}" in log
        assert "sync.quick" not in log.partition("Shutdown:")[2]
        lines = [r for r in caplog.records if "Shutdown:" in r.getMessage()]
        assert [r.levelname for r in lines] == ["ERROR", "WARNING"]
        assert "sync.stuck_in_thread" in lines[1].getMessage()
        # The async handlers were really cancelled, not left running.
        await wait_until(lambda: len(handlers.cancelled) == 3)
        assert sorted(handlers.cancelled) == [0, 1, 2]
    finally:
        handlers.release_thread.set()
    await wait_until(handlers.thread_returned.is_set)


DRAINING_SRC = """
    import asyncio

    from fastapi_opinionated_eventbus import EventBusClosed, OnInternalEvent, eventbus_api

    seen = []


    @OnInternalEvent("batch.flush")
    async def flush():
        bus = eventbus_api()
        # Wait (bounded) until the app's shutdown has begun.
        async with asyncio.timeout(5):
            while (await bus.health())["state"] != "draining":
                await asyncio.sleep(0.005)
        try:
            bus.emit_nowait("batch.flushed")
        except EventBusClosed as exc:
            seen.append(("emit_nowait", type(exc).__name__, str(exc)))
        try:
            bus.emit_after_response("batch.flushed")
        except EventBusClosed as exc:
            seen.append(("emit_after_response", type(exc).__name__, str(exc)))
        # An awaited emit still runs while draining: it is not a background event.
        result = await bus.emit("batch.flushed")
        seen.append(("emit", result.handled))


    @OnInternalEvent("batch.flushed")
    async def flushed():
        seen.append("flushed")
"""


async def test_while_draining_only_running_handlers_may_emit_in_the_background(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    """Work in flight may finish, including the events it emits; nobody else gets in."""
    app = eventbus_app_factory(app_dir({"batch/handlers.py": DRAINING_SRC}), shutdown_timeout=5)
    handlers = domain("batch.handlers")
    outsider: list[str] = []
    async with running(app):
        bus = eventbus_api()
        bus.emit_nowait("batch.flush")

        async def knock_while_draining() -> None:
            async with asyncio.timeout(5):
                while (await bus.health())["state"] != "draining":  # noqa: ASYNC110 - no event to wait on
                    await asyncio.sleep(0.005)
            try:
                bus.emit_nowait("batch.flushed")
            except EventBusClosed as exc:
                outsider.append(str(exc))

        knocking = asyncio.get_running_loop().create_task(knock_while_draining())

    await knocking
    assert outsider == [
        "cannot emit 'batch.flushed' in the background: the event bus is shutting down"
    ]
    assert bus.lost_events == 0
    # The handler's emit_nowait and emit_after_response (outside a request: the same)
    # were accepted and drained; its awaited emit ran at once.
    assert sorted(map(str, handlers.seen)) == sorted(
        ["flushed", "flushed", "flushed", str(("emit", 1))]
    )


async def test_after_shutdown_every_emit_raises_closed(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    app = eventbus_app_factory(app_dir({"batch/handlers.py": DRAINING_SRC}))
    handlers = domain("batch.handlers")
    async with running(app):
        bus = eventbus_api()

    assert bus.closed
    with pytest.raises(EventBusClosed, match=r"cannot emit 'batch.flushed'.*shut down"):
        await bus.emit("batch.flushed")
    with pytest.raises(EventBusClosed, match=r"cannot emit 'batch.flushed'"):
        bus.emit_nowait("batch.flushed")
    with pytest.raises(EventBusClosed, match=r"cannot emit 'batch.flushed'"):
        bus.emit_after_response("batch.flushed")
    assert handlers.seen == []


async def test_standalone_shutdown_returns_the_lost_count_and_logs_ids(
    caplog: pytest.LogCaptureFixture,
) -> None:
    never = asyncio.Event()

    async def hangs(n: int) -> None:
        await never.wait()

    bus = EventBus()
    await bus.start()
    bus.subscribe("hang", hangs)
    envelopes = [bus.emit_nowait("hang", n) for n in range(5)]
    lost = await bus.shutdown(0.05)
    assert lost == 5
    assert bus.lost_events == 5
    assert bus.pending == 0
    log = strip_ansi(caplog.text)
    ids = re.findall(r"'hang' \(id=([^),]+)", log.partition("Shutdown:")[2])
    assert sorted(ids) == sorted(e.id for e in envelopes)
    with pytest.raises(EventBusClosed, match="shutting down"):
        bus.emit_nowait("hang", 6)
    assert await bus.aclose(0.05) == 0
    with pytest.raises(EventBusClosed):
        await bus.emit("hang", 7)
