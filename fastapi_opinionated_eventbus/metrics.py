"""Metrics: a small collector protocol, in-memory counters, and Prometheus.

The bus calls a collector only when one is configured: with none, emit pays nothing.
Handler-level series are labelled by the *subscription* (its name or pattern) and the
handler, so a pattern handler seeing unbounded event names keeps bounded cardinality.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from ._observability.counters import OVERFLOW, CountingCollector

__all__ = [
    "OTHER_EVENTS",
    "CountingCollector",
    "FanOutCollector",
    "MetricsCollector",
    "PrometheusCollector",
]

OTHER_EVENTS = OVERFLOW
"""The ``event`` label of every name beyond ``max_event_names``: ``(other)``, as the
introspection counters name theirs."""


@runtime_checkable
class MetricsCollector(Protocol):
    """What the bus reports. Implement it to feed StatsD, Datadog, ...

    ``event`` is the emitted name; ``subscription`` the subscribed name or pattern.
    """

    def emitted(self, event: str) -> None: ...

    def handled(self, subscription: str, handler: str, seconds: float) -> None: ...

    def failed(self, subscription: str, handler: str, seconds: float) -> None: ...

    def retried(self, subscription: str, handler: str) -> None: ...

    def dead_lettered(self, subscription: str, handler: str) -> None: ...

    def lost(self, event: str) -> None: ...

    def watch(self, in_flight: Callable[[], int], redis_pending: Callable[[], int]) -> None:
        """Called once: gauges read these when scraped (no cost per event)."""

    # Optional (not part of the protocol, so collectors written before it still work):
    # ``watch_outbox(pending_rows, oldest_age_seconds)``, called once when the
    # transactional outbox is on, with two callables read when scraped.


class FanOutCollector:
    """Reports to several collectors (e.g. Prometheus and the introspection counters)."""

    def __init__(self, collectors: Sequence[MetricsCollector]) -> None:
        self.collectors = tuple(collectors)

    def emitted(self, event: str) -> None:
        for collector in self.collectors:
            collector.emitted(event)

    def handled(self, subscription: str, handler: str, seconds: float) -> None:
        for collector in self.collectors:
            collector.handled(subscription, handler, seconds)

    def failed(self, subscription: str, handler: str, seconds: float) -> None:
        for collector in self.collectors:
            collector.failed(subscription, handler, seconds)

    def retried(self, subscription: str, handler: str) -> None:
        for collector in self.collectors:
            collector.retried(subscription, handler)

    def dead_lettered(self, subscription: str, handler: str) -> None:
        for collector in self.collectors:
            collector.dead_lettered(subscription, handler)

    def lost(self, event: str) -> None:
        for collector in self.collectors:
            collector.lost(event)

    def watch(self, in_flight: Callable[[], int], redis_pending: Callable[[], int]) -> None:
        for collector in self.collectors:
            collector.watch(in_flight, redis_pending)

    def watch_outbox(
        self, pending_rows: Callable[[], int], oldest_age_seconds: Callable[[], float]
    ) -> None:
        for collector in self.collectors:
            watch = getattr(collector, "watch_outbox", None)
            if watch is not None:
                watch(pending_rows, oldest_age_seconds)


class PrometheusCollector:
    """Prometheus series (``pip install fastapi-opinionated-eventbus[prometheus]``).

    Uses its own ``CollectorRegistry`` by default, so several apps in one process (tests)
    never clash; pass ``registry=prometheus_client.REGISTRY`` to share the global one.
    """

    def __init__(
        self, registry: Any = None, namespace: str = "eventbus", *, max_event_names: int = 500
    ) -> None:
        if max_event_names < 1:
            raise ValueError(f"max_event_names must be >= 1, got {max_event_names!r}")
        self._max_event_names = max_event_names
        try:
            import prometheus_client as prom
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "metrics='prometheus' needs prometheus_client: "
                "pip install 'fastapi-opinionated-eventbus[prometheus]'"
            ) from exc
        self.registry = registry if registry is not None else prom.CollectorRegistry()
        ns, reg = namespace, self.registry
        handler_labels = ("subscription", "handler")
        self._emitted = prom.Counter(
            "events_emitted", "Events emitted", ("event",), namespace=ns, registry=reg
        )
        self._handled = prom.Counter(
            "events_handled",
            "Handler runs that succeeded",
            handler_labels,
            namespace=ns,
            registry=reg,
        )
        self._failed = prom.Counter(
            "events_failed",
            "Handler runs that failed (each attempt)",
            handler_labels,
            namespace=ns,
            registry=reg,
        )
        self._retried = prom.Counter(
            "events_retried", "Handler retries", handler_labels, namespace=ns, registry=reg
        )
        self._dead = prom.Counter(
            "events_dead_lettered",
            "Handler failures after the last attempt",
            handler_labels,
            namespace=ns,
            registry=reg,
        )
        self._lost = prom.Counter(
            "events_lost",
            "Background events lost at shutdown",
            ("event",),
            namespace=ns,
            registry=reg,
        )
        self._duration = prom.Histogram(
            "handler_duration_seconds",
            "Handler run time",
            handler_labels,
            namespace=ns,
            registry=reg,
        )
        self._in_flight = prom.Gauge(
            "background_in_flight", "Background events in flight", namespace=ns, registry=reg
        )
        self._emitted_by: dict[str, Any] = {}
        self._lost_by: dict[str, Any] = {}
        self._by_handler: dict[tuple[str, str], tuple[Any, Any, Any]] = {}
        self._redis_pending = prom.Gauge(
            "redis_pending_entries",
            "Entries delivered but not acknowledged (Redis backend)",
            namespace=ns,
            registry=reg,
        )
        self._namespace = namespace
        self._outbox_gauges: tuple[Any, Any] | None = None

    # labels() takes a lock and builds a key on every call: the labelled children are looked
    # up once and kept. Handler series are bounded by the subscriptions; event-labelled ones
    # by max_event_names (the first names seen get a series each, later ones share one).
    def emitted(self, event: str) -> None:
        child = self._emitted_by.get(event)
        if child is None:
            child = self._event_series(self._emitted, self._emitted_by, event)
        child.inc()

    def _event_series(self, counter: Any, series: dict[str, Any], event: str) -> Any:
        if len(series) < self._max_event_names:
            child = series[event] = counter.labels(event)
            return child
        # An app emitting unbounded distinct names (ids in names...) keeps bounded series.
        other = series.get(OTHER_EVENTS)
        if other is None:
            other = series[OTHER_EVENTS] = counter.labels(OTHER_EVENTS)
        return other

    def _handler_series(self, subscription: str, handler: str) -> tuple[Any, Any, Any]:
        key = (subscription, handler)
        series = self._by_handler.get(key)
        if series is None:
            series = self._by_handler[key] = (
                self._handled.labels(subscription, handler),
                self._failed.labels(subscription, handler),
                self._duration.labels(subscription, handler),
            )
        return series

    def handled(self, subscription: str, handler: str, seconds: float) -> None:
        handled, _, duration = self._handler_series(subscription, handler)
        handled.inc()
        duration.observe(seconds)

    def failed(self, subscription: str, handler: str, seconds: float) -> None:
        _, failed, duration = self._handler_series(subscription, handler)
        failed.inc()
        duration.observe(seconds)

    def retried(self, subscription: str, handler: str) -> None:
        self._retried.labels(subscription, handler).inc()

    def dead_lettered(self, subscription: str, handler: str) -> None:
        self._dead.labels(subscription, handler).inc()

    def lost(self, event: str) -> None:
        child = self._lost_by.get(event)
        if child is None:
            child = self._event_series(self._lost, self._lost_by, event)
        child.inc()

    def watch(self, in_flight: Callable[[], int], redis_pending: Callable[[], int]) -> None:
        self._in_flight.set_function(in_flight)
        self._redis_pending.set_function(redis_pending)

    def watch_outbox(
        self, pending_rows: Callable[[], int], oldest_age_seconds: Callable[[], float]
    ) -> None:
        """Outbox gauges, registered only when the outbox is on (label-free)."""
        if self._outbox_gauges is None:
            self._outbox_gauges = self._make_outbox_gauges()
        pending, oldest = self._outbox_gauges
        pending.set_function(pending_rows)
        oldest.set_function(oldest_age_seconds)

    def _make_outbox_gauges(self) -> tuple[Any, Any]:
        import prometheus_client as prom

        ns, reg = self._namespace, self.registry
        pending = prom.Gauge(
            "outbox_pending_rows",
            "Outbox rows committed and not yet dispatched (refreshed every poll interval)",
            namespace=ns,
            registry=reg,
        )
        oldest = prom.Gauge(
            "outbox_oldest_age_seconds",
            "How long the oldest undispatched outbox row has waited (0 when none)",
            namespace=ns,
            registry=reg,
        )
        return pending, oldest

    def exposition(self) -> tuple[bytes, str]:
        """The text format and its content type, for the metrics endpoint."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def build_collector(option: Any, *, max_event_names: int = 500) -> MetricsCollector | None:
    """The ``metrics`` plugin option: None, "prometheus", or a collector instance."""
    if option is None:
        return None
    if option == "prometheus":
        return PrometheusCollector(max_event_names=max_event_names)
    if isinstance(option, MetricsCollector):
        return option
    from ._core.errors import ConfigurationError

    raise ConfigurationError(
        f"option 'metrics' must be None, 'prometheus' or a MetricsCollector, got {option!r}"
    )
