"""``@OnInternalEvent``: bad input fails at import time, the function comes back unchanged,
no plugin is needed to declare, late-imported modules and runtime subscriptions work."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import pytest
from fastapi_opinionated.app import App
from fastapi_opinionated.registry.plugin_store import PluginRegistryStore
from support import AppDir, Factory

from fastapi_opinionated_eventbus import EventBusNotEnabled, OnInternalEvent, eventbus_api
from fastapi_opinionated_eventbus.testing import create_app, isolated_core, running


def _declared_handlers() -> list[dict[str, Any]]:
    handlers: list[dict[str, Any]] = PluginRegistryStore.registries.get("eventbus", {}).get(
        "handlers", []
    )
    return handlers


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("event", "error", "message"),
    [
        ("", ValueError, r"event name \(or pattern\) to subscribe to must be a non-empty"),
        ("  user.created", ValueError, r"without surrounding spaces, got '  user.created'"),
        (123, TypeError, r"event name \(or pattern\) to subscribe to must be a str, got int: 123"),
        (None, TypeError, r"must be a str, got NoneType"),
        (b"user.created", TypeError, r"must be a str, got bytes"),
    ],
)
def test_bad_event_name_fails_when_the_decorator_is_built(
    event: Any, error: type[Exception], message: str
) -> None:
    with isolated_core():
        with pytest.raises(error, match=message):
            OnInternalEvent(event)
        assert _declared_handlers() == []


def test_bare_decorator_without_parentheses_fails_naming_the_fix_and_the_function() -> None:
    with isolated_core():
        with pytest.raises(TypeError) as info:

            @OnInternalEvent  # type: ignore[arg-type]
            async def handle_user_created(user: dict[str, Any]) -> None:
                pass

        assert _declared_handlers() == []
    message = str(info.value)
    assert '@OnInternalEvent("user.created")' in message
    assert "handle_user_created" in message


@pytest.mark.parametrize(
    ("target", "shown"), [(42, "int: 42"), ("not a function", "str: 'not a function'")]
)
def test_decorating_a_non_callable_fails_naming_it(target: Any, shown: str) -> None:
    with isolated_core():
        decorator = OnInternalEvent("user.created")
        with pytest.raises(TypeError, match=rf"event handler must be callable, got {shown}"):
            decorator(target)
        assert _declared_handlers() == []


@pytest.mark.parametrize(
    ("source", "error", "message"),
    [
        (
            """
            from fastapi_opinionated_eventbus import OnInternalEvent

            @OnInternalEvent
            def on_anything(payload):
                pass
            """,
            TypeError,
            r"needs the event name.*on_anything",
        ),
        (
            """
            from fastapi_opinionated_eventbus import OnInternalEvent

            @OnInternalEvent("")
            def on_nothing(payload):
                pass
            """,
            ValueError,
            r"non-empty string",
        ),
    ],
    ids=["bare-decorator", "empty-name"],
)
def test_bad_declaration_in_a_domain_module_fails_app_create(
    app_dir: AppDir,
    eventbus_app_factory: Factory,
    source: str,
    error: type[Exception],
    message: str,
) -> None:
    root = app_dir({"broken/handlers.py": source})
    with pytest.raises(error, match=message):
        eventbus_app_factory(root)


# ---------------------------------------------------------------- the decorated function


async def test_decorator_returns_the_function_unchanged_and_directly_callable() -> None:
    async def welcome(user_id: int, *, greeting: str = "hi") -> str:
        return f"{greeting} {user_id}"

    def audit(user_id: int) -> int:
        return user_id * 2

    with isolated_core():
        assert OnInternalEvent("user.created")(welcome) is welcome
        assert OnInternalEvent("user.created")(audit) is audit
        assert [entry["handler"] for entry in _declared_handlers()] == [welcome, audit]

    assert inspect.iscoroutinefunction(welcome)
    assert await welcome(3, greeting="hello") == "hello 3"
    assert audit(4) == 8
    assert not hasattr(welcome, "__wrapped__")


STACKED_SRC = """
    from fastapi_opinionated_eventbus import OnInternalEvent

    calls = []


    @OnInternalEvent("user.created")
    @OnInternalEvent("user.updated")
    async def refresh_profile(user_id):
        calls.append(user_id)
"""


async def test_stacked_decorators_subscribe_one_function_to_several_events(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    app = eventbus_app_factory(app_dir({"users/handlers.py": STACKED_SRC}))
    handlers = importlib.import_module("app.domains.users.handlers")
    async with running(app):
        created = await eventbus_api().emit("user.created", 1)
        updated = await eventbus_api().emit("user.updated", 2)
    assert (created.handled, updated.handled) == (1, 1)
    assert handlers.calls == [1, 2]


# ---------------------------------------------------------------- declaring before the app

EARLY_SRC = """
    from fastapi_opinionated_eventbus import OnInternalEvent

    calls = []


    @OnInternalEvent("invoice.paid")
    async def mark_paid(invoice_id):
        calls.append(("mark_paid", invoice_id))


    @OnInternalEvent("invoice.paid")
    def notify_accounting(invoice_id):
        calls.append(("notify_accounting", invoice_id))
