"""Correlation ids, metrics, tracing and the introspection endpoint, through a real app."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from support import strip_ansi

from fastapi_opinionated_eventbus import EventBus, eventbus_api
from fastapi_opinionated_eventbus._core.errors import ConfigurationError
from fastapi_opinionated_eventbus.metrics import CountingCollector
from fastapi_opinionated_eventbus.testing import running

HANDLERS = """
    from fastapi_opinionated.decorators.routing import Controller, Get, Post
    from fastapi_opinionated_eventbus import OnInternalEvent, current_event, eventbus_api

    SEEN = []

    @OnInternalEvent("order.placed")
    async def on_placed(order_id):
        SEEN.append(("placed", order_id, current_event().correlation_id))
        await eventbus_api().emit("order.audited", order_id)

    @OnInternalEvent("order.audited")
    def on_audited(order_id):
        SEEN.append(("audited", order_id, current_event().correlation_id))

    @OnInternalEvent("order.*")
    async def on_any_order(order_id):
        if current_event().name == "order.broken":
            raise RuntimeError("broken order " + str(order_id))

    @Controller("/orders")
    class OrderController:
        @Post("/")
        async def place(self):
            await eventbus_api().emit("order.placed", 7)
            return {"ok": True}

        @Post("/broken")
        async def broken(self):
            await eventbus_api().emit("order.broken", 9)
            return {"ok": True}

        @Get("/seen")
        async def seen(self):
            return SEEN
