"""Typed events: Pydantic models carrying their event name, subscription by class, schemas
registered for names, and validation at emit time (before any handler runs)."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
from pydantic import BaseModel, ValidationError
from support import AppDir, Factory, domain

from fastapi_opinionated_eventbus import (
    EventBus,
    OnInternalEvent,
    TypedEvent,
    current_event,
    eventbus_api,
)
from fastapi_opinionated_eventbus.testing import running, started_bus


class UserCreated(TypedEvent):
    __event_name__ = "user.created"
    id: int
    name: str


class PlainOrderPaid(BaseModel):
    """A plain BaseModel (not TypedEvent) with the name as a ClassVar."""

    __event_name__: ClassVar[str] = "order.paid"
    order_id: str
    amount: float


class Nameless(BaseModel):
    value: int


TYPED_SRC = """
    from pydantic import BaseModel

    from fastapi_opinionated_eventbus import (
        OnInternalEvent,
        TypedEvent,
        current_event,
        register_schema,
    )

    received = []


    class UserCreated(TypedEvent):
        __event_name__ = "user.created"
        id: int
        name: str


    class Refund(BaseModel):
        order_id: str
        amount: float


    register_schema("refund.issued", Refund)


    @OnInternalEvent(UserCreated)
    async def welcome(user):
        received.append(("welcome", user, current_event().name))


    @OnInternalEvent("user.created")
    def audit(user):  # subscribed by name: the schema applies all the same
        received.append(("audit", user, current_event().name))


    @OnInternalEvent("refund.issued")
    async def book_refund(refund):
        received.append(("book_refund", refund, current_event().name))
