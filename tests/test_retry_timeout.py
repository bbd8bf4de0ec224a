"""Retries (per handler and the plugin-wide default) and handler timeouts (async handlers are
cancelled, sync ones abandoned and counted)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from support import AppDir, Factory, domain, strip_ansi

from fastapi_opinionated_eventbus import (
    EventBus,
    HandlerTimeout,
    RetryPolicy,
    current_event,
    eventbus_api,
)
from fastapi_opinionated_eventbus.testing import running, started_bus

FAST = RetryPolicy(max_attempts=3, initial_delay=0.01, jitter=0)


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.005)


# ---------------------------------------------------------------- retry

RETRY_SRC = """
    from fastapi_opinionated_eventbus import OnInternalEvent, RetryPolicy, current_event

    attempts = []
    steady_calls = []
    sync_attempts = []
    FAST = RetryPolicy(max_attempts=3, initial_delay=0.01, jitter=0)


    @OnInternalEvent("invoice.send", retry=FAST)
    async def flaky(invoice_id):
        event = current_event()
        attempts.append((invoice_id, event.attempt, event.id))
        if event.attempt < 3:
            raise ConnectionError(f"smtp down (attempt {event.attempt})")


    @OnInternalEvent("invoice.send")
    async def steady(invoice_id):
        steady_calls.append((invoice_id, current_event().attempt))


    @OnInternalEvent("invoice.archive", retry=FAST)
    def flaky_sync(invoice_id):
        event = current_event()
        sync_attempts.append((invoice_id, event.attempt, event.id))
        if event.attempt < 2:
            raise OSError("disk busy")
"""


async def test_a_handler_succeeding_on_its_third_attempt_while_the_other_ran_once(
    app_dir: AppDir, eventbus_app_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    app = eventbus_app_factory(app_dir({"billing/handlers.py": RETRY_SRC}))
    handlers = domain("billing.handlers")
    async with running(app):
        bus = eventbus_api()
        result = await bus.emit("invoice.send", "inv-1")
        sync_result = await bus.emit("invoice.archive", "inv-2")
        letters = await bus.dead_letters()

    assert result.ok and result.handled == 2
    assert result.event is not None
    assert handlers.attempts == [
        ("inv-1", 1, result.event.id),
        ("inv-1", 2, result.event.id),
        ("inv-1", 3, result.event.id),
    ]
    assert handlers.steady_calls == [("inv-1", 1)]
    assert sync_result.ok
    assert sync_result.event is not None
    assert handlers.sync_attempts == [
        ("inv-2", 1, sync_result.event.id),
        ("inv-2", 2, sync_result.event.id),
    ]
    assert letters == []  # it succeeded in the end: nothing is dead

    log = strip_ansi(caplog.text)
    flaky = "app.domains.billing.handlers:flaky"
    assert f"Handler {flaky} failed on event 'invoice.send'" in log
    assert "attempt 1/3): ConnectionError: smtp down (attempt 1); retrying in 0.010s" in log
    assert "attempt 2/3): ConnectionError: smtp down (attempt 2); retrying in 0.020s" in log
    assert "attempt 3/3" not in log
    retry_records = [r for r in caplog.records if "retrying in" in r.getMessage()]
    assert {r.levelname for r in retry_records} == {"WARNING"}
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


async def test_a_handler_failing_every_attempt_reports_the_attempts() -> None:
    attempts: list[int] = []

    async def always_fails() -> None:
        attempts.append(current_event().attempt)
        raise ValueError("still broken")

    async with started_bus() as bus:
        bus.subscribe("evt", always_fails, retry=FAST)
        result = await bus.emit("evt")
        background = bus.emit_nowait("evt")
        assert await bus.drain(5) == 0

    assert attempts == [1, 2, 3, 1, 2, 3]
    [failure] = result.failures
    assert failure.attempts == 3
    assert str(failure.exception) == "still broken"
    assert background.attempt == 1  # the caller's envelope is not changed by retries


PLUGIN_RETRY_SRC = """
    from fastapi_opinionated_eventbus import OnInternalEvent, RetryPolicy, current_event

    calls = []


    @OnInternalEvent("sync.crm")
    async def uses_the_plugin_default():
        attempt = current_event().attempt
        calls.append(("default", attempt))
        if attempt < 2:
            raise TimeoutError("crm slow")


    @OnInternalEvent("sync.crm", retry=RetryPolicy(max_attempts=1))
    async def opts_out():
        calls.append(("opts_out", current_event().attempt))
        raise RuntimeError("never retried")


    @OnInternalEvent("sync.erp")
    def sync_uses_the_default_too():
        attempt = current_event().attempt
        calls.append(("sync_default", attempt))
        raise RuntimeError("erp down")