"""


@pytest.fixture
def orders_app(app_dir: Callable[..., Path]) -> Path:
    return app_dir({"orders/handlers.py": HANDLERS})


def test_request_correlation_id_is_echoed_and_carried_by_chained_events(
    eventbus_app_factory: Callable[..., Any], orders_app: Path
) -> None:
    app = eventbus_app_factory(orders_app)
    with TestClient(app) as client:
        response = client.post("/orders/", headers={"X-Correlation-ID": "req-42.a:b"})
        assert response.headers["x-correlation-id"] == "req-42.a:b"
        seen = client.get("/orders/seen").json()
    assert ["placed", 7, "req-42.a:b"] in seen
    assert ["audited", 7, "req-42.a:b"] in seen  # chained, from a sync handler's thread


def test_x_request_id_is_accepted_and_a_missing_id_is_generated(
    eventbus_app_factory: Callable[..., Any], orders_app: Path
) -> None:
    app = eventbus_app_factory(orders_app)
    with TestClient(app) as client:
        from_request_id = client.post("/orders/", headers={"X-Request-ID": "abc-123"})
        generated = client.post("/orders/")
        second = client.post("/orders/")
    assert from_request_id.headers["x-correlation-id"] == "abc-123"
    assert len(generated.headers["x-correlation-id"]) == 32
    assert generated.headers["x-correlation-id"] != second.headers["x-correlation-id"]


@pytest.mark.parametrize(
    "hostile",
    ["evil\r\nINFO forged line", "x" * 200, "spaces are bad", "ünïcode", ""],
)
def test_unsafe_correlation_header_is_replaced(
    eventbus_app_factory: Callable[..., Any], orders_app: Path, hostile: str
) -> None:
    app = eventbus_app_factory(orders_app)

    async def scenario() -> str:
        async with running(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                # httpx refuses \r\n in header values: send raw bytes through the ASGI scope.
                response = await client.post(
                    "/orders/", headers=[(b"x-correlation-id", hostile.encode())]
                )
                return response.headers["x-correlation-id"]

    if "\r\n" in hostile:
        # Build the scope by hand: no HTTP client will send this.
        echoed = asyncio.run(_raw_post(app, [(b"x-correlation-id", hostile.encode())]))
    else:
        echoed = asyncio.run(scenario())
    assert echoed != hostile
    assert len(echoed) == 32 and echoed.isalnum()


async def _raw_post(app: Any, headers: list[tuple[bytes, bytes]]) -> str:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/orders/",
        "raw_path": b"/orders/",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    async with running(app):
        await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    correlation_id: bytes = dict(start["headers"])[b"x-correlation-id"]
    return correlation_id.decode()


async def test_outside_a_request_each_root_event_gets_its_own_correlation_id() -> None:
    bus = EventBus()
    await bus.start()
    seen: list[tuple[str, str]] = []

    async def parent(n: int) -> None:
        from fastapi_opinionated_eventbus import current_event

        seen.append(("parent", current_event().correlation_id))
        await bus.emit("child", n)

    async def child(n: int) -> None:
        from fastapi_opinionated_eventbus import current_event

        seen.append(("child", current_event().correlation_id))

    bus.subscribe("parent", parent)
    bus.subscribe("child", child)
    first = await bus.emit("parent", 1)
    second = await bus.emit("parent", 2)
    await bus.aclose()
    assert seen[0][1] == seen[1][1] == first.event_id
    assert seen[2][1] == seen[3][1] == second.event_id
    assert first.event_id != second.event_id


def test_failure_log_carries_the_correlation_id(
    eventbus_app_factory: Callable[..., Any],
    orders_app: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = eventbus_app_factory(orders_app)
    with TestClient(app) as client:
        assert (
            client.post("/orders/broken", headers={"X-Correlation-ID": "cid-9"}).status_code == 200
        )
    text = strip_ansi(caplog.text)
    assert "broken order 9" in text
    assert "correlation=cid-9" in text


def test_prometheus_metrics_endpoint(
    eventbus_app_factory: Callable[..., Any], orders_app: Path
) -> None:
    app = eventbus_app_factory(orders_app, metrics="prometheus", metrics_path="/metrics")
    with TestClient(app) as client:
        client.post("/orders/")
        client.post("/orders/broken")
        body = client.get("/metrics").text
    assert 'eventbus_events_emitted_total{event="order.placed"} 1.0' in body
    assert 'eventbus_events_emitted_total{event="order.audited"} 1.0' in body
    # Handler series are labelled by the subscribed pattern, not each matched name.
    assert 'subscription="order.*"' in body
    assert (
        'eventbus_events_failed_total{handler="handlers:on_any_order",subscription="order.*"} 1.0'
        in body.replace("app.domains.orders.", "")
    )
    assert "eventbus_handler_duration_seconds_bucket" in body
    assert "eventbus_background_in_flight 0.0" in body
    # No handler series is labelled by the matched name instead of the pattern.
    assert 'subscription="order.broken"' not in body


def test_metrics_path_without_prometheus_is_a_configuration_error(
    eventbus_app_factory: Callable[..., Any], orders_app: Path
) -> None:
    with pytest.raises(ConfigurationError, match="metrics_path"):
        eventbus_app_factory(orders_app, metrics_path="/metrics")


async def test_a_custom_collector_sees_every_outcome() -> None:
    from fastapi_opinionated_eventbus import RetryPolicy

    counts = CountingCollector()
    bus = EventBus(metrics=counts)
    await bus.start()
    calls = {"flaky": 0}

    async def flaky() -> None:
        calls["flaky"] += 1
        if calls["flaky"] < 2:
            raise ValueError("first time fails")

    async def doomed() -> None:
        raise ValueError("always")

    bus.subscribe("e", flaky, retry=RetryPolicy(max_attempts=2, initial_delay=0, jitter=0))
    bus.subscribe("e", doomed)
    await bus.emit("e")
    lost = await bus.aclose()
    snapshot = counts.snapshot()
    assert lost == 0
    assert snapshot["emitted"] == 1
    assert snapshot["handled"] == 1  # flaky, on its second attempt
    assert snapshot["failed"] == 2  # flaky's first attempt and doomed
    assert snapshot["retried"] == 1
    assert snapshot["dead_lettered"] == 1
    assert snapshot["failures_by_handler"] == {
        f"{__name__}:test_a_custom_collector_sees_every_outcome.<locals>.doomed": 1,
        f"{__name__}:test_a_custom_collector_sees_every_outcome.<locals>.flaky": 1,
    }


def test_bad_metrics_option_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="metrics"):
        EventBus(metrics="statsd")


async def test_tracing_spans_per_emit_and_per_handler(spans: InMemorySpanExporter) -> None:
    bus = EventBus(tracing=True)
    await bus.start()

    async def good(x: int) -> None:
        pass

    def bad(x: int) -> None:
        raise KeyError("nope")

    bus.subscribe("traced", good)
    bus.subscribe("traced", bad)
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("request") as request_span:
        result = await bus.emit("traced", 1)
    bus.emit_nowait("traced.bg", 2)
    await bus.aclose()

    finished = {span.name: span for span in spans.get_finished_spans()}
    emit_span = finished["eventbus emit traced"]
    handler_spans = [s for s in spans.get_finished_spans() if s.name == "eventbus handle traced"]
    assert emit_span.parent is not None
    assert emit_span.parent.span_id == request_span.get_span_context().span_id
    assert emit_span.attributes is not None
    assert emit_span.attributes["eventbus.event_id"] == result.event_id
    assert len(handler_spans) == 2
    by_outcome = {s.attributes["eventbus.outcome"]: s for s in handler_spans if s.attributes}
    assert set(by_outcome) == {"ok", "error"}
    failed = by_outcome["error"]
    assert failed.attributes is not None
    assert isinstance(failed.attributes["eventbus.handler"], str)
    assert failed.attributes["eventbus.handler"].endswith("bad")
    assert failed.attributes["eventbus.attempt"] == 1
    assert any(event.name == "exception" for event in failed.events)
    for span in handler_spans:
        assert span.parent is not None
        assert span.parent.span_id == emit_span.context.span_id


def test_introspection_endpoint_never_exposes_payloads(
    eventbus_app_factory: Callable[..., Any], orders_app: Path
) -> None:
    app = eventbus_app_factory(orders_app, introspection_path="/_eventbus")
    with TestClient(app) as client:
        client.post("/orders/")
        client.post("/orders/broken")
        report = client.get("/_eventbus").json()
    events = sorted(sub["event"] for sub in report["subscriptions"])
    assert events == ["order.*", "order.audited", "order.placed"]
    assert report["counters"]["emitted"] == 3
    assert report["counters"]["failed"] == 1
    assert report["health"]["healthy"] is True
    assert report["health"]["dead_letters"] == 1
    assert report["in_flight"] == 0
    assert "9" not in str(report["subscriptions"])  # the broken order's payload


def test_endpoints_are_off_by_default(
    eventbus_app_factory: Callable[..., Any], orders_app: Path
) -> None:
    app = eventbus_app_factory(orders_app)
    with TestClient(app) as client:
        assert client.get("/_eventbus").status_code == 404
        assert client.get("/metrics").status_code == 404
        assert eventbus_api().metrics is None


async def test_lost_events_are_logged_with_their_correlation_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from fastapi_opinionated_eventbus._core.correlation import request_correlation_id

    never = asyncio.Event()

    async def stuck(n: int) -> None:
        await never.wait()

    bus = EventBus(shutdown_timeout=0.05)
    await bus.start()
    bus.subscribe("slow.job", stuck)
    token = request_correlation_id.set("req-lost-1")
    try:
        envelope = bus.emit_nowait("slow.job", 1)
    finally:
        request_correlation_id.reset(token)
    await asyncio.sleep(0)  # let the drainer start it
    assert await bus.aclose() == 1
    text = strip_ansi(caplog.text)
    assert f"'slow.job' (id={envelope.id}, correlation=req-lost-1)" in text