"""


async def test_a_typed_event_instance_reaches_handlers_subscribed_by_class_and_by_name(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    app = eventbus_app_factory(app_dir({"users/handlers.py": TYPED_SRC}))
    handlers = domain("users.handlers")
    user = handlers.UserCreated(id=1, name="Jane")
    async with running(app):
        result = await eventbus_api().emit(user)

    assert result.ok and result.handled == 2
    assert result.event is not None and result.event.name == "user.created"
    assert result.event.args == (user,)
    assert sorted(name for name, *_ in handlers.received) == ["audit", "welcome"]
    for _, received, fired in handlers.received:
        assert received is user  # the very instance, not a copy
        assert fired == "user.created"


async def test_dict_and_keyword_payloads_are_validated_into_the_model(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    app = eventbus_app_factory(app_dir({"users/handlers.py": TYPED_SRC}))
    handlers = domain("users.handlers")
    async with running(app):
        bus = eventbus_api()
        await bus.emit("user.created", {"id": "7", "name": "Ann"})  # "7" is coerced
        await bus.emit("user.created", id=8, name="Bob")
        bus.emit_nowait("refund.issued", {"order_id": "o-1", "amount": "12.5"})
        assert await bus.drain(5) == 0

    welcome = [user for name, user, _ in handlers.received if name == "welcome"]
    assert welcome == [
        handlers.UserCreated(id=7, name="Ann"),
        handlers.UserCreated(id=8, name="Bob"),
    ]
    assert all(type(user) is handlers.UserCreated for user in welcome)
    [(_, refund, fired)] = [r for r in handlers.received if r[0] == "book_refund"]
    assert type(refund) is handlers.Refund
    assert refund == handlers.Refund(order_id="o-1", amount=12.5)
    assert fired == "refund.issued"


@pytest.mark.parametrize(
    ("args", "kwargs", "bad_field"),
    [
        (({"id": "not-a-number", "name": "X"},), {}, "id"),
        (({"id": 1},), {}, "name"),
        ((), {"id": 1, "name": None}, "name"),
        ((), {"id": [], "name": "X"}, "id"),
    ],
)
async def test_an_invalid_payload_raises_validation_error_to_the_emitter_before_any_handler(
    app_dir: AppDir,
    eventbus_app_factory: Factory,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    bad_field: str,
) -> None:
    app = eventbus_app_factory(app_dir({"users/handlers.py": TYPED_SRC}))
    handlers = domain("users.handlers")
    async with running(app):
        bus = eventbus_api()
        with pytest.raises(ValidationError) as awaited:
            await bus.emit("user.created", *args, **kwargs)
        with pytest.raises(ValidationError) as background:
            bus.emit_nowait("user.created", *args, **kwargs)
        with pytest.raises(ValidationError):
            bus.emit_after_response("user.created", *args, **kwargs)
        assert bus.pending == 0
        assert await bus.drain(5) == 0

    assert handlers.received == []
    for info in (awaited, background):
        assert info.value.title == "UserCreated"
        assert [error["loc"][0] for error in info.value.errors()] == [bad_field]


async def test_a_payload_of_the_wrong_shape_is_refused_naming_the_schema() -> None:
    async def handler(user: UserCreated) -> None:
        raise AssertionError("must not run")

    async with started_bus() as bus:
        bus.subscribe(UserCreated, handler)
        with pytest.raises(TypeError, match=r"Event 'user.created' has the schema UserCreated"):
            await bus.emit("user.created", 1, "Jane")
        with pytest.raises(TypeError, match=r"has the schema UserCreated"):
            await bus.emit("user.created")
        with pytest.raises(TypeError, match=r"has the schema UserCreated"):
            await bus.emit("user.created", {"id": 1}, name="Jane")
        with pytest.raises(TypeError, match=r"takes no further arguments"):
            await bus.emit(UserCreated(id=1, name="J"), 2)


async def test_a_plain_base_model_with_an_event_name_works_like_typed_event() -> None:
    received: list[Any] = []

    async def on_paid(order: PlainOrderPaid) -> None:
        received.append((order, current_event().name))

    async with started_bus() as bus:
        bus.subscribe(PlainOrderPaid, on_paid)
        paid = PlainOrderPaid(order_id="o-1", amount=9.5)
        first = await bus.emit(paid)
        second = await bus.emit("order.paid", {"order_id": "o-2", "amount": 1})
        with pytest.raises(ValidationError):
            await bus.emit("order.paid", {"order_id": "o-3"})
        assert bus.unsubscribe(PlainOrderPaid, on_paid) is True
        after = await bus.emit(paid)

    assert first.handled == 1 and second.handled == 1 and after.handled == 0
    assert received[0] == (paid, "order.paid")
    assert received[0][0] is paid
    assert received[1] == (PlainOrderPaid(order_id="o-2", amount=1.0), "order.paid")
    assert len(received) == 2


async def test_typed_event_instances_are_immutable_for_the_handlers_sharing_them() -> None:
    outcome: list[str] = []

    async def tamper(user: UserCreated) -> None:
        try:
            user.name = "Mallory"
        except ValidationError as exc:
            outcome.append(exc.errors()[0]["type"])

    async with started_bus() as bus:
        bus.subscribe(UserCreated, tamper)
        user = UserCreated(id=1, name="Jane")
        await bus.emit(user)

    assert outcome == ["frozen_instance"]
    assert user.name == "Jane"


def test_a_model_without_an_event_name_is_refused_with_type_error() -> None:
    async def handler(value: Nameless) -> None:
        pass

    with pytest.raises(TypeError, match=r"Nameless is used as a typed event but has no event"):
        OnInternalEvent(Nameless)
    with pytest.raises(TypeError, match=r"__event_name__"):
        EventBus().subscribe(Nameless, handler)


async def test_emitting_an_instance_of_a_model_without_an_event_name_is_refused() -> None:
    async with started_bus() as bus:
        with pytest.raises(TypeError, match=r"Nameless is used as a typed event"):
            await bus.emit(Nameless(value=1))
        with pytest.raises(TypeError, match=r"Nameless is used as a typed event"):
            bus.emit_nowait(Nameless(value=1))
        assert bus.pending == 0


def test_a_typed_event_cannot_have_a_pattern_name() -> None:
    class AnyUser(TypedEvent):
        __event_name__ = "user.*"

    with pytest.raises(
        ValueError, match=r"typed event .*AnyUser cannot have a pattern name .user\.\*."
    ):
        OnInternalEvent(AnyUser)


async def test_a_second_schema_for_the_same_event_is_refused() -> None:
    class OtherUser(BaseModel):
        id: int

    async with started_bus() as bus:
        bus.register_schema("user.created", UserCreated)
        bus.register_schema("user.created", UserCreated)  # the same again is fine
        with pytest.raises(ValueError, match=r"already has the schema UserCreated"):
            bus.register_schema("user.created", OtherUser)
        with pytest.raises(TypeError, match=r"must be a pydantic BaseModel subclass"):
            bus.register_schema("user.updated", dict)  # type: ignore[arg-type]


async def test_register_schema_on_a_live_bus_applies_to_the_next_emit() -> None:
    received: list[Any] = []

    async def handler(payload: Any) -> None:
        received.append(payload)

    async with started_bus() as bus:
        bus.subscribe("user.created", handler)
        await bus.emit("user.created", {"id": 1, "name": "raw"})  # plan cached, no schema
        bus.register_schema("user.created", UserCreated)
        await bus.emit("user.created", {"id": 2, "name": "typed"})

    assert received == [{"id": 1, "name": "raw"}, UserCreated(id=2, name="typed")]