"""


async def test_plugin_level_retry_applies_to_handlers_without_their_own(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    app = eventbus_app_factory(
        app_dir({"crm/handlers.py": PLUGIN_RETRY_SRC}),
        retry=RetryPolicy(max_attempts=2, initial_delay=0.01, jitter=0),
    )
    handlers = domain("crm.handlers")
    async with running(app):
        result = await eventbus_api().emit("sync.crm")
        erp = await eventbus_api().emit("sync.erp")

    assert result.handled == 2
    assert [(f.handler.rsplit(":", 1)[1], f.attempts) for f in result.failures] == [("opts_out", 1)]
    assert sorted(c for c in handlers.calls if c[0] != "sync_default") == [
        ("default", 1),
        ("default", 2),
        ("opts_out", 1),
    ]
    assert [c for c in handlers.calls if c[0] == "sync_default"] == [
        ("sync_default", 1),
        ("sync_default", 2),
    ]
    assert [f.attempts for f in erp.failures] == [2]


async def test_plugin_level_retry_also_applies_to_runtime_subscriptions(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    app = eventbus_app_factory(
        app_dir({"crm/handlers.py": PLUGIN_RETRY_SRC}),
        retry=RetryPolicy(max_attempts=3, initial_delay=0.01, jitter=0),
    )
    attempts: list[int] = []

    async def late() -> None:
        attempts.append(current_event().attempt)
        raise RuntimeError("x")

    async with running(app):
        bus = eventbus_api()
        bus.subscribe("late.event", late)
        result = await bus.emit("late.event")

    assert attempts == [1, 2, 3]
    assert [f.attempts for f in result.failures] == [3]


async def test_a_retry_wait_does_not_block_other_events() -> None:
    first_failure = asyncio.Event()
    other_done = asyncio.Event()
    observed: list[tuple[int, bool]] = []

    async def retrying() -> None:
        attempt = current_event().attempt
        observed.append((attempt, other_done.is_set()))
        if attempt == 1:
            first_failure.set()
            raise RuntimeError("try again later")

    async def other() -> None:
        other_done.set()

    async with started_bus() as bus:
        # A long enough wait that the other event easily fits into it.
        bus.subscribe("slow.retry", retrying, retry=RetryPolicy(initial_delay=0.3, jitter=0))
        bus.subscribe("other", other)
        background = asyncio.create_task(bus.emit("slow.retry"))
        await asyncio.wait_for(first_failure.wait(), 5)
        # While "slow.retry" waits to retry, another event runs to completion.
        other_result = await asyncio.wait_for(bus.emit("other"), 5)
        assert other_result.ok
        assert not background.done()
        result = await background

    assert result.ok
    assert observed == [(1, False), (2, True)]


async def test_a_retry_wait_of_a_background_event_does_not_block_other_background_events() -> None:
    first_failure = asyncio.Event()
    other_done = asyncio.Event()
    observed: list[tuple[int, bool]] = []

    async def retrying() -> None:
        attempt = current_event().attempt
        observed.append((attempt, other_done.is_set()))
        if attempt == 1:
            first_failure.set()
            raise RuntimeError("try again later")

    def other() -> None:
        other_done.set()

    async with started_bus() as bus:
        bus.subscribe("slow.retry", retrying, retry=RetryPolicy(initial_delay=0.3, jitter=0))
        bus.subscribe("other", other)
        bus.emit_nowait("slow.retry")
        await asyncio.wait_for(first_failure.wait(), 5)
        bus.emit_nowait("other")
        await wait_until(lambda: bus.pending == 1)  # "other" finished, the retry waits
        assert observed == [(1, False)]
        assert await bus.drain(5) == 0

    assert observed == [(1, False), (2, True)]


def test_retry_policy_delays_grow_by_the_backoff_factor_up_to_max_delay() -> None:
    policy = RetryPolicy(max_attempts=6, initial_delay=0.5, backoff_factor=3, max_delay=4, jitter=0)
    assert [policy.delay_before(n) for n in range(2, 6)] == [0.5, 1.5, 4, 4]
    jittered = RetryPolicy(initial_delay=1.0, jitter=0.1)
    assert all(0.9 <= jittered.delay_before(2) <= 1.1 for _ in range(200))


# ---------------------------------------------------------------- timeouts

TIMEOUT_SRC = """
    import asyncio
    import threading

    from fastapi_opinionated_eventbus import OnInternalEvent

    calls = []
    cancelled = []
    release = threading.Event()
    returned = threading.Event()


    @OnInternalEvent("feed.refresh", timeout=0.05)
    async def slow_fetch(feed):
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(feed)
            raise
        calls.append(("slow_fetch", feed))


    @OnInternalEvent("feed.refresh", timeout=1)
    async def fast_enough(feed):
        calls.append(("fast_enough", feed))


    @OnInternalEvent("feed.refresh")
    def sync_neighbour(feed):
        calls.append(("sync_neighbour", feed))


    @OnInternalEvent("feed.export", timeout=0.05)
    def blocking_export(feed):
        release.wait(10)
        calls.append(("blocking_export", feed))
        returned.set()
