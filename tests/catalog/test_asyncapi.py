"""The AsyncAPI 3.0.0 document, as the plugin serves it: valid against the official schema,
and saying exactly what the app's events are."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from catalog_support import HANDLERS, HOSTILE, SERVICE, line_of, validate_asyncapi
from fastapi.testclient import TestClient
from support import Factory

from fastapi_opinionated_eventbus._secrets import public_location


@pytest.fixture
def forget_main() -> Iterator[None]:
    """The factory imports the app's ``main``: do not leave it in sys.modules."""
    yield
    sys.modules.pop("main", None)


@pytest.fixture
def document(eventbus_app_factory: Factory, shop_app: Path, forget_main: None) -> dict[str, Any]:
    app = eventbus_app_factory(shop_app, main="main:app")
    with TestClient(app) as client:
        response = client.get("/asyncapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    served: dict[str, Any] = response.json()
    return served


def _operations(document: dict[str, Any], channel: str, action: str) -> list[dict[str, Any]]:
    return [
        op
        for op in document["operations"].values()
        if op["channel"]["$ref"] == f"#/channels/{channel}" and op["action"] == action
    ]


def test_the_document_validates_against_the_official_schema(document: dict[str, Any]) -> None:
    validate_asyncapi(document)
    assert document["info"]["title"] == "Shop"
    assert document["info"]["version"] == "2.1.0"
    assert "servers" not in document  # the local backend: events never leave the process
    assert document["x-eventbus"]["backend"] == "local"
    # main.py and the three domain modules; the f-string name is counted, not listed.
    assert document["x-eventbus"]["scan"] == {"files": 4, "truncated": False, "computed_names": 1}


def test_one_channel_per_event_name_and_pattern(document: dict[str, Any]) -> None:
    channels = document["channels"]
    addresses = {key: channel["address"] for key, channel in channels.items()}
    assert addresses == {
        "cache.flush": "cache.flush",
        "order.cancelled": "order.cancelled",
        "order.placed": "order.placed",
        "payment.processed": "payment.processed",
        "refund.issued": "refund.issued",
        "img_src_x_onerror_alert_1": HOSTILE,  # a safe key; the name itself as the address
        "order.": None,  # a pattern has no single address
    }
    assert channels["order."]["x-eventbus-pattern"] == "order.*"
    assert channels["order.placed"]["x-eventbus-also-handled-by"] == ["order.*"]
    assert channels["order.cancelled"]["x-eventbus-also-handled-by"] == ["order.*"]
    assert channels["img_src_x_onerror_alert_1"]["title"] == HOSTILE
    message = document["components"]["messages"]["img_src_x_onerror_alert_1"]
    assert message["name"] == HOSTILE


def test_a_typed_event_is_described_by_its_model(document: dict[str, Any]) -> None:
    message = document["components"]["messages"]["order.placed"]
    assert message["payload"] == {"$ref": "#/components/schemas/OrderPlaced"}
    assert message["x-eventbus-schema"].endswith(".events:OrderPlaced")
    schemas = document["components"]["schemas"]
    order = schemas["OrderPlaced"]
    assert order["required"] == ["order_id", "ship_to", "lines"]
    assert order["properties"]["ship_to"] == {"$ref": "#/components/schemas/Address"}
    # A tuple in draft 07's words (Pydantic writes draft 2020-12's prefixItems).
    assert order["properties"]["lines"]["items"] == [{"type": "string"}, {"type": "integer"}]
    assert "prefixItems" not in json.dumps(document)
    assert schemas["Address"]["required"] == ["street", "city"]


def test_untyped_payloads_come_from_the_handlers_annotations(document: dict[str, Any]) -> None:
    messages = document["components"]["messages"]
    audited, recorded = messages["payment.processed"]["payload"]["allOf"]  # by name
    positional = [
        {"type": "string", "title": "payment_id"},
        {"type": "number", "title": "amount"},
        {"type": "string", "title": "currency", "default": "EUR"},
    ]
    assert audited == {"type": "array", "items": positional, "minItems": 2, "maxItems": 3}
    assert recorded == {
        **audited,
        "x-eventbus-keyword-arguments": {
            "type": "object",
            "properties": {
                "note": {
                    "anyOf": [{"type": "string"}, {"type": "null"}],
                    "title": "note",
                    "default": None,
                }
            },
            "required": [],
        },
    }
    # Nothing annotated, nothing said: the empty schema, never a guess.
    assert messages["cache.flush"]["payload"] == {}
    assert messages["order.cancelled"]["payload"] == {}
    # An annotation that does not resolve at run time is named, not guessed.
    assert messages["refund.issued"]["payload"]["items"] == [
        {
            "title": "amount",
            "description": "annotated 'Decimal', which does not resolve at run time",
        }
    ]
    assert messages["order."]["payload"] == {"type": "array", "items": {}}
    assert messages["img_src_x_onerror_alert_1"]["payload"]["items"] == [
        {"type": "object", "additionalProperties": True, "title": "payload"}
    ]


def test_event_id_and_correlation_id_are_headers(document: dict[str, Any]) -> None:
    components = document["components"]
    for message in components["messages"].values():
        assert message["headers"] == {"$ref": "#/components/schemas/eventbus.EventHeaders"}
        assert message["correlationId"] == {
            "$ref": "#/components/correlationIds/eventbus.correlationId"
        }
    headers = components["schemas"]["eventbus.EventHeaders"]
    assert headers["required"] == ["event_id", "correlation_id"]
    assert components["correlationIds"]["eventbus.correlationId"]["location"] == (
        "$message.header#/correlation_id"
    )


def test_a_receive_operation_per_handler(document: dict[str, Any]) -> None:
    [reserve] = _operations(document, "order.placed", "receive")
    assert reserve["title"].endswith(".handlers:reserve_stock")
    assert reserve["summary"] == "async handler, priority 5, up to 3 attempts, timeout 2.5s"
    handler = reserve["x-eventbus-handler"]
    assert handler["retry"]["max_attempts"] == 3
    assert (handler["priority"], handler["timeout"], handler["async"]) == (5, 2.5, True)
    assert handler["location"] == (
        f"app/domains/shop/handlers.py:{line_of(HANDLERS, '@OnInternalEvent(OrderPlaced')}"
    )
    payments = _operations(document, "payment.processed", "receive")
    summaries = sorted(op["summary"] for op in payments)
    assert summaries == [
        "async handler, priority 0, no retry, no timeout, broadcast (every process)",
        "sync handler (worker thread), priority 0, no retry, no timeout",
    ]
    [pattern] = _operations(document, "order.", "receive")
    assert pattern["title"].endswith(":audit_orders")
    total = sum(1 for op in document["operations"].values() if op["action"] == "receive")
    assert total == 7


def test_a_send_operation_per_literal_emit_site(document: dict[str, Any]) -> None:
    sites = {
        (channel, op["x-eventbus-emit-site"]["line"])
        for channel in document["channels"]
        for op in _operations(document, channel, "send")
    }
    # The typed instance counts as order.placed; every emit method counts.
    assert sites == {
        ("order.placed", line_of(SERVICE, "emit(")),  # the first: emit(OrderPlaced(...))
        ("payment.processed", line_of(SERVICE, '"payment.processed"')),
        ("order.cancelled", line_of(SERVICE, '"order.cancelled"')),
        ("cache.flush", line_of(SERVICE, '"cache.flush"')),
    }
    [send] = _operations(document, "cache.flush", "send")
    assert send["x-eventbus-emit-site"]["file"] == "app/domains/shop/service.py"
    assert send["title"] == f"emit at app/domains/shop/service.py:{line_of(SERVICE, 'cache.flush')}"


def test_yaml_when_the_path_says_so(
    eventbus_app_factory: Factory, shop_app: Path, document: dict[str, Any]
) -> None:
    app = eventbus_app_factory(shop_app, asyncapi_path="/docs/asyncapi.yaml")
    with TestClient(app) as client:
        response = client.get("/docs/asyncapi.yaml")
    assert response.headers["content-type"] == "application/yaml"
    served = yaml.safe_load(response.text)
    # The same document (the factory's default title and version, not main.py's).
    assert served["channels"] == document["channels"]
    assert served["info"]["title"] == "FastAPI"


def test_handlers_subscribed_later_appear(eventbus_app_factory: Factory, shop_app: Path) -> None:
    from fastapi_opinionated_eventbus import eventbus_api

    app = eventbus_app_factory(shop_app, asyncapi_path="/asyncapi.json")
    with TestClient(app) as client:
        before = client.get("/asyncapi.json").json()

        async def late(count: int) -> None:
            pass

        eventbus_api().subscribe("stock.low", late)
        after = client.get("/asyncapi.json").json()
    assert "stock.low" not in before["channels"]
    assert after["channels"]["stock.low"]["address"] == "stock.low"
    assert after["components"]["messages"]["stock.low"]["payload"]["items"] == [
        {"type": "integer", "title": "count"}
    ]
    validate_asyncapi(after)


def test_off_by_default(eventbus_app_factory: Factory, shop_app: Path) -> None:
    app = eventbus_app_factory(shop_app)
    with TestClient(app) as client:
        assert client.get("/asyncapi.json").status_code == 404


@pytest.mark.parametrize(
    ("url", "location"),
    [
        ("redis://localhost:6379/0", ("redis", "localhost:6379", "/0")),
        (
            "rediss://app:s3cr3t@cache.example.com/2?password=x",
            ("rediss", "cache.example.com:6379", "/2"),
        ),
        ("redis://:p@ss/w0rd@[::1]:6380", ("redis", "[::1]:6380", "")),
        ("unix:///run/redis.sock?password=s3cr3t", ("unix", "localhost", "/run/redis.sock")),
        ("redis://host:notaport/0", ("redis", "unknown", "")),
    ],
)
def test_server_locations_never_carry_credentials(url: str, location: tuple[str, str, str]) -> None:
    assert public_location(url, default_port=6379) == location


def test_the_check_fails_an_invalid_or_dangling_document(document: dict[str, Any]) -> None:
    import copy

    import jsonschema

    no_info = {key: value for key, value in document.items() if key != "info"}
    with pytest.raises(jsonschema.ValidationError, match="'info' is a required property"):
        validate_asyncapi(no_info)
    dangling = copy.deepcopy(document)
    del dangling["components"]["schemas"]["Address"]
    with pytest.raises(AssertionError, match="#/components/schemas/Address does not resolve"):
        validate_asyncapi(dangling)
