"""Opt-in HTTP endpoints: Prometheus metrics and a read-only JSON view of the bus."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from .._core.errors import ConfigurationError
from ..metrics import FanOutCollector, PrometheusCollector

if TYPE_CHECKING:
    from .._core.bus import EventBus

__all__ = ["describe_bus", "mount_endpoints"]


def _prometheus_of(bus: EventBus) -> PrometheusCollector | None:
    metrics = bus.metrics
    candidates = metrics.collectors if isinstance(metrics, FanOutCollector) else (metrics,)
    for collector in candidates:
        if isinstance(collector, PrometheusCollector):
            return collector
    return None


async def describe_bus(bus: EventBus) -> dict[str, Any]:
    """Subscriptions, counters, in-flight and dead-letter counts, health. No payloads."""
    return {
        "subscriptions": [
            {
                "event": sub.event,
                "handler": sub.name,
                "async": sub.is_async,
                "priority": sub.priority,
                "retry": None if sub.retry is None else sub.retry.max_attempts,
                "timeout": sub.timeout,
                "broadcast": sub.broadcast,
            }
            for sub in bus.subscriptions()
        ],
        "counters": bus.counters.snapshot() if bus.counters is not None else None,
        "recent_failures": bus.counters.recent_failures() if bus.counters is not None else [],
        "in_flight": bus.pending,
        "lost_events": bus.lost_events,
        "health": await bus.health(),
    }


def mount_endpoints(app: FastAPI, bus: EventBus) -> None:
    settings = bus.settings
    if settings.metrics_path:
        prometheus = _prometheus_of(bus)
        if prometheus is None:
            raise ConfigurationError(
                "option 'metrics_path' needs Prometheus metrics: add metrics='prometheus' "
                "(or a PrometheusCollector instance)"
            )

        async def metrics_endpoint() -> Response:
            body, content_type = prometheus.exposition()
            return Response(body, media_type=content_type)

        app.add_api_route(
            settings.metrics_path, metrics_endpoint, methods=["GET"], include_in_schema=False
        )
    if settings.introspection_path:

        async def introspection_endpoint() -> JSONResponse:
            return JSONResponse(await describe_bus(bus))

        app.add_api_route(
            settings.introspection_path,
            introspection_endpoint,
            methods=["GET"],
            include_in_schema=False,
        )
