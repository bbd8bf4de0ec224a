"""Shared by the event catalog's tests (tests/catalog, tests/cli): a shop app whose events
cover what the catalog describes (typed, annotated, unannotated, unresolvable, pattern,
broadcast, a hostile name), and the check of a document against the official AsyncAPI
3.0.0 JSON Schema (committed in tests/catalog/asyncapi, see its README)."""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Any

import jsonschema
from fastapi import FastAPI
from fastapi.testclient import TestClient

SCHEMA = Path(__file__).parent / "catalog" / "asyncapi" / "asyncapi-3.0.0.schema.json"

HOSTILE = "<img src=x onerror=alert(1)>"

EVENTS = """\
from __future__ import annotations

from pydantic import BaseModel

from fastapi_opinionated_eventbus import TypedEvent


class Address(BaseModel):
    street: str
    city: str


class OrderPlaced(TypedEvent):
    __event_name__ = "order.placed"
    order_id: int
    ship_to: Address
    lines: tuple[str, int]
"""

HANDLERS = f"""\
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi_opinionated_eventbus import OnInternalEvent, RetryPolicy

from .events import OrderPlaced

if TYPE_CHECKING:
    from decimal import Decimal  # not imported at run time: the annotation cannot resolve


@OnInternalEvent(OrderPlaced, priority=5, retry=RetryPolicy(max_attempts=3), timeout=2.5)
async def reserve_stock(order: OrderPlaced) -> None:
    pass


@OnInternalEvent("payment.processed", broadcast=True)
async def record_payment(
    payment_id: str, amount: float, currency: str = "EUR", *, note: str | None = None
) -> None:
    pass


@OnInternalEvent("payment.processed")
def audit_payment(payment_id: str, amount: float, currency: str = "EUR") -> None:
    pass


@OnInternalEvent("cache.flush")
def flush(*keys):  # no annotation: says nothing about the payload
    pass


@OnInternalEvent("refund.issued")
async def refund(amount: Decimal) -> None:
    pass


@OnInternalEvent("order.*")
def audit_orders(*args: object) -> None:
    pass


@OnInternalEvent({HOSTILE!r})
async def hostile(payload: dict[str, Any]) -> None:
    raise RuntimeError("the hostile event's handler fails")
"""

SERVICE = """\
from __future__ import annotations

from fastapi_opinionated_eventbus import eventbus_api

from .events import Address, OrderPlaced


async def place_order(kind: str) -> None:
    await eventbus_api().emit(
        OrderPlaced(order_id=1, ship_to=Address(street="Main St", city="Oslo"), lines=("a", 1))
    )
    await eventbus_api().emit("payment.processed", "p_1", 9.5)
    await eventbus_api().emit(f"order.{kind}")  # a computed name: counted, not listed


def later() -> None:
    eventbus_api().emit_nowait("order.cancelled", 1)  # only the pattern handles it
    eventbus_api().emit_after_response("cache.flush")
"""


def line_of(source: str, text: str) -> int:
    """The 1-based number of the first line of ``source`` containing ``text``."""
    return next(n for n, line in enumerate(source.splitlines(), 1) if text in line)


SHOP_APP = {
    "shop/events.py": EVENTS,
    "shop/handlers.py": HANDLERS,
    "shop/service.py": SERVICE,
}

MAIN = """\
from fastapi_opinionated.app import App

from fastapi_opinionated_eventbus import EventBusPlugin

App.configurePlugin(
    EventBusPlugin(), introspection_path="/_eventbus", asyncapi_path="/asyncapi.json"
)
app = App.create(title="Shop", version="2.1.0")
"""


@functools.cache
def _validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))


def validate_asyncapi(document: dict[str, Any]) -> None:
    """Fails unless the document validates against the official schema, every ``$ref``
    in it resolves, and every operation's messages are its channel's."""
    _validator().validate(document)
    assert document["asyncapi"] == "3.0.0"
    for ref in _refs(document):
        assert _resolve(document, ref) is not None, f"{ref} does not resolve"
    for key, operation in document["operations"].items():
        channel = operation["channel"]["$ref"]
        for message in operation["messages"]:
            assert message["$ref"].startswith(channel + "/messages/"), key


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for item in node for ref in _refs(item)]
    return []


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"not a local reference: {ref}"
    node: Any = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def served_with_a_broker(
    app: FastAPI, correlation_id: str, *, timeout: float = 15.0
) -> dict[str, Any]:
    """With a broker backend: the app's served AsyncAPI document (checked valid). A route
    emits payment.processed and the HOSTILE event under ``correlation_id``; once the
    consuming side has handled the first twice (its handler and the broadcast one) and
    dead-lettered the second, the JSON view must report that failure with the event id and
    correlation id it travelled with."""
    from fastapi_opinionated_eventbus import eventbus_api

    @app.post("/emit")
    async def emit() -> dict[str, Any]:
        await eventbus_api().emit("payment.processed", "p_1", 9.5)
        result = await eventbus_api().emit(HOSTILE, {"card": "4111"})
        return {"event_id": result.event_id}

    with TestClient(app) as client:
        document: dict[str, Any] = client.get("/asyncapi.json").json()
        sent = client.post("/emit", headers={"X-Correlation-ID": correlation_id}).json()
        deadline = time.monotonic() + timeout
        while True:
            report = client.get("/_eventbus").json()
            events = report["counters"]["events"]
            if (
                events.get(HOSTILE, {}).get("dead_lettered")
                and events.get("payment.processed", {}).get("handled") == 2
            ):
                break
            assert time.monotonic() < deadline, report["counters"]
            time.sleep(0.05)  # polling interval, not synchronisation
    validate_asyncapi(document)
    # Emitted here, and handled here too (this process is also the group's consumer).
    assert events["payment.processed"]["emitted"] == 1
    [failure] = report["recent_failures"]
    assert (failure["event"], failure["event_id"]) == (HOSTILE, sent["event_id"])
    assert failure["correlation_id"] == correlation_id  # carried through the broker
    assert failure["exception_type"] == "RuntimeError"
    return document
