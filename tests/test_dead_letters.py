"""Dead letters: a handler's failure after its last attempt is kept (bounded) with what is
needed to understand and replay it; replay re-runs only that handler."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from support import AppDir, Factory, domain, strip_ansi

from fastapi_opinionated_eventbus import (
    DeadLetter,
    HandlerTimeout,
    RetryPolicy,
    current_event,
    eventbus_api,
)
from fastapi_opinionated_eventbus.testing import running, started_bus

SHIPPING_SRC = """
    from fastapi_opinionated_eventbus import OnInternalEvent, RetryPolicy, current_event

    carrier_down = True
    calls = []
    TWICE = RetryPolicy(max_attempts=2, initial_delay=0.01, jitter=0)


    @OnInternalEvent("order.shipped", retry=TWICE)
    async def book_carrier(order_id, *, weight):
        event = current_event()
        calls.append(("book_carrier", order_id, weight, event.id, event.attempt))
        if carrier_down:
            raise ConnectionRefusedError(f"carrier API refused order {order_id}")


    @OnInternalEvent("order.shipped")
    def notify_customer(order_id, *, weight):
        calls.append(("notify_customer", order_id, weight, current_event().id, 1))
"""

BOOK_CARRIER = "app.domains.shipping.handlers:book_carrier"


async def test_a_final_failure_becomes_a_dead_letter_with_everything_to_understand_it(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    app = eventbus_app_factory(app_dir({"shipping/handlers.py": SHIPPING_SRC}))
    before = datetime.now(UTC)
    async with running(app):
        bus = eventbus_api()
        result = await bus.emit("order.shipped", "o-1", weight=2.5)
        letters = await bus.dead_letters()

    assert result.event is not None
    [letter] = letters
    assert isinstance(letter, DeadLetter)
    assert letter.handler == BOOK_CARRIER
    assert letter.exception_type == "ConnectionRefusedError"
    assert letter.message == "carrier API refused order o-1"
    assert letter.attempts == 2
    assert letter.traceback.startswith("Traceback (most recent call last)")
    assert "raise ConnectionRefusedError" in letter.traceback
    assert "shipping/handlers.py" in letter.traceback
    assert letter.traceback.rstrip().endswith(
        "ConnectionRefusedError: carrier API refused order o-1"
    )
    assert letter.event.name == "order.shipped"
    assert letter.event.id == result.event.id
    assert letter.event.args == ("o-1",)
    assert letter.event.kwargs == {"weight": 2.5}
    assert before <= letter.failed_at <= datetime.now(UTC)


async def test_replay_after_fixing_the_cause_succeeds_and_empties_the_store(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    app = eventbus_app_factory(app_dir({"shipping/handlers.py": SHIPPING_SRC}))
    handlers: Any = domain("shipping.handlers")  # the app's module: its names unknown to mypy
    async with running(app):
        bus = eventbus_api()
        first = await bus.emit("order.shipped", "o-2", weight=1.0)
        assert len(await bus.dead_letters()) == 1
        handlers.calls.clear()

        handlers.carrier_down = False
        replay = await bus.replay_dead_letters()
        remaining = await bus.dead_letters()

    assert first.event is not None
    assert replay.ok and replay.handled == 1
    assert remaining == []
    # Only the failed handler ran again, with the original event (same id, attempt 1).
    assert handlers.calls == [("book_carrier", "o-2", 1.0, first.event.id, 1)]


async def test_a_failing_replay_puts_the_letter_back(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    app = eventbus_app_factory(app_dir({"shipping/handlers.py": SHIPPING_SRC}))
    handlers: Any = domain("shipping.handlers")  # the app's module: its names unknown to mypy
    async with running(app):
        bus = eventbus_api()
        first = await bus.emit("order.shipped", "o-3", weight=4.0)
        [original] = await bus.dead_letters()
        handlers.calls.clear()

        replay = await bus.replay_dead_letters()  # the carrier is still down
        [again] = await bus.dead_letters()

        handlers.carrier_down = False
        fixed = await bus.replay_dead_letters()
        final = await bus.dead_letters()

    assert first.event is not None
    assert replay.handled == 1
    [failure] = replay.failures
    assert failure.handler == BOOK_CARRIER
    assert isinstance(failure.exception, ConnectionRefusedError)
    # The replay went through the handler's retry policy again (2 attempts).
    assert [attempt for *_, attempt in handlers.calls[:2]] == [1, 2]
    assert again.event.id == original.event.id == first.event.id
    assert again.handler == BOOK_CARRIER and again.attempts == 2
    assert again.failed_at >= original.failed_at
    assert fixed.ok and final == []


async def test_the_store_keeps_the_newest_letters_and_counts_the_dropped_ones(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    app = eventbus_app_factory(
        app_dir({"shipping/handlers.py": SHIPPING_SRC}), dead_letter_capacity=3
    )
    async with running(app):
        bus = eventbus_api()
        for n in range(5):
            await bus.emit("order.shipped", f"o-{n}", weight=float(n))
        letters = await bus.dead_letters()
        health = await bus.health()
        dropped = health["dropped_dead_letters"]

    assert [letter.event.args for letter in letters] == [("o-2",), ("o-3",), ("o-4",)]
    assert dropped == 2
    assert health["dead_letters"] == 3 and health["dropped_dead_letters"] == 2


async def test_background_failures_and_timeouts_become_dead_letters_too() -> None:
    async def broken(n: int) -> None:
        raise KeyError(n)

    async def too_slow(n: int) -> None:
        await asyncio.sleep(30)

    async with started_bus() as bus:
        bus.subscribe("job", broken)
        bus.subscribe("job", too_slow, timeout=0.02)
        envelope = bus.emit_nowait("job", 7)
        assert await bus.drain(5) == 0
        letters = await bus.dead_letters()

    by_handler = {letter.handler.rsplit(".", 1)[-1]: letter for letter in letters}
    assert set(by_handler) == {"broken", "too_slow"}
    assert by_handler["broken"].exception_type == "KeyError"
    assert by_handler["broken"].message == "7"
    assert by_handler["too_slow"].exception_type == HandlerTimeout.__qualname__
    assert all(letter.event.id == envelope.id for letter in letters)
    assert all(letter.attempts == 1 for letter in letters)


async def test_a_letter_whose_handler_is_no_longer_subscribed_is_kept_and_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def gone() -> None:
        raise RuntimeError("boom")

    async with started_bus() as bus:
        bus.subscribe("evt", gone)
        await bus.emit("evt")
        assert bus.unsubscribe("evt", gone)
        result = await bus.replay_dead_letters()
        letters = await bus.dead_letters()

    assert result.failures == ()
    assert [letter.handler.rsplit(".", 1)[-1] for letter in letters] == ["gone"]
    [warning] = [
        strip_ansi(r.getMessage()) for r in caplog.records if "not replayed" in r.getMessage()
    ]
    assert warning.startswith("Dead letter of ")
    assert "'evt'" in warning and f"id={letters[0].event.id}" in warning
    assert f"handler {letters[0].handler} is no longer subscribed" in warning


async def test_replay_uses_the_subscription_the_letter_came_from() -> None:
    """The same function subscribed to two events with different retry policies: replaying
    a letter of the first event must use the first event's policy (3 attempts)."""
    attempts: list[tuple[str, int]] = []

    async def sync_stock(sku: str) -> None:
        event = current_event()
        attempts.append((event.name, event.attempt))
        raise ConnectionError("warehouse offline")

    async with started_bus() as bus:
        bus.subscribe(
            "stock.reserved", sync_stock, retry=RetryPolicy(max_attempts=3, initial_delay=0.01)
        )
        bus.subscribe("stock.released", sync_stock)  # no retry
        await bus.emit("stock.reserved", "sku-1")
        assert attempts == [("stock.reserved", 1), ("stock.reserved", 2), ("stock.reserved", 3)]
        attempts.clear()

        result = await bus.replay_dead_letters()

    assert attempts == [("stock.reserved", 1), ("stock.reserved", 2), ("stock.reserved", 3)]
    assert [f.attempts for f in result.failures] == [3]


async def test_replay_counts_only_the_letters_it_replayed(caplog: pytest.LogCaptureFixture) -> None:
    async def gone(n: int) -> None:
        raise ValueError("still broken")

    async def flaky(n: int) -> None:
        raise ValueError("broken once")

    async with started_bus() as bus:
        bus.subscribe("a", gone)
        bus.subscribe("b", flaky)
        await bus.emit("a", 1)
        await bus.emit("b", 2)
        bus.unsubscribe("a", gone)  # its letter cannot be replayed here any more
        result = await bus.replay_dead_letters()
        letters = await bus.dead_letters()

    assert result.handled == 1  # only b's letter ran again
    assert [f.handler.rsplit(".", 1)[-1] for f in result.failures] == ["flaky"]
    assert sorted(letter.event.name for letter in letters) == ["a", "b"]
    assert "not replayed: handler" in strip_ansi(caplog.text)