"""


async def test_an_async_handler_past_its_timeout_is_cancelled_and_counts_as_a_failure(
    app_dir: AppDir, eventbus_app_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    app = eventbus_app_factory(app_dir({"feeds/handlers.py": TIMEOUT_SRC}))
    handlers = domain("feeds.handlers")
    async with running(app):
        result = await eventbus_api().emit("feed.refresh", "news")

    assert result.handled == 3
    [failure] = result.failures
    assert failure.handler == "app.domains.feeds.handlers:slow_fetch"
    assert isinstance(failure.exception, HandlerTimeout)
    assert isinstance(failure.exception, TimeoutError)
    assert "timed out after 0.05s and was cancelled" in str(failure.exception)
    assert handlers.cancelled == ["news"]
    assert sorted(handlers.calls) == [("fast_enough", "news"), ("sync_neighbour", "news")]
    log = strip_ansi(caplog.text)
    assert "Handler app.domains.feeds.handlers:slow_fetch failed on event 'feed.refresh'" in log
    assert "HandlerTimeout" in log


async def test_a_sync_handler_past_its_timeout_is_abandoned_and_counted_until_it_returns(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    app = eventbus_app_factory(app_dir({"feeds/handlers.py": TIMEOUT_SRC}))
    handlers = domain("feeds.handlers")
    try:
        async with running(app):
            bus = eventbus_api()
            assert bus.abandoned_threads == 0
            result = await bus.emit("feed.export", "csv")

            [failure] = result.failures
            assert isinstance(failure.exception, HandlerTimeout)
            message = str(failure.exception)
            assert "sync handler app.domains.feeds.handlers:blocking_export timed out" in message
            assert "abandoned" in message
            assert bus.abandoned_threads == 1
            assert (await bus.health())["abandoned_threads"] == 1
            assert handlers.calls == []  # still blocked in its thread

            handlers.release.set()
            await wait_until(lambda: bus.abandoned_threads == 0)
            assert handlers.calls == [("blocking_export", "csv")]
    finally:
        handlers.release.set()
    assert handlers.returned.wait(5)


async def test_timeout_with_retry_times_out_on_every_attempt() -> None:
    attempts: list[int] = []
    never = asyncio.Event()

    async def hangs() -> None:
        attempts.append(current_event().attempt)
        await never.wait()

    async with started_bus() as bus:
        bus.subscribe(
            "evt", hangs, timeout=0.02, retry=RetryPolicy(max_attempts=2, initial_delay=0.01)
        )
        result = await bus.emit("evt")

    assert attempts == [1, 2]
    [failure] = result.failures
    assert isinstance(failure.exception, HandlerTimeout)
    assert failure.attempts == 2


@pytest.mark.parametrize(
    ("timeout", "error", "message"),
    [
        (0, ValueError, r"timeout must be > 0 seconds, got 0"),
        (-1.5, ValueError, r"timeout must be > 0 seconds"),
        ("5", TypeError, r"timeout must be a number of seconds"),
        (True, TypeError, r"timeout must be a number of seconds"),
    ],
)
def test_bad_timeouts_are_refused(timeout: Any, error: type[Exception], message: str) -> None:
    def handler() -> None:
        pass

    with pytest.raises(error, match=message):
        EventBus().subscribe("evt", handler, timeout=timeout)


def test_handler_retry_must_be_a_retry_policy() -> None:
    def handler() -> None:
        pass

    with pytest.raises(TypeError, match=r"retry must be a RetryPolicy or None"):
        EventBus().subscribe("evt", handler, retry=3)  # type: ignore[arg-type]
