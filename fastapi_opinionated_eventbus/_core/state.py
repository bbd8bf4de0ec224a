"""The state the parts of the event bus share (:class:`~.bus.EventBus` sets it all in its
``__init__``; the parts are mixins, one job each: emitting, subscribing, inspecting)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .._observability.counters import CountingCollector
    from .._observability.tracing import EventTracer
    from ..backends.base import Backend
    from ..forwarding._routes import Forwarding
    from ..metrics import MetricsCollector
    from ..outbox._service import OutboxService
    from .background import BackgroundQueue
    from .dispatch import Dispatcher
    from .envelope import EventEnvelope
    from .lifecycle import Lifecycle
    from .registry import Plan, Registry
    from .results import EmitResult
    from .retry import RetryPolicy
    from .settings import BusSettings

__all__ = ["BusState"]


class BusState:
    settings: BusSettings
    app_name: str | None
    counters: CountingCollector | None
    _strict: bool
    _max_chain_depth: int
    _default_retry: RetryPolicy | None
    _state: Lifecycle
    _accepting: bool
    """False when disabled or closed: the one flag the hot path reads."""
    _disabled_logged: bool
    _taps: list[Callable[[EventEnvelope], None]]
    _metrics: MetricsCollector | None
    _tracer: EventTracer | None
    _observed: bool
    """Taps, metrics or tracing on: emits take the general path."""
    _registry: Registry
    _plans: dict[str, Plan]
    """The registry's plan cache, read directly on the hot path."""
    _dispatcher: Dispatcher
    _overrides_provider: Any
    _own_overrides: dict[Callable[..., Any], Callable[..., Any]]
    _backend: Backend
    _publish: Callable[[EventEnvelope, Plan], Coroutine[Any, Any, EmitResult]]
    _check: Callable[[EventEnvelope], None]
    _always_publish: bool
    """The backend is distributed: every event is published, handlers here or not."""
    _background: BackgroundQueue
    _outbox: OutboxService | None
    _forwarding: Forwarding | None
