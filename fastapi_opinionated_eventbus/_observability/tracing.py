"""OpenTelemetry spans (``pip install fastapi-opinionated-eventbus[otel]``, ``tracing=True``).

One span per emit and one per handler run, parented to whatever span is current (e.g.
the request's). The trace context travels in the envelope, so with the Redis backend a
consumer's spans join the emitter's trace. Nothing here is imported unless tracing is on.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .._core.envelope import EventEnvelope
    from .._core.registry import Subscription

__all__ = ["EventTracer"]


class EventTracer:
    def __init__(self) -> None:
        try:
            from opentelemetry import context, propagate, trace
        except ImportError as exc:
            raise ImportError(
                "tracing=True needs OpenTelemetry: pip install 'fastapi-opinionated-eventbus[otel]'"
            ) from exc
        from .. import __version__

        self._trace, self._propagate, self._context = trace, propagate, context
        self._tracer = trace.get_tracer("fastapi_opinionated_eventbus", __version__)

    @contextmanager
    def emit_span(self, envelope: EventEnvelope, *, remote: bool) -> Iterator[Any]:
        kind = self._trace.SpanKind.PRODUCER if remote else self._trace.SpanKind.INTERNAL
        with self._tracer.start_as_current_span(
            f"eventbus emit {envelope.name}",
            kind=kind,
            attributes={"eventbus.event": envelope.name, "eventbus.event_id": envelope.id},
        ) as span:
            yield span

    def carrier(self) -> dict[str, str]:
        """The current trace context as headers, for an envelope crossing processes."""
        carrier: dict[str, str] = {}
        self._propagate.inject(carrier)
        return carrier

    @contextmanager
    def handler_span(self, sub: Subscription, envelope: EventEnvelope) -> Iterator[Any]:
        token = None
        if envelope.trace_context:
            # A remote event: continue the emitter's trace.
            token = self._context.attach(self._propagate.extract(envelope.trace_context))
        try:
            with self._tracer.start_as_current_span(
                f"eventbus handle {envelope.name}",
                kind=self._trace.SpanKind.CONSUMER if token else self._trace.SpanKind.INTERNAL,
                attributes={
                    "eventbus.event": envelope.name,
                    "eventbus.event_id": envelope.id,
                    "eventbus.subscription": sub.event,
                    "eventbus.handler": sub.name,
                    "eventbus.attempt": envelope.attempt,
                },
            ) as span:
                yield span
        finally:
            if token is not None:
                self._context.detach(token)

    def outcome(self, span: Any, error: BaseException | None) -> None:
        span.set_attribute("eventbus.outcome", "error" if error else "ok")
        if error is not None:
            span.record_exception(error)
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, str(error)))
