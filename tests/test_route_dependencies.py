"""The bus and the correlation id as route dependencies: ``EventBusDep``, ``get_event_bus``
(overridable like any dependency) and ``get_correlation_id``."""

from __future__ import annotations

from support import AppDir, Factory, domain, serving

from fastapi_opinionated_eventbus import (
    EventBus,
    EventBusDep,
    eventbus_api,
    get_correlation_id,
    get_event_bus,
)
from fastapi_opinionated_eventbus.testing import EventRecorder, started_bus

ROUTES = """
    from typing import Annotated

    from fastapi import Depends
    from fastapi_opinionated.decorators.routing import Controller, Post

    from fastapi_opinionated_eventbus import (
        EventBus,
        EventBusDep,
        OnInternalEvent,
        current_event,
        get_correlation_id,
        get_event_bus,
    )

    seen = []


    @OnInternalEvent("user.created")
    def audit(name: str) -> None:
        # A plain call, in a background handler running in a worker thread.
        seen.append(("handler", name, get_correlation_id(), current_event().correlation_id))


    @Controller("/users")
    class Users:
        @Post("/{name}")
        async def create(
            self,
            name: str,
            bus: EventBusDep,
            correlation_id: Annotated[str | None, Depends(get_correlation_id)],
        ) -> dict:
            event = bus.emit_nowait("user.created", name)
            seen.append(("route", name, correlation_id, get_correlation_id()))
            return {"event_id": event.id}

        @Post("/legacy/{name}")
        async def legacy(self, name: str, bus: EventBus = Depends(get_event_bus)) -> dict:
            result = await bus.emit("user.created", name)
            return {"event_id": result.event_id}
"""


async def test_routes_get_the_bus_and_the_correlation_id_injected(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    app = eventbus_app_factory(app_dir({"users/routes.py": ROUTES}))
    users = domain("users.routes")
    async with serving(app) as client:
        response = await client.post("/users/ann", headers={"X-Correlation-ID": "req-42"})
        assert await eventbus_api().drain(5) == 0
        legacy = await client.post("/users/legacy/bob")
    assert response.status_code == 200, response.text
    assert legacy.status_code == 200, legacy.text
    generated = legacy.headers["x-correlation-id"]
    assert users.seen == [
        ("route", "ann", "req-42", "req-42"),
        ("handler", "ann", "req-42", "req-42"),
        ("handler", "bob", generated, generated),
    ]


async def test_get_event_bus_is_overridden_like_any_dependency(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    app = eventbus_app_factory(app_dir({"users/routes.py": ROUTES}))
    async with serving(app) as client, started_bus() as other:
        app.dependency_overrides[get_event_bus] = lambda: other
        with (
            EventRecorder().recording(other) as on_other,
            EventRecorder().recording(eventbus_api()) as on_app,
        ):
            response = await client.post("/users/legacy/cid")
    assert response.status_code == 200, response.text
    assert on_other.names() == ["user.created"]
    assert on_app.names() == []


async def test_outside_a_request_and_a_handler_there_is_no_correlation_id() -> None:
    assert get_correlation_id() is None
    seen: list[str | None] = []

    async def handler() -> None:
        seen.append(get_correlation_id())

    async with started_bus() as bus:
        bus.subscribe("x", handler)
        result = await bus.emit("x")
    assert result.event is not None
    # A root event emitted outside a request: its own id serves as correlation id.
    assert seen == [result.event.id]


def test_eventbusdep_is_the_annotated_dependency() -> None:
    from typing import get_args

    bus_type, depends = get_args(EventBusDep)
    assert bus_type is EventBus
    assert depends.dependency is get_event_bus
