"""In-memory counters: what the introspection endpoint and the event catalog's page show.

:class:`CountingCollector` is a :class:`~fastapi_opinionated_eventbus.metrics.MetricsCollector`:
through the protocol it counts totals, emitted and lost events per event name, and outcomes
per handler. The bus's own counters (``introspection_path`` set) are also told about each
handler run with its event (``run_started``, ``run_attempted``, ``run_stopped``), which adds
outcomes per event name, runs in flight, and the most recent failures.

Cardinality is bounded, like the Prometheus labels: handlers are keyed by the subscription
(a pattern handler by its pattern) and the handler, event names by the name; past
``max_event_names`` names (or ``max_handlers`` handlers) the rest share one ``(other)``
row. The recent failures are a ring of ``recent_failures`` entries holding the event's
name, id and correlation id, the handler and the exception's type: never the exception's
message (it often quotes the payload), never a traceback.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from .._core.envelope import EventEnvelope
    from .._core.registry import Subscription

__all__ = ["OVERFLOW", "CountingCollector", "RecentFailure"]

OVERFLOW = "(other)"
"""The row that counts event names (or handlers) beyond the limits."""

_TOTALS = ("emitted", "handled", "failed", "retried", "dead_lettered", "lost")


@dataclass(slots=True)
class _Counts:
    emitted: int = 0
    handled: int = 0
    failed: int = 0
    retried: int = 0
    dead_lettered: int = 0
    lost: int = 0
    in_flight: int = 0


@dataclass(frozen=True, slots=True)
class RecentFailure:
    """One failed handler attempt, as the catalog page lists it: no message, no traceback."""

    at: float
    """When it failed (seconds since the epoch)."""
    event: str
    event_id: str
    correlation_id: str
    subscription: str
    handler: str
    exception_type: str
    """The exception class's qualified name, as dead letters give it."""
    attempt: int
    final: bool
    """True: the last attempt (a dead letter); False: the handler will be retried."""


@dataclass(slots=True)
class _Table:
    """Rows by key, at most ``limit`` of them; later keys share the overflow row."""

    limit: int
    overflow: Any
    rows: dict[Any, _Counts] = field(default_factory=dict)

    def row(self, key: Any) -> _Counts:
        row = self.rows.get(key)
        if row is None:
            if len(self.rows) >= self.limit:
                key = self.overflow
                row = self.rows.get(key)
            if row is None:
                row = self.rows[key] = _Counts()
        return row


class CountingCollector:
    """Plain in-memory counters (see the module docstring)."""

    def __init__(
        self, *, max_event_names: int = 500, max_handlers: int = 500, recent_failures: int = 50
    ) -> None:
        self._lock = threading.Lock()  # emit_nowait reports from threads
        self.counts: Counter[str] = Counter()
        self.failures_by_handler: Counter[str] = Counter()
        self._events = _Table(max_event_names, OVERFLOW)
        self._handlers = _Table(max_handlers, (OVERFLOW, OVERFLOW))
        self._recent: deque[RecentFailure] = deque(maxlen=recent_failures)
        self._in_flight = 0

    # ------------------------------------------------------------------ MetricsCollector
    def emitted(self, event: str) -> None:
        with self._lock:
            self.counts["emitted"] += 1
            self._events.row(event).emitted += 1

    def handled(self, subscription: str, handler: str, seconds: float) -> None:
        with self._lock:
            self.counts["handled"] += 1
            self._handlers.row((subscription, handler)).handled += 1

    def failed(self, subscription: str, handler: str, seconds: float) -> None:
        with self._lock:
            self.counts["failed"] += 1
            self.failures_by_handler[handler] += 1
            self._handlers.row((subscription, handler)).failed += 1

    def retried(self, subscription: str, handler: str) -> None:
        with self._lock:
            self.counts["retried"] += 1
            self._handlers.row((subscription, handler)).retried += 1

    def dead_lettered(self, subscription: str, handler: str) -> None:
        with self._lock:
            self.counts["dead_lettered"] += 1
            self._handlers.row((subscription, handler)).dead_lettered += 1

    def lost(self, event: str) -> None:
        with self._lock:
            self.counts["lost"] += 1
            self._events.row(event).lost += 1

    def watch(self, in_flight: Callable[[], int], redis_pending: Callable[[], int]) -> None:
        pass

    def watch_outbox(
        self, pending_rows: Callable[[], int], oldest_age_seconds: Callable[[], float]
    ) -> None:
        pass

    # ------------------------------------------------------------------ handler runs
    def run_started(self, event: EventEnvelope, sub: Subscription) -> None:
        """A handler starts running for ``event`` (its retries are part of the run)."""
        with self._lock:
            self._in_flight += 1
            self._events.row(event.name).in_flight += 1
            self._handlers.row((sub.event, sub.name)).in_flight += 1

    def run_attempted(
        self, event: EventEnvelope, sub: Subscription, error: BaseException | None, final: bool
    ) -> None:
        """One attempt ended: successfully (``error`` None), or failed, and then retried
        unless ``final``."""
        with self._lock:
            row = self._events.row(event.name)
            if error is None:
                row.handled += 1
                return
            row.failed += 1
            if final:
                row.dead_lettered += 1
            else:
                row.retried += 1
            self._recent.append(
                RecentFailure(
                    at=time.time(),
                    event=event.name,
                    event_id=event.id,
                    correlation_id=event.correlation_id,
                    subscription=sub.event,
                    handler=sub.name,
                    exception_type=type(error).__qualname__,
                    attempt=event.attempt,
                    final=final,
                )
            )

    def run_stopped(self, event: EventEnvelope, sub: Subscription) -> None:
        with self._lock:
            self._in_flight -= 1
            self._events.row(event.name).in_flight -= 1
            self._handlers.row((sub.event, sub.name)).in_flight -= 1

    # ------------------------------------------------------------------ reading
    def snapshot(self) -> dict[str, Any]:
        """Totals, ``events`` by name and ``handlers`` by subscription, as JSON."""
        with self._lock:
            events = {name: asdict(row) for name, row in self._events.rows.items()}
            handlers = [
                {
                    "subscription": subscription,
                    "handler": handler,
                    **{k: v for k, v in asdict(row).items() if k not in ("emitted", "lost")},
                }
                for (subscription, handler), row in self._handlers.rows.items()
            ]
            return {
                **{key: self.counts[key] for key in _TOTALS},
                "in_flight": self._in_flight,
                "failures_by_handler": dict(self.failures_by_handler),
                "events": events,
                "handlers": handlers,
                "limits": {
                    "event_names": self._events.limit,
                    "handlers": self._handlers.limit,
                    "overflow": OVERFLOW,
                },
            }

    def recent_failures(self) -> list[dict[str, Any]]:
        """The most recent failed attempts, newest first."""
        with self._lock:
            return [asdict(failure) for failure in reversed(self._recent)]
