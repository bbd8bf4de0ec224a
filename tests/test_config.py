"""Plugin options: configurePlugin keyword arguments and EVENTBUS_* environment variables,
their validation (ConfigurationError at App.create naming the option), RetryPolicy's own
validation, and the EVENTBUS_DISABLED switch."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from support import AppDir, Factory, domain, strip_ansi

from fastapi_opinionated_eventbus import (
    ConfigurationError,
    EventBus,
    EventBusError,
    EventBusOverloaded,
    RetryPolicy,
    eventbus_api,
)
from fastapi_opinionated_eventbus.testing import running


@pytest.fixture(autouse=True)
def _no_eventbus_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start every test from a clean environment: no EVENTBUS_* variable set."""
    import os

    for name in list(os.environ):
        if name.upper().startswith("EVENTBUS_"):
            monkeypatch.delenv(name)


HANDLERS_SRC = """
    import asyncio
    import threading

    from fastapi_opinionated_eventbus import OnInternalEvent

    gate = asyncio.Event()
    calls = []


    @OnInternalEvent("slow.job")
    async def slow(n):
        await gate.wait()
        calls.append(("slow", n))


    @OnInternalEvent("quick.job")
    async def quick(n):
        calls.append(("quick", n))


    @OnInternalEvent("quick.job")
    def quick_sync(n):
        calls.append(("quick_sync", n))


    @OnInternalEvent("threads.job")
    def where(n):
        calls.append(("where", threading.current_thread().name))
"""


# ---------------------------------------------------------------- environment variables


