"""current_event(): what a handler learns about the event it runs for, in async handlers and
in sync handlers (worker threads); immutability; NoCurrentEvent outside a handler; chains
of chained emits; unique ids."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from support import AppDir, Factory, domain

from fastapi_opinionated_eventbus import (
    EventEnvelope,
    NoCurrentEvent,
    current_event,
    eventbus_api,
)
from fastapi_opinionated_eventbus.testing import running, started_bus

ENVELOPE_SRC = """
    import threading

    from fastapi.responses import JSONResponse
    from fastapi_opinionated.decorators.routing import Post

    from fastapi_opinionated_eventbus import OnInternalEvent, current_event, eventbus_api

    seen = {}


    def _snapshot(tag):
        event = current_event()
        seen[tag] = {
            "envelope": event,
            "name": event.name,
            "id": event.id,
            "args": event.args,
            "kwargs": event.kwargs,
            "attempt": event.attempt,
            "chain": event.chain,
            "emitted_at": event.emitted_at,
            "thread": threading.get_ident(),
        }


    @OnInternalEvent("profile.updated")
    async def on_loop(user_id, *, fields):
        _snapshot("async")


    @OnInternalEvent("profile.updated")
    def in_thread(user_id, *, fields):
        _snapshot("sync")


    @Post("/profiles/{user_id}")
    async def update_profile(user_id: int):
        result = await eventbus_api().emit("profile.updated", user_id, fields=["name"])
        return JSONResponse({"event_id": result.event.id, "handled": result.handled})
"""


async def test_async_and_sync_handlers_see_the_same_envelope_of_a_request_emit(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    app = eventbus_app_factory(app_dir({"profiles/handlers.py": ENVELOPE_SRC}))
    handlers = domain("profiles.handlers")
    loop_thread = threading.get_ident()
    before = datetime.now(UTC)
    async with (
        running(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        response = await client.post("/profiles/42")

    assert response.status_code == 200
    body = response.json()
    assert body["handled"] == 2
    assert set(handlers.seen) == {"async", "sync"}
    for tag in ("async", "sync"):
        seen = handlers.seen[tag]
        assert seen["name"] == "profile.updated"
        assert seen["id"] == body["event_id"]
        assert seen["args"] == (42,)
        assert seen["kwargs"] == {"fields": ["name"]}
        assert seen["attempt"] == 1
        assert seen["chain"] == ()
        assert isinstance(seen["envelope"], EventEnvelope)
        assert seen["emitted_at"].tzinfo is not None
        assert before <= seen["emitted_at"] <= datetime.now(UTC)
    assert handlers.seen["async"]["thread"] == loop_thread
    assert handlers.seen["sync"]["thread"] != loop_thread  # really ran in a worker thread


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_current_event_in_a_single_handler_and_in_background_dispatch(kind: str) -> None:
    seen: list[tuple[str, str, tuple[Any, ...], dict[str, Any], int, tuple[str, ...]]] = []

    def record() -> None:
        event = current_event()
        seen.append((event.name, event.id, event.args, event.kwargs, event.attempt, event.chain))

    async def async_handler(*args: Any, **kwargs: Any) -> None:
        record()

    def sync_handler(*args: Any, **kwargs: Any) -> None:
        record()

    async with started_bus() as bus:
        bus.subscribe("solo", async_handler if kind == "async" else sync_handler)
        result = await bus.emit("solo", 1, 2, flag=True)
        envelope = bus.emit_nowait("solo", "bg", flag=False)
        assert await bus.drain(5) == 0

    assert result.event is not None
    assert seen == [
        ("solo", result.event.id, (1, 2), {"flag": True}, 1, ()),
        ("solo", envelope.id, ("bg",), {"flag": False}, 1, ()),
    ]
    assert result.event.id != envelope.id


@pytest.mark.parametrize(
    ("attribute", "value"),
    [
        ("name", "other"),
        ("id", "forged"),
        ("args", ()),
        ("kwargs", {}),
        ("attempt", 9),
        ("chain", ("x",)),
        ("correlation_id", "c"),
        ("brand_new_attribute", 1),
    ],
)
async def test_the_envelope_is_immutable(attribute: str, value: Any) -> None:
    outcome: list[BaseException | None] = []

    async def handler(**kwargs: Any) -> None:
        event = current_event()
        try:
            setattr(event, attribute, value)
        except AttributeError as exc:
            outcome.append(exc)
        else:
            outcome.append(None)
        # Mutating the kwargs it hands out does not change the event either.
        event.kwargs["injected"] = True

    async with started_bus() as bus:
        bus.subscribe("evt", handler)
        result = await bus.emit("evt", user=1)

    assert result.ok, result.failures
    [error] = outcome
    assert isinstance(error, AttributeError), f"setting {attribute} did not raise"
    assert result.event is not None
    assert result.event.name == "evt"
    assert result.event.kwargs == {"user": 1}
    assert not hasattr(result.event, "brand_new_attribute")


def test_current_event_outside_a_handler_raises_no_current_event() -> None:
    with pytest.raises(NoCurrentEvent, match=r"current_event\(\) was called outside an event"):
        current_event()
    assert issubclass(NoCurrentEvent, LookupError)


async def test_current_event_is_unset_again_in_the_emitter_and_in_other_threads() -> None:
    inside: list[str] = []

    async def handler() -> None:
        inside.append(current_event().name)

    def sync_handler() -> None:
        inside.append(current_event().name)

    def in_a_plain_thread() -> str:
        try:
            current_event()
        except NoCurrentEvent as exc:
            return str(exc)
        return "no error"

    async with started_bus() as bus:
        bus.subscribe("single", handler)
        bus.subscribe("pair", handler)
        bus.subscribe("pair", sync_handler)
        await bus.emit("single")
        with pytest.raises(NoCurrentEvent):
            current_event()
        await bus.emit("pair")
        with pytest.raises(NoCurrentEvent):
            current_event()
        message = await asyncio.to_thread(in_a_plain_thread)

    assert inside == ["single", "pair", "pair"]
    assert "outside an event handler" in message


CHAIN_SRC = """
    from fastapi_opinionated_eventbus import OnInternalEvent, current_event, eventbus_api

    seen = []


    def _record(tag):
        event = current_event()
        seen.append((tag, event.name, event.chain, event.id, event.correlation_id))


    @OnInternalEvent("order.placed")
    async def place(order_id):
        _record("place")
        await eventbus_api().emit("payment.requested", order_id)


    @OnInternalEvent("payment.requested")
    def pay(order_id):  # sync: emits from a worker thread
        _record("pay")
        eventbus_api().emit_nowait("receipt.sent", order_id)


    @OnInternalEvent("receipt.sent")
    async def receipt(order_id):
        _record("receipt")
        await eventbus_api().emit("audit.logged", order_id)


    @OnInternalEvent("audit.*")
    async def audit(order_id):
        _record("audit")
