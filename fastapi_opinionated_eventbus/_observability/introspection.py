"""Opt-in HTTP endpoints: Prometheus metrics, a read-only JSON view of the bus with the
event catalog and its page, and the AsyncAPI document."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from .._core.errors import ConfigurationError
from ..metrics import FanOutCollector, PrometheusCollector
from .asyncapi import asyncapi_document, dump_document
from .catalog import AppCatalog, Catalog
from .ui import catalog_json, mount_page

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
    """The endpoints the options ask for, each behind the ``dependencies`` option."""
    settings = bus.settings
    dependencies = list(settings.dependencies or ())

    def route(path: str, endpoint: Callable[[], Awaitable[Response]], name: str) -> None:
        app.add_api_route(
            path,
            endpoint,
            methods=["GET"],
            include_in_schema=False,
            dependencies=dependencies,
            name=f"eventbus_{name}",
        )

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

        route(settings.metrics_path, metrics_endpoint, "metrics")
    if not (settings.introspection_path or settings.asyncapi_path):
        return
    # The core reads app/domains relative to the current directory: it is the app root.
    catalog = AppCatalog(bus, app, Path.cwd())
    if settings.introspection_path:

        async def introspection_endpoint() -> Response:
            report = await describe_bus(bus)
            report["app"] = {"title": app.title, "version": app.version}
            report["catalog"] = await catalog.rendered("page", catalog_json)
            report["introspection_path"] = settings.introspection_path
            report["asyncapi_path"] = settings.asyncapi_path
            return JSONResponse(report, headers={"Cache-Control": "no-store"})

        route(settings.introspection_path, introspection_endpoint, "introspection")
        mount_page(route, settings.introspection_path)
    if settings.asyncapi_path:
        as_yaml = settings.asyncapi_path.endswith((".yaml", ".yml"))

        def render(current: Catalog) -> str:
            return dump_document(asyncapi_document(current), as_yaml=as_yaml)

        async def asyncapi_endpoint() -> Response:
            text = await catalog.rendered("asyncapi", render)
            media_type = "application/yaml" if as_yaml else "application/json"
            return Response(text, media_type=media_type)

        route(settings.asyncapi_path, asyncapi_endpoint, "asyncapi")
