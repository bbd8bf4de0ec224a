"""The wire formats: the documented JSON (the Redis codec's values), fastapi-events' pair,
typed events' keys, and the echo forwarder that prints them."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import ClassVar

import pytest

from fastapi_opinionated_eventbus import (
    EventBus,
    EventEnvelope,
    EventSerializationError,
    RetryPolicy,
    TypedEvent,
)
from fastapi_opinionated_eventbus.forwarding import (
    EchoForwarder,
    WireFormat,
    decode_event,
    encode_event,
    event_key,
)


class OrderPaid(TypedEvent):
    __event_name__ = "order.paid"
    __event_key__: ClassVar[str] = "order_id"
    order_id: int
    amount: Decimal


def envelope(*args: object, **kwargs: object) -> EventEnvelope:
    return EventEnvelope(
        "order.paid",
        args,
        dict(kwargs),
        "req-42",
        chain=("cart.checked_out",),
        event_id="evt-1",
        emitted_at=datetime(2026, 11, 23, 10, 0, 0, 123456, tzinfo=UTC).timestamp(),
    )


def test_the_eventbus_format_has_every_documented_field() -> None:
    text = encode_event(envelope({"id": 1, "name": "Zoë"}, note="x"))
    assert text.isascii()
    assert json.loads(text) == {
        "v": 1,
        "id": "evt-1",
        "name": "order.paid",
        "correlation_id": "req-42",
        "emitted_at": "2026-11-23T10:00:00.123456+00:00",
        "args": [{"id": 1, "name": "Zoë"}],
        "kwargs": {"note": "x"},
        "chain": ["cart.checked_out"],
        "trace": {},
    }


def test_a_root_event_carries_its_own_id_as_correlation_id() -> None:
    root = EventEnvelope("user.created", (1,), {})
    assert json.loads(encode_event(root))["correlation_id"] == root.id


def test_the_eventbus_format_carries_the_codec_s_values_and_decodes_back() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    values = (when, date(2026, 1, 2), uuid.UUID(int=7), Decimal("1.10"), (1, 2), {"$eb": 1})
    sent = envelope(*values, paid=OrderPaid(order_id=5, amount=Decimal("9.99")))
    received = decode_event(encode_event(sent))
    assert received.id == sent.id and received.name == sent.name
    assert received.correlation_id == "req-42" and received.chain == sent.chain
    assert received.emitted_at == sent.emitted_at
    assert received.args == values
    # A model nobody registered arrives as its fields (never imported by name).
    assert received.kwargs == {"paid": {"order_id": 5, "amount": "9.99"}}


def test_decoding_with_the_schema_rebuilds_the_typed_event() -> None:
    sent = EventEnvelope("order.paid", (OrderPaid(order_id=5, amount=Decimal(1)),), {})
    schemas = {"order.paid": OrderPaid}
    received = decode_event(encode_event(sent), schema_for=schemas.get)
    assert received.args == sent.args
    assert received.correlation_id == sent.id  # a root event's: its own id


@pytest.mark.parametrize(
    "text", ["", "[]", '{"v": 2}', '{"v": 1, "id": "a"}', '{"v": 1, "id": 1, "name": "x"}']
)
def test_decoding_something_else_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        decode_event(text)


def test_the_fastapi_events_format_is_the_name_and_one_payload() -> None:
    def pair(*args: object, **kwargs: object) -> object:
        return json.loads(encode_event(envelope(*args, **kwargs), WireFormat.FASTAPI_EVENTS))

    payload = {"id": 1, "tags": ["a"], "price": 9.5}
    # What fastapi-events' SQSForwardHandler writes: json.dumps((name, payload), default=str).
    assert pair(payload) == json.loads(json.dumps(("order.paid", payload), default=str))
    assert pair(OrderPaid(order_id=5, amount=Decimal("9.99"))) == [
        "order.paid",
        {"order_id": 5, "amount": "9.99"},
    ]
    assert pair(id=1) == ["order.paid", {"id": 1}]
    assert pair() == ["order.paid", None]
    with pytest.raises(EventSerializationError, match="carries one payload"):
        pair(1, 2)
    with pytest.raises(EventSerializationError, match="cannot be written as JSON"):
        pair(object())


def test_a_typed_event_s_key_is_the_field_it_names() -> None:
    assert (
        event_key(EventEnvelope("order.paid", (OrderPaid(order_id=5, amount=Decimal(1)),), {}))
        == "5"
    )
    assert event_key(envelope({"order_id": 5})) is None

    class Broken(TypedEvent):
        __event_name__ = "x"
        __event_key__: ClassVar[str] = "missing"

    with pytest.raises(EventSerializationError, match="must name one of its fields"):
        event_key(EventEnvelope("x", (Broken(),), {}))


async def test_echo_prints_each_event_and_refuses_only_what_cannot_be_written() -> None:
    out = io.StringIO()
    bus = EventBus()
    bus.forward("order.*", EchoForwarder(out), retry=RetryPolicy(max_attempts=1), max_wait=0.1)
    await bus.start()
    good = bus.emit_nowait("order.paid", {"id": 1})
    bad = bus.emit_nowait("order.paid", {1, 2})  # a set: no JSON for it
    assert await bus.drain(5) == 0
    printed = out.getvalue()
    assert json.loads(printed)["id"] == good.id
    assert '\n  "name": "order.paid",\n' in printed  # indented
    (letter,) = await bus.dead_letters()
    assert letter.event.id == bad.id
    assert "args[0] is a set" in letter.message
    await bus.aclose()


def test_echo_writes_the_fastapi_events_format_too() -> None:
    out = io.StringIO()
    forwarder = EchoForwarder(out, format="fastapi-events")
    asyncio.run(forwarder.send_many([envelope({"id": 1})]))
    assert json.loads(out.getvalue()) == ["order.paid", {"id": 1}]
    assert repr(forwarder) == "EchoForwarder(format='fastapi-events')"


def test_an_app_that_forwards_nothing_never_imports_forwarding_nor_its_clients() -> None:
    code = (
        "import sys, fastapi_opinionated.app\n"
        "from fastapi_opinionated_eventbus import EventBus\n"
        "EventBus(forward=[])\n"
        "assert 'fastapi_opinionated_eventbus.forwarding' not in sys.modules\n"
        "from fastapi_opinionated_eventbus.forwarding import EchoForwarder, Forward\n"
        "EventBus(forward=[Forward('a.*', EchoForwarder())])\n"
        "assert not {'aiobotocore', 'botocore'} & set(sys.modules)\n"
        "from fastapi_opinionated_eventbus.forwarding import SQSForwarder\n"
        "SQSForwarder('http://127.0.0.1:9/1/q', region_name='us-east-1')\n"
        "assert 'aiobotocore' in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