async def test_environment_variables_are_applied(
    app_dir: AppDir, eventbus_app_factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVENTBUS_MAX_PENDING", "3")
    monkeypatch.setenv("EVENTBUS_SHUTDOWN_TIMEOUT", "2.5")
    monkeypatch.setenv("EVENTBUS_STRICT", "true")
    monkeypatch.setenv("EVENTBUS_MAX_CHAIN_DEPTH", "7")
    monkeypatch.setenv("EVENTBUS_THREAD_POOL_SIZE", "2")
    monkeypatch.setenv("EVENTBUS_DEAD_LETTER_CAPACITY", "4")
    monkeypatch.setenv("EVENTBUS_PATTERN_CACHE_SIZE", "9")
    monkeypatch.setenv("EVENTBUS_RETRY", '{"max_attempts": 4, "initial_delay": 0.01}')
    app = eventbus_app_factory(app_dir({"jobs/handlers.py": HANDLERS_SRC}))
    handlers = domain("jobs.handlers")
    async with running(app):
        bus = eventbus_api()
        s = bus.settings
        accepted = [bus.emit_nowait("slow.job", n) for n in range(3)]
        with pytest.raises(EventBusOverloaded, match=r"max_pending=3"):
            bus.emit_nowait("slow.job", 3)
        handlers.gate.set()
        assert await bus.drain(5) == 0

    assert (s.max_pending, s.shutdown_timeout, s.strict) == (3, 2.5, True)
    assert (s.max_chain_depth, s.thread_pool_size) == (7, 2)
    assert (s.dead_letter_capacity, s.pattern_cache_size) == (4, 9)
    assert s.retry == RetryPolicy(max_attempts=4, initial_delay=0.01)
    assert len(accepted) == 3
    assert sorted(handlers.calls) == [("slow", 0), ("slow", 1), ("slow", 2)]


async def test_thread_pool_size_bounds_the_worker_threads_of_sync_handlers(
    app_dir: AppDir, eventbus_app_factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVENTBUS_THREAD_POOL_SIZE", "2")
    app = eventbus_app_factory(app_dir({"jobs/handlers.py": HANDLERS_SRC}))
    handlers = domain("jobs.handlers")
    async with running(app):
        bus = eventbus_api()
        await asyncio.gather(*(bus.emit("threads.job", n) for n in range(40)))

    threads = {name for tag, name in handlers.calls if tag == "where"}
    assert len(handlers.calls) == 40
    assert 1 <= len(threads) <= 2
    assert all(name.startswith("eventbus") for name in threads)
    assert threading.current_thread().name not in threads


async def test_explicit_options_win_over_environment_variables(
    app_dir: AppDir, eventbus_app_factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVENTBUS_MAX_PENDING", "1")
    monkeypatch.setenv("EVENTBUS_STRICT", "true")
    monkeypatch.setenv("EVENTBUS_MAX_CHAIN_DEPTH", "2")
    app = eventbus_app_factory(
        app_dir({"jobs/handlers.py": HANDLERS_SRC}), max_pending=50, strict=False
    )
    handlers = domain("jobs.handlers")
    async with running(app):
        bus = eventbus_api()
        for n in range(3):  # more than the environment's 1
            bus.emit_nowait("slow.job", n)
        s = bus.settings
        handlers.gate.set()
        assert await bus.drain(5) == 0

    assert s.max_pending == 50
    assert s.strict is False
    assert s.max_chain_depth == 2  # not given explicitly: the environment still applies
    assert len(handlers.calls) == 3


# ---------------------------------------------------------------- invalid options


@pytest.mark.parametrize(
    ("options", "fragments"),
    [
        ({"max_pending": 0}, ["option 'max_pending'", "greater than 0", "got 0"]),
        ({"shutdown_timeout": -1}, ["option 'shutdown_timeout'", "got -1"]),
        ({"retry": "nope"}, ["option 'retry'", "RetryPolicy", "got 'nope'"]),
        ({"max_chain_depth": 0}, ["option 'max_chain_depth'"]),
        ({"thread_pool_size": 0}, ["option 'thread_pool_size'"]),
        ({"dead_letter_capacity": -3}, ["option 'dead_letter_capacity'"]),
        ({"pattern_cache_size": 0}, ["option 'pattern_cache_size'"]),
        ({"max_pending": "lots"}, ["option 'max_pending'", "valid integer"]),
        ({"strict": "maybe"}, ["option 'strict'"]),
        ({"max_pendings": 10}, ["Unknown EventBusPlugin option(s): 'max_pendings'"]),
    ],
)
def test_bad_options_fail_app_create_naming_the_option(
    app_dir: AppDir, eventbus_app_factory: Factory, options: dict[str, Any], fragments: list[str]
) -> None:
    with pytest.raises(ConfigurationError) as info:
        eventbus_app_factory(app_dir({"jobs/handlers.py": HANDLERS_SRC}), **options)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message
    assert isinstance(info.value, EventBusError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("variable", "value", "fragments"),
    [
        ("EVENTBUS_MAX_PENDING", "abc", ["valid integer", "got 'abc'"]),
        ("EVENTBUS_SHUTDOWN_TIMEOUT", "-1", ["greater than or equal to 0"]),
        ("EVENTBUS_DISABLED", "perhaps", ["valid boolean"]),
        ("EVENTBUS_RETRY", '{"max_attempts": 0}', ["RetryPolicy.max_attempts must be >= 1"]),
        ("EVENTBUS_RETRY", "nope", []),
    ],
)
def test_bad_environment_variables_fail_app_create_naming_the_variable(
    app_dir: AppDir,
    eventbus_app_factory: Factory,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
    fragments: list[str],
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as info:
        eventbus_app_factory(app_dir({"jobs/handlers.py": HANDLERS_SRC}))
    message = str(info.value)
    assert f"environment variable {variable}" in message
    for fragment in fragments:
        assert fragment in message


def test_the_standalone_bus_validates_the_same_way() -> None:
    with pytest.raises(ConfigurationError, match=r"option 'max_pending'"):
        EventBus(max_pending=0)
    with pytest.raises(ConfigurationError, match=r"Unknown EventBusPlugin option\(s\): 'nope'"):
        EventBus(nope=True)


@pytest.mark.parametrize(
    "options",
    [
        {"backend": "redis", "redis_url": "redis:/app:TOPSECRET@cache:6379/0"},  # one slash
        {"backend": "redis", "redis_url": "app:TOPSECRET@cache:6379"},  # no scheme
        {"outbox_url": "postgresql:/app:TOPSECRET@db/orders"},
    ],
)
def test_a_url_refused_for_its_missing_scheme_never_shows_its_password(
    options: dict[str, Any],
) -> None:
    with pytest.raises(ConfigurationError, match=r"_url") as refused:
        EventBus(**options)
    assert "TOPSECRET" not in str(refused.value)
    assert "***@" in str(refused.value)


def test_a_retry_option_given_as_a_mapping_is_validated_into_a_policy() -> None:
    bus = EventBus(retry={"max_attempts": 5, "initial_delay": 0.2, "jitter": 0})
    assert bus.settings.retry == RetryPolicy(max_attempts=5, initial_delay=0.2, jitter=0)
    with pytest.raises(ConfigurationError, match=r"option 'retry'.*backoff_factor must be >= 1"):
        EventBus(retry={"backoff_factor": 0.5})


# ---------------------------------------------------------------- RetryPolicy


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"max_attempts": 0}, ValueError, r"max_attempts must be >= 1 \(1 means no retry\)"),
        ({"max_attempts": -2}, ValueError, r"max_attempts must be >= 1"),
        ({"max_attempts": 2.5}, TypeError, r"max_attempts must be an int"),
        ({"max_attempts": True}, TypeError, r"max_attempts must be an int"),
        ({"backoff_factor": 0.5}, ValueError, r"backoff_factor must be >= 1"),
        ({"initial_delay": -0.1}, ValueError, r"initial_delay must be >= 0"),
        ({"max_delay": -1}, ValueError, r"max_delay must be >= 0"),
        ({"jitter": -0.1}, ValueError, r"jitter must be >= 0"),
        ({"jitter": 1.5}, ValueError, r"jitter is a fraction and must be <= 1"),
    ],
)
def test_retry_policy_validates_its_fields(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        RetryPolicy(**kwargs)


def test_retry_policy_defaults_and_immutability() -> None:
    policy = RetryPolicy()
    assert (policy.max_attempts, policy.initial_delay, policy.backoff_factor) == (3, 0.1, 2.0)
    assert RetryPolicy(max_attempts=1).max_attempts == 1  # 1 = no retry, allowed
    with pytest.raises(AttributeError):
        policy.max_attempts = 9  # type: ignore[misc]


# ---------------------------------------------------------------- disable switch


async def test_eventbus_disabled_makes_emits_no_ops_logged_once(
    app_dir: AppDir,
    eventbus_app_factory: Factory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("EVENTBUS_DISABLED", "1")
    app = eventbus_app_factory(app_dir({"jobs/handlers.py": HANDLERS_SRC}))
    handlers = domain("jobs.handlers")
    async with running(app):
        bus = eventbus_api()
        results = [await bus.emit("quick.job", n) for n in range(3)]
        envelope = bus.emit_nowait("quick.job", 3)
        bus.emit_after_response("quick.job", 4)
        assert bus.pending == 0
        assert await bus.drain(5) == 0

    assert bus.settings.disabled is True
    assert handlers.calls == []
    assert [r.handled for r in results] == [0, 0, 0]
    assert envelope.name == "quick.job"
    warnings = [
        strip_ansi(r.getMessage())
        for r in caplog.records
        if "disabled" in r.getMessage() and r.levelname == "WARNING"
    ]
    assert warnings == ["Event dispatch is disabled (EVENTBUS_DISABLED): emits are no-ops."]


async def test_disabled_as_a_plugin_option_and_enabled_by_default(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    app = eventbus_app_factory(app_dir({"jobs/handlers.py": HANDLERS_SRC}), disabled=True)
    handlers = domain("jobs.handlers")
    async with running(app):
        result = await eventbus_api().emit("quick.job", 1)
    assert result.handled == 0 and handlers.calls == []

    app = eventbus_app_factory(app_dir({"jobs/handlers.py": HANDLERS_SRC}))
    handlers = domain("jobs.handlers")
    async with running(app):
        result = await eventbus_api().emit("quick.job", 1)
    assert result.handled == 2
    assert sorted(handlers.calls) == [("quick", 1), ("quick_sync", 1)]


@pytest.mark.parametrize("value", ["0", "false", "no"])
async def test_eventbus_disabled_false_values_keep_dispatch_on(
    app_dir: AppDir, eventbus_app_factory: Factory, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("EVENTBUS_DISABLED", value)
    app = eventbus_app_factory(app_dir({"jobs/handlers.py": HANDLERS_SRC}))
    handlers = domain("jobs.handlers")
    async with running(app):
        result = await eventbus_api().emit("quick.job", 1)
    assert result.handled == 2
    assert len(handlers.calls) == 2
