"""Shell-style pattern subscriptions ("user.*", "*", "order.?"): matching, the fired name,
plan-cache invalidation on (un)subscribe, and the bounded plan cache."""

from __future__ import annotations

from typing import Any

import pytest
from support import AppDir, Factory, domain

from fastapi_opinionated_eventbus import current_event, eventbus_api
from fastapi_opinionated_eventbus.testing import running, started_bus

PATTERNS_SRC = """
    from fastapi_opinionated_eventbus import OnInternalEvent, current_event

    calls = []


    @OnInternalEvent("user.*")
    async def any_user_event(*args, **kwargs):
        calls.append(("user.*", current_event().name, args, kwargs))


    @OnInternalEvent("*")
    def everything(*args, **kwargs):  # sync: runs in a worker thread
        calls.append(("*", current_event().name, args, kwargs))


    @OnInternalEvent("user.created")
    async def welcome(*args, **kwargs):
        calls.append(("user.created", current_event().name, args, kwargs))


    @OnInternalEvent("order.?")
    async def one_char(*args, **kwargs):
        calls.append(("order.?", current_event().name, args, kwargs))


    @OnInternalEvent("report.[ab]")
    async def a_or_b(*args, **kwargs):
        calls.append(("report.[ab]", current_event().name, args, kwargs))
"""


def _matched(calls: list[tuple[Any, ...]], name: str) -> set[str]:
    """The subscriptions (by their pattern) that ran for the fired ``name``."""
    return {subscribed for subscribed, fired, _, _ in calls if fired == name}


