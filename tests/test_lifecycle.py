"""The bus follows the app's lifespan: handlers are subscribed at startup, cleared at
shutdown, and a shut-down bus refuses emits loudly instead of calling stale handlers."""

from __future__ import annotations

import importlib

import pytest
from fastapi.testclient import TestClient
from support import AppDir, Factory

from fastapi_opinionated_eventbus import EventBusClosed, eventbus_api
from fastapi_opinionated_eventbus.testing import running

HANDLERS = """
    from fastapi_opinionated_eventbus import OnInternalEvent

    calls = []


    @OnInternalEvent("user.created")
    async def welcome(user_id):
        calls.append(("welcome", user_id))


    @OnInternalEvent("user.created")
    def audit(user_id):
        calls.append(("audit", user_id))
"""

OTHER_APP_HANDLERS = """
    from fastapi_opinionated_eventbus import OnInternalEvent

    calls = []


    @OnInternalEvent("user.created")
    async def other_app_welcome(user_id):
        calls.append(("other_app_welcome", user_id))
"""


async def test_handlers_are_subscribed_at_startup(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    app = eventbus_app_factory(app_dir({"users/handlers.py": HANDLERS}))
    async with running(app):
        names = sorted(sub.name for sub in eventbus_api().subscriptions())
    assert names == ["app.domains.users.handlers:audit", "app.domains.users.handlers:welcome"]


async def test_after_shutdown_emit_raises_closed_and_no_stale_handler_runs(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    app = eventbus_app_factory(app_dir({"users/handlers.py": HANDLERS}))
    handlers = importlib.import_module("app.domains.users.handlers")
    async with running(app):
        bus = eventbus_api()
        assert (await bus.emit("user.created", 1)).handled == 2
        assert not bus.closed

    assert sorted(handlers.calls) == [("audit", 1), ("welcome", 1)]
    assert bus.closed
    assert bus.subscriptions() == []
    assert eventbus_api() is bus

    with pytest.raises(EventBusClosed) as info:
        await eventbus_api().emit("user.created", 2)
    message = str(info.value)
    assert "'user.created'" in message
    assert "shut down" in message

    with pytest.raises(EventBusClosed, match=r"'user\.created'"):
        eventbus_api().emit_nowait("user.created", 3)
    with pytest.raises(EventBusClosed, match="closed"):
        bus.subscribe("user.created", handlers.welcome)

    assert sorted(handlers.calls) == [("audit", 1), ("welcome", 1)]  # nothing ran again


async def test_a_new_app_in_the_same_process_never_calls_the_old_apps_handlers(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    first_app = eventbus_app_factory(app_dir({"users/handlers.py": HANDLERS}))
    first = importlib.import_module("app.domains.users.handlers")
    async with running(first_app):
        await eventbus_api().emit("user.created", 1)
    first_bus = eventbus_api()

    second_app = eventbus_app_factory(app_dir({"accounts/handlers.py": OTHER_APP_HANDLERS}))
    second = importlib.import_module("app.domains.accounts.handlers")
    async with running(second_app):
        second_bus = eventbus_api()
        result = await second_bus.emit("user.created", 2)

    assert second_bus is not first_bus
    assert result.handled == 1
    assert second.calls == [("other_app_welcome", 2)]
    assert sorted(first.calls) == [("audit", 1), ("welcome", 1)]


async def test_shutdown_drains_background_events_before_clearing(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    app = eventbus_app_factory(app_dir({"users/handlers.py": HANDLERS}))
    handlers = importlib.import_module("app.domains.users.handlers")
    async with running(app):
        eventbus_api().emit_nowait("user.created", 5)
    # The lifespan exited: the queued event ran before the handlers were cleared.
    assert sorted(handlers.calls) == [("audit", 5), ("welcome", 5)]
    assert eventbus_api().pending == 0


ROUTE_HANDLERS = """
    from fastapi_opinionated.decorators.routing import Post

    from fastapi_opinionated_eventbus import OnInternalEvent, eventbus_api

    calls = []


    @OnInternalEvent("user.created")
    async def welcome(user_id):
        calls.append(user_id)


    @Post("/users/{user_id}")
    async def create_user(user_id: int):
        result = await eventbus_api().emit("user.created", user_id)
        return {"handled": result.handled}
"""


def test_the_same_app_can_run_its_lifespan_again(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    """A module-level app used by two tests, each with ``with TestClient(app):``, starts
    and stops the same app twice: the second startup must work like the first."""
    app = eventbus_app_factory(app_dir({"users/handlers.py": ROUTE_HANDLERS}))
    handlers = importlib.import_module("app.domains.users.handlers")
    with TestClient(app) as client:
        assert client.post("/users/1").json() == {"handled": 1}
    with TestClient(app) as client:
        assert client.post("/users/2").json() == {"handled": 1}
    assert handlers.calls == [1, 2]