"""


async def test_chain_of_a_chained_emit_lists_the_parent_names_outermost_first(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    app = eventbus_app_factory(app_dir({"orders/handlers.py": CHAIN_SRC}))
    handlers = domain("orders.handlers")
    async with running(app):
        bus = eventbus_api()
        result = await bus.emit("order.placed", "o-1")
        assert await bus.drain(5) == 0

    assert result.ok
    by_tag = {tag: (name, chain) for tag, name, chain, _, _ in handlers.seen}
    assert by_tag == {
        "place": ("order.placed", ()),
        "pay": ("payment.requested", ("order.placed",)),
        "receipt": ("receipt.sent", ("order.placed", "payment.requested")),
        "audit": ("audit.logged", ("order.placed", "payment.requested", "receipt.sent")),
    }
    ids = [event_id for _, _, _, event_id, _ in handlers.seen]
    assert len(set(ids)) == 4  # every chained event is an event of its own
    assert result.event is not None
    # Documented: without a request, the correlation id is the root event's id.
    assert {cid for *_, cid in handlers.seen} == {result.event.id}


async def test_event_ids_are_unique_across_1000_events() -> None:
    ids: list[str] = []

    async def record(n: int) -> None:
        ids.append(current_event().id)

    def record_sync(n: int) -> None:
        ids.append(current_event().id)

    async with started_bus() as bus:
        bus.subscribe("tick", record)
        bus.subscribe("tock", record_sync)
        results = [await bus.emit("tick", n) for n in range(500)]
        envelopes = [bus.emit_nowait("tock", n) for n in range(500)]
        assert await bus.drain(5) == 0

    assert len(ids) == 1000
    assert len(set(ids)) == 1000
    emitted = [r.event.id for r in results if r.event is not None] + [e.id for e in envelopes]
    assert sorted(emitted) == sorted(ids)
    # An id is stable: reading it twice gives the same value.
    assert [e.id for e in envelopes] == [e.id for e in envelopes]
