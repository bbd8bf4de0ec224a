"""Cycle detection: events emitted from handlers nest at most max_chain_depth deep; deeper
emits raise ChainDepthExceeded in the emitting handler, which is logged with the chain and
isolated like any handler failure, so a handler cycle ends instead of recursing forever."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from support import AppDir, Factory, domain, strip_ansi

from fastapi_opinionated_eventbus import (
    ChainDepthExceeded,
    EventBusError,
    current_event,
    eventbus_api,
)
from fastapi_opinionated_eventbus.testing import running, started_bus


def chain_text(length: int) -> str:
    """'a -> b -> a -> ...' with ``length`` names."""
    return " -> ".join("ab"[i % 2] for i in range(length))


CYCLE_SRC = """
    from fastapi_opinionated_eventbus import OnInternalEvent, current_event, eventbus_api

    calls = []


    @OnInternalEvent("a")
    async def on_a():
        calls.append(("a", len(current_event().chain)))
        await eventbus_api().emit("b")


    @OnInternalEvent("b")
    async def on_b():
        calls.append(("b", len(current_event().chain)))
        await eventbus_api().emit("a")
"""


async def test_a_handler_cycle_stops_at_the_default_depth_and_is_logged_with_its_chain(
    app_dir: AppDir, eventbus_app_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    app = eventbus_app_factory(app_dir({"cycle/handlers.py": CYCLE_SRC}))
    handlers = domain("cycle.handlers")
    async with running(app):
        result = await eventbus_api().emit("a")  # returns: no infinite recursion

    assert result.handled == 1
    # 32 nested emits ran (the default max_chain_depth), the 33rd was refused.
    assert len(handlers.calls) == 32
    assert handlers.calls == [("ab"[i % 2], i) for i in range(32)]
    log = strip_ansi(caplog.text)
    assert "ChainDepthExceeded: event 'a' emitted at depth 33 > max_chain_depth=32" in log
    assert "a handler cycle?" in log
    assert f"Chain: {chain_text(33)}" in log
    failed = [r for r in caplog.records if "ChainDepthExceeded" in r.getMessage()]
    assert len(failed) == 1 and failed[0].levelname == "ERROR"
    assert "Handler app.domains.cycle.handlers:on_b failed on event 'b'" in strip_ansi(
        failed[0].getMessage()
    )


async def test_max_chain_depth_option_is_respected(
    app_dir: AppDir, eventbus_app_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    app = eventbus_app_factory(app_dir({"cycle/handlers.py": CYCLE_SRC}), max_chain_depth=4)
    handlers = domain("cycle.handlers")
    async with running(app):
        bus = eventbus_api()
        result = await bus.emit("a")
        letters = await bus.dead_letters()

    assert handlers.calls == [("a", 0), ("b", 1), ("a", 2), ("b", 3)]
    assert result.handled == 1
    log = strip_ansi(caplog.text)
    assert "event 'a' emitted at depth 5 > max_chain_depth=4" in log
    assert "Chain: a -> b -> a -> b -> a" in log
    assert "Chain: a -> b -> a -> b -> a ->" not in log
    # The refused emit is an ordinary handler failure: it is also a dead letter.
    [letter] = letters
    assert letter.exception_type == "ChainDepthExceeded"
    assert letter.event.name == "b"
    assert letter.event.chain == ("a", "b", "a")


BACKGROUND_CYCLE_SRC = """
    from fastapi_opinionated_eventbus import OnInternalEvent, current_event, eventbus_api

    calls = []


    @OnInternalEvent("ping")
    async def on_ping():
        calls.append("ping")
        eventbus_api().emit_nowait("pong")


    @OnInternalEvent("pong")
    def on_pong():  # sync: emits from a worker thread
        calls.append("pong")
        eventbus_api().emit_nowait("ping")
"""


async def test_a_background_cycle_through_threads_ends_too(
    app_dir: AppDir, eventbus_app_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    app = eventbus_app_factory(
        app_dir({"pingpong/handlers.py": BACKGROUND_CYCLE_SRC}), max_chain_depth=6
    )
    handlers = domain("pingpong.handlers")
    async with running(app):
        bus = eventbus_api()
        bus.emit_nowait("ping")
        assert await bus.drain(5) == 0

    assert handlers.calls == ["ping", "pong"] * 3
    log = strip_ansi(caplog.text)
    assert "event 'ping' emitted at depth 7 > max_chain_depth=6" in log
    assert "Chain: ping -> pong -> ping -> pong -> ping -> pong -> ping" in log


async def test_a_linear_chain_up_to_the_limit_runs_and_one_more_level_is_refused() -> None:
    reached: list[tuple[str, tuple[str, ...]]] = []
    errors: list[BaseException] = []

    def make(level: int) -> Callable[[], Any]:
        async def handler() -> None:
            event = current_event()
            reached.append((event.name, event.chain))
            try:
                await bus.emit(f"e{level + 1}")
            except ChainDepthExceeded as exc:
                errors.append(exc)

        return handler

    async with started_bus(max_chain_depth=3) as bus:
        for level in range(1, 5):
            bus.subscribe(f"e{level}", make(level))
        result = await bus.emit("e1")

    assert result.ok
    # depth 1 (e1), 2 (e2), 3 (e3) run; e3's handler may not emit e4 (depth 4 > 3).
    assert reached == [("e1", ()), ("e2", ("e1",)), ("e3", ("e1", "e2"))]
    [error] = errors
    assert isinstance(error, RecursionError) and isinstance(error, EventBusError)
    assert str(error) == (
        "event 'e4' emitted at depth 4 > max_chain_depth=3; a handler cycle? "
        "Chain: e1 -> e2 -> e3 -> e4"
    )


async def test_a_strict_cycle_raises_to_the_top_level_emitter() -> None:
    async def on_a() -> None:
        await bus.emit("b", strict=True)

    async def on_b() -> None:
        await bus.emit("a", strict=True)

    async with started_bus(max_chain_depth=3) as bus:
        bus.subscribe("a", on_a)
        bus.subscribe("b", on_b)
        with pytest.raises(ExceptionGroup) as info:
            await bus.emit("a", strict=True)

    # The ChainDepthExceeded from the deepest level is inside the nested groups.
    matched, _ = info.value.split(ChainDepthExceeded)
    assert matched is not None
    leaves: list[BaseException] = []

    def collect(group: BaseExceptionGroup[Any]) -> None:
        for exc in group.exceptions:
            if isinstance(exc, BaseExceptionGroup):
                collect(exc)
            else:
                leaves.append(exc)

    collect(matched)
    assert [str(e).rsplit("Chain: ", 1)[1] for e in leaves] == ["a -> b -> a -> b"]