"""


async def test_declaring_needs_no_plugin_and_the_app_picks_the_handlers_up_later(
    app_dir: AppDir,
) -> None:
    root = app_dir({})
    (root / "app" / "billing").mkdir(parents=True)
    (root / "app" / "billing" / "handlers.py").write_text(inspect.cleandoc(EARLY_SRC))
    with isolated_core(root):
        # No app, no plugin: importing a module that declares handlers is fine.
        early = importlib.import_module("app.billing.handlers")
        with pytest.raises(EventBusNotEnabled):
            eventbus_api()
        assert [entry["event"] for entry in _declared_handlers()] == ["invoice.paid"] * 2

        app = create_app(root)
        async with running(app):
            result = await eventbus_api().emit("invoice.paid", "inv-9")

    assert result.handled == 2 and result.ok
    assert sorted(early.calls) == [("mark_paid", "inv-9"), ("notify_accounting", "inv-9")]


# ---------------------------------------------------------------- after startup

DOMAIN_SRC = """
    from fastapi_opinionated_eventbus import OnInternalEvent

    calls = []


    @OnInternalEvent("invoice.paid")
    async def from_domain(invoice_id):
        calls.append(("from_domain", invoice_id))
"""

LATE_SRC = """
    import threading

    from fastapi_opinionated_eventbus import OnInternalEvent

    calls = []


    @OnInternalEvent("invoice.paid")
    def from_late_module(invoice_id):
        calls.append(("from_late_module", invoice_id, threading.current_thread().name))


    @OnInternalEvent("invoice.voided")
    async def voided(invoice_id):
        calls.append(("voided", invoice_id))
"""


async def test_module_imported_after_startup_has_its_handlers_picked_up(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    root = app_dir({"billing/handlers.py": DOMAIN_SRC})
    (root / "app" / "late").mkdir()
    (root / "app" / "late" / "handlers.py").write_text(inspect.cleandoc(LATE_SRC))
    app = eventbus_app_factory(root)
    domain = importlib.import_module("app.domains.billing.handlers")
    async with running(app):
        bus = eventbus_api()
        before = await bus.emit("invoice.paid", "inv-1")
        late = importlib.import_module("app.late.handlers")  # outside app/domains
        after = await bus.emit("invoice.paid", "inv-2")
        voided = await bus.emit("invoice.voided", "inv-3")
        names = sorted(sub.name for sub in bus.subscriptions())

    assert (before.handled, after.handled, voided.handled) == (1, 2, 1)
    assert domain.calls == [("from_domain", "inv-1"), ("from_domain", "inv-2")]
    assert [call[:2] for call in late.calls] == [
        ("from_late_module", "inv-2"),
        ("voided", "inv-3"),
    ]
    assert late.calls[0][2] != "MainThread"  # a sync handler, run in a worker thread
    assert names == [
        "app.domains.billing.handlers:from_domain",
        "app.late.handlers:from_late_module",
        "app.late.handlers:voided",
    ]


async def test_runtime_subscribe_and_unsubscribe(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    app = eventbus_app_factory(app_dir({"billing/handlers.py": DOMAIN_SRC}))
    domain = importlib.import_module("app.domains.billing.handlers")
    runtime_calls: list[tuple[str, Any]] = []

    async def on_paid(invoice_id: str) -> None:
        runtime_calls.append(("async", invoice_id))

    def on_paid_sync(invoice_id: str) -> None:
        runtime_calls.append(("sync", invoice_id))

    async with running(app):
        bus = eventbus_api()
        subscription = bus.subscribe("invoice.paid", on_paid)
        bus.subscribe("invoice.paid", on_paid_sync)
        assert subscription.event == "invoice.paid" and subscription.handler is on_paid
        first = await bus.emit("invoice.paid", "inv-1")

        assert bus.unsubscribe("invoice.paid", on_paid) is True
        second = await bus.emit("invoice.paid", "inv-2")
        assert bus.unsubscribe("invoice.paid", on_paid) is False  # already gone
        assert bus.unsubscribe("invoice.paid", on_paid_sync) is True
        third = await bus.emit("invoice.paid", "inv-3")

    assert (first.handled, second.handled, third.handled) == (3, 2, 1)
    assert sorted(runtime_calls) == [("async", "inv-1"), ("sync", "inv-1"), ("sync", "inv-2")]
    assert [call[1] for call in domain.calls] == ["inv-1", "inv-2", "inv-3"]


def test_subscribe_validates_like_the_decorator(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    eventbus_app_factory(app_dir({"billing/handlers.py": DOMAIN_SRC}))
    bus = eventbus_api()
    with pytest.raises(ValueError, match="non-empty"):
        bus.subscribe("", print)
    with pytest.raises(TypeError, match="must be a str, got int"):
        bus.subscribe(123, print)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be callable, got int: 42"):
        bus.subscribe("invoice.paid", 42)  # type: ignore[arg-type]
    assert App.plugin.eventbus is bus