async def test_exact_and_pattern_handlers_all_run_and_each_learns_the_fired_name(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    app = eventbus_app_factory(app_dir({"users/handlers.py": PATTERNS_SRC}))
    handlers = domain("users.handlers")
    async with running(app):
        bus = eventbus_api()
        created = await bus.emit("user.created", 1, source="signup")
        deleted = await bus.emit("user.deleted", 2)
        other = await bus.emit("invoice.paid", 3)

    assert (created.handled, deleted.handled, other.handled) == (3, 2, 1)
    assert created.ok and deleted.ok and other.ok
    assert sorted(handlers.calls) == sorted(
        [
            ("user.*", "user.created", (1,), {"source": "signup"}),
            ("*", "user.created", (1,), {"source": "signup"}),
            ("user.created", "user.created", (1,), {"source": "signup"}),
            ("user.*", "user.deleted", (2,), {}),
            ("*", "user.deleted", (2,), {}),
            ("*", "invoice.paid", (3,), {}),
        ]
    )


async def test_patterns_are_case_sensitive(app_dir: AppDir, eventbus_app_factory: Factory) -> None:
    app = eventbus_app_factory(app_dir({"users/handlers.py": PATTERNS_SRC}))
    handlers = domain("users.handlers")
    async with running(app):
        result = await eventbus_api().emit("User.created")
        upper = await eventbus_api().emit("USER.CREATED")

    # Only "*" matches: neither "user.*" nor the exact "user.created" handler.
    assert result.handled == 1 and upper.handled == 1
    assert _matched(handlers.calls, "User.created") == {"*"}
    assert _matched(handlers.calls, "USER.CREATED") == {"*"}


@pytest.mark.parametrize(
    ("fired", "expected"),
    [
        ("order.1", {"order.?", "*"}),
        ("order.12", {"*"}),  # ? is exactly one character
        ("order.", {"*"}),
        ("report.a", {"report.[ab]", "*"}),
        ("report.c", {"*"}),
        # fnmatch semantics: * also spans dots.
        ("user.profile.updated", {"user.*", "*"}),
        ("user.", {"user.*", "*"}),
        ("users.created", {"*"}),
    ],
)
async def test_shell_style_matching(
    app_dir: AppDir, eventbus_app_factory: Factory, fired: str, expected: set[str]
) -> None:
    app = eventbus_app_factory(app_dir({"misc/handlers.py": PATTERNS_SRC}))
    handlers = domain("misc.handlers")
    async with running(app):
        result = await eventbus_api().emit(fired)

    assert result.handled == len(expected)
    assert _matched(handlers.calls, fired) == expected


async def test_unsubscribing_a_declared_pattern_handler_in_a_running_app_stops_it(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    app = eventbus_app_factory(app_dir({"users/handlers.py": PATTERNS_SRC}))
    handlers = domain("users.handlers")
    async with running(app):
        bus = eventbus_api()
        await bus.emit("user.deleted", 1)  # the plan of "user.deleted" is now cached
        assert bus.unsubscribe("user.*", handlers.any_user_event) is True
        result = await bus.emit("user.deleted", 2)

    assert result.handled == 1
    assert [(s, a) for s, _, a, _ in handlers.calls if a == (2,)] == [("*", (2,))]


async def test_plan_cache_is_invalidated_by_unsubscribe_and_subscribe() -> None:
    calls: list[tuple[str, str]] = []

    async def exact(*args: Any) -> None:
        calls.append(("exact", current_event().name))

    async def pattern(*args: Any) -> None:
        calls.append(("pattern", current_event().name))

    async def late(*args: Any) -> None:
        calls.append(("late", current_event().name))

    async with started_bus() as bus:
        bus.subscribe("cart.updated", exact)
        bus.subscribe("cart.*", pattern)

        first = await bus.emit("cart.updated")
        assert first.handled == 2
        assert sorted(calls) == [("exact", "cart.updated"), ("pattern", "cart.updated")]

        calls.clear()
        assert bus.unsubscribe("cart.updated", exact) is True
        after_exact = await bus.emit("cart.updated")
        assert after_exact.handled == 1
        assert calls == [("pattern", "cart.updated")]

        calls.clear()
        assert bus.unsubscribe("cart.*", pattern) is True
        after_pattern = await bus.emit("cart.updated")
        bus.emit_nowait("cart.updated")  # the background path reads the same cache
        assert await bus.drain(5) == 0
        assert after_pattern.handled == 0
        assert calls == []

        # Unsubscribing what is not subscribed reports it and changes nothing.
        assert bus.unsubscribe("cart.*", pattern) is False
        assert bus.unsubscribe("cart.updated", exact) is False
        assert bus.unsubscribe("cart.*", late) is False

        bus.subscribe("cart.*", late)
        after_subscribe = await bus.emit("cart.updated")
        bus.emit_nowait("cart.emptied")
        assert await bus.drain(5) == 0
        assert after_subscribe.handled == 1
        assert calls == [("late", "cart.updated"), ("late", "cart.emptied")]


async def test_unsubscribing_a_pattern_keeps_other_handlers_of_the_same_pattern() -> None:
    calls: list[str] = []

    async def one() -> None:
        calls.append("one")

    async def two() -> None:
        calls.append("two")

    async with started_bus() as bus:
        bus.subscribe("job.*", one)
        bus.subscribe("job.*", two)
        await bus.emit("job.done")
        assert bus.unsubscribe("job.*", one) is True
        result = await bus.emit("job.done")

    assert result.handled == 1
    assert sorted(calls) == ["one", "two", "two"]


CACHE_SRC = """
    from fastapi_opinionated_eventbus import OnInternalEvent, current_event

    calls = []


    @OnInternalEvent("metric.*")
    async def any_metric(value):
        calls.append(("metric.*", current_event().name, value))


    @OnInternalEvent("metric.7")
    def seventh(value):
        calls.append(("metric.7", current_event().name, value))
"""


async def test_plan_cache_stays_bounded_and_results_stay_correct(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    app = eventbus_app_factory(app_dir({"metrics/handlers.py": CACHE_SRC}), pattern_cache_size=10)
    handlers = domain("metrics.handlers")
    async with running(app):
        bus = eventbus_api()
        results = [await bus.emit(f"metric.{n}", n) for n in range(100)]
        cached_after_burst = bus._registry.cached_names
        # Names evicted long ago still resolve correctly.
        again = [await bus.emit(f"metric.{n}", -n) for n in (0, 7, 50)]
        cached_at_end = bus._registry.cached_names

    assert 0 < cached_after_burst <= 10
    assert 0 < cached_at_end <= 10
    assert [r.handled for r in results] == [2 if n == 7 else 1 for n in range(100)]
    assert all(r.ok for r in results)
    assert [r.handled for r in again] == [1, 2, 1]
    pattern_calls = [(name, value) for sub, name, value in handlers.calls if sub == "metric.*"]
    assert pattern_calls == [(f"metric.{n}", n) for n in range(100)] + [
        ("metric.0", 0),
        ("metric.7", -7),
        ("metric.50", -50),
    ]
    exact_calls = [(name, value) for sub, name, value in handlers.calls if sub == "metric.7"]
    assert exact_calls == [("metric.7", 7), ("metric.7", -7)]


async def test_plan_cache_bound_of_a_standalone_bus() -> None:
    seen: list[str] = []

    async def record(*args: Any) -> None:
        seen.append(current_event().name)

    async with started_bus(pattern_cache_size=10) as bus:
        bus.subscribe("*", record)
        for n in range(100):
            bus.emit_nowait(f"e{n}")
            assert bus._registry.cached_names <= 10
        assert await bus.drain(5) == 0

    assert seen == [f"e{n}" for n in range(100)]
