"""emit_many(): several events handed to the backend at once, in order (local backend)."""

from __future__ import annotations

from typing import ClassVar

import pytest
from pydantic import ValidationError

from fastapi_opinionated_eventbus import EventBus, TypedEvent
from fastapi_opinionated_eventbus.testing import started_bus


class OrderPaid(TypedEvent):
    __event_name__: ClassVar[str] = "order.paid"
    order_id: int


async def test_events_run_in_order_each_with_its_own_result() -> None:
    seen: list[object] = []

    async def on_any(*args: object) -> None:
        seen.append(args)

    async with started_bus() as bus:
        bus.subscribe("order.*", on_any)
        results = await bus.emit_many(
            [("order.created", 1), OrderPaid(order_id=1), ("order.shipped", 1, "fast"), ("x",)]
        )
    assert [r.handled for r in results] == [1, 1, 1, 0]
    assert seen == [(1,), (OrderPaid(order_id=1),), (1, "fast")]
    assert len({r.event_id for r in results}) == 4
    assert results[1].event is not None and results[1].event.name == "order.paid"


async def test_a_bad_item_is_named_and_nothing_runs() -> None:
    seen: list[int] = []

    async def on_paid(event: OrderPaid) -> None:
        seen.append(event.order_id)

    async with started_bus() as bus:
        bus.subscribe(OrderPaid, on_paid)
        with pytest.raises(TypeError) as bad_item:
            # 42: deliberately not an event
            await bus.emit_many([("order.paid", {"order_id": 1}), 42])  # type: ignore[list-item]
        with pytest.raises(ValidationError) as bad_payload:
            await bus.emit_many([("order.paid", {"order_id": 2}), ("order.paid", {"no": 1})])
    assert "event 1 of the batch" in (bad_item.value.__notes__ or [""])[0]
    assert "event 1 of the batch" in (bad_payload.value.__notes__ or [""])[0]
    assert seen == []


async def test_failures_are_returned_or_raised_when_strict() -> None:
    async def broken(n: int) -> None:
        raise RuntimeError(f"no {n}")

    async with started_bus() as bus:
        bus.subscribe("job", broken)
        results = await bus.emit_many([("job", 1), ("job", 2)])
        with pytest.raises(ExceptionGroup) as group:
            await bus.emit_many([("job", 3)], strict=True)
        letters = await bus.dead_letters()
    assert [len(r.failures) for r in results] == [1, 1]
    assert [str(e) for e in group.value.exceptions] == ["no 3"]
    assert [letter.event.args for letter in letters] == [(1,), (2,), (3,)]


async def test_a_disabled_bus_sends_nothing() -> None:
    bus = EventBus(disabled=True)
    await bus.start()
    try:
        results = await bus.emit_many([("a", 1), ("b", 2)])
    finally:
        await bus.aclose()
    assert [(r.event, r.handled) for r in results] == [(None, 0), (None, 0)]
