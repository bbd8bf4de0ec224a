"""Trace context and correlation ids cross the Redis backend with the event."""

from __future__ import annotations

import asyncio

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from redis_support import Make, eventually

from fastapi_opinionated_eventbus import current_event
from fastapi_opinionated_eventbus._core.correlation import request_correlation_id


async def test_consumer_spans_join_the_emitters_trace_and_keep_its_correlation_id(
    make_bus: Make, spans: InMemorySpanExporter
) -> None:
    seen: list[tuple[str, str]] = []
    done = asyncio.Event()

    async def handler(n: int) -> None:
        seen.append((current_event().id, current_event().correlation_id))
        done.set()

    consumer = make_bus(tracing=True, redis_consumer="consumer")
    consumer.subscribe("traced.remote", handler)
    await consumer.start()
    emitter = make_bus(tracing=True, redis_consumer="emitter")  # no handlers: publishes only
    await emitter.start()

    token = request_correlation_id.set("req-77")  # as the middleware does for a request
    try:
        with trace.get_tracer("test").start_as_current_span("request") as request_span:
            result = await emitter.emit("traced.remote", 1)
    finally:
        request_correlation_id.reset(token)
    await asyncio.wait_for(done.wait(), 20)

    def finished(name: str) -> list[ReadableSpan]:
        return [s for s in spans.get_finished_spans() if s.name == name]

    async def handler_span_finished() -> list[ReadableSpan] | None:
        return finished("eventbus handle traced.remote") or None

    [handle] = await eventually(handler_span_finished, timeout=10, what="the handler span")
    [emit] = finished("eventbus emit traced.remote")
    assert seen == [(result.event_id, "req-77")]
    request = request_span.get_span_context()
    assert emit.context.trace_id == request.trace_id
    assert emit.kind == SpanKind.PRODUCER
    assert handle.context.trace_id == request.trace_id
    assert handle.parent.span_id == emit.context.span_id
    assert handle.kind == SpanKind.CONSUMER
