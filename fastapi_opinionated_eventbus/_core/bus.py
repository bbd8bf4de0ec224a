"""The event bus: subscribe handlers, emit events (awaited, background, after response).

The bus prepares each event (name, payload, envelope) and hands it to its one backend,
whatever kind that is; the backend runs the handlers here or carries the event to the
process that will (see :mod:`fastapi_opinionated_eventbus.backends`). Its parts, one job
each: :mod:`.emitting`, :mod:`.subscribing`, :mod:`.inspecting`; this module builds the bus
and runs its lifecycle (start, shutdown, close).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi_opinionated.shared.logger import ns_logger

from ..backends.factory import create_backend
from ..metrics import CountingCollector, FanOutCollector, MetricsCollector, build_collector
from .background import BackgroundQueue
from .dispatch import Dispatcher
from .envelope import EventEnvelope
from .lifecycle import Lifecycle
from .port import BusPort
from .registry import Registry
from .retry import RetryPolicy
from .settings import BusSettings, load_settings
from .subscribing import Subscribing

if TYPE_CHECKING:
    from .._observability.tracing import EventTracer
    from ..backends.base import Backend
    from ..forwarding._routes import Forwarding

__all__ = ["EventBus"]

logger = ns_logger("EventBus")

# What the backend's stop() gets when shutdown's time is up: enough to send the
# acknowledgements of what was handled.
_STOP_FLOOR_SECONDS = 1.0


class EventBus(Subscribing):
    """An event bus bound to one backend (``local`` by default: handlers run here).

    ``await emit()`` hands the event to the backend and waits: locally, for the handlers;
    with a broker, until it stored the event. ``emit_nowait()`` and
    ``emit_after_response()`` hand events over in the background, tracked, bounded by
    ``max_pending`` and drained on shutdown. Handlers' failures are isolated and logged.
    """

    def __init__(
        self,
        settings: BusSettings | None = None,
        *,
        app_name: str | None = None,
        dependency_overrides_provider: Any = None,
        **options: Any,
    ) -> None:
        """``dependency_overrides_provider``: an object whose ``dependency_overrides`` the
        handlers' dependencies honour, read on every run (the plugin passes the FastAPI
        app); without one, the bus's own :attr:`dependency_overrides` dict."""
        if settings is not None and options:
            raise TypeError("pass either settings or options, not both")
        self.settings = settings if settings is not None else load_settings(**options)
        self.app_name = app_name
        s = self.settings
        self._strict = s.strict
        self._max_chain_depth = s.max_chain_depth
        self._default_retry: RetryPolicy | None = s.retry
        self._state = Lifecycle.OPEN
        # False when disabled or closed: the one flag the hot path reads.
        self._accepting = not s.disabled
        self._disabled_logged = False
        self._taps: list[Callable[[EventEnvelope], None]] = []
        # Observation: metrics, tracing, taps. Off by default; when all are off, emit reads
        # one flag (_observed) and nothing else.
        # The introspection counters: the metrics option's own CountingCollector, if it is
        # one (its limits are the user's), else one of ours when introspection is on.
        chosen = build_collector(s.metrics, max_event_names=s.metrics_max_event_names)
        if isinstance(chosen, CountingCollector):
            self.counters: CountingCollector | None = chosen
        else:
            self.counters = CountingCollector() if s.introspection_path else None
        collectors = [] if chosen is None else [chosen]
        if self.counters is not None and self.counters is not chosen:
            collectors.append(self.counters)
        self._metrics: MetricsCollector | None = None
        if len(collectors) == 1:
            self._metrics = collectors[0]
        elif collectors:
            self._metrics = FanOutCollector(collectors)
        self._tracer: EventTracer | None = None
        if s.tracing:
            from .._observability.tracing import EventTracer

            self._tracer = EventTracer()
        unwrapped = self._metrics is None and self._tracer is None
        self._registry = Registry(cache_size=s.pattern_cache_size, inline=unwrapped)
        # Read directly on the hot path: the registry clears it in place, never replaces it.
        self._plans = self._registry.cached
        self._dispatcher = Dispatcher(s.thread_pool_size)
        self._dispatcher.observe(self._metrics, self._tracer, self.counters)
        self._overrides_provider = dependency_overrides_provider
        self._own_overrides: dict[Callable[..., Any], Callable[..., Any]] = {}
        self._dispatcher.dependency_overrides = self._current_overrides
        port = BusPort(self._registry, self._dispatcher, app_name=app_name)
        self._backend: Backend = create_backend(s, port)
        self._publish = self._backend.publish
        self._check = self._backend.check
        # With a broker every event leaves the process, handlers here or not.
        self._always_publish = self._backend.distributed
        self._background = BackgroundQueue(
            self._backend.start_publish, s.max_pending, self._on_lost
        )
        if self._metrics is not None:
            backend = self._backend
            self._metrics.watch(lambda: self.pending, lambda: backend.pending_entries)
        self._observed = False
        self._update_observed()
        self._outbox = self._open_outbox() if s.outbox_url is not None else None
        self._forwarding: Forwarding | None = None
        self._forward_configured()

    # ================================================================ background
    async def drain(self, timeout: float | None = None) -> int:
        """Wait until every background event has finished, or ``timeout`` seconds passed.

        Returns how many are still in flight (0 when drained). Cancels nothing.
        """
        return await self._background.wait_idle(timeout)

    # ================================================================ lifecycle
    async def connect(self) -> None:
        """Connect the backend for publishing and inspection only: this process consumes
        nothing (CLI tools, producer-only scripts). Handlers here run only for awaited emits
        of an in-process backend."""
        self._background.bind(asyncio.get_running_loop())
        await self._backend.connect()

    async def start(self) -> None:
        """Bind the bus to the running loop and start the backend (the plugin does this at
        app startup)."""
        self._background.bind(asyncio.get_running_loop())
        await self._backend.start()
        if self._outbox is not None and not self.settings.disabled:
            try:
                await self._outbox.start()
            except BaseException:
                await self._backend.stop(self.settings.shutdown_timeout)
                raise

    async def shutdown(self, timeout: float | None = None) -> int:
        """Refuse new background events (except those handlers still running emit), let
        in-flight work finish for up to ``timeout`` seconds (default: the
        ``shutdown_timeout`` option), then cancel and report what is left.

        Every stage is bounded: it returns within ``timeout`` plus at most a few seconds
        of unwinding, whatever the handlers do. Each background event not handled is
        logged by name and id as lost (it never ran to its end), abandoned (it runs on,
        unobserved: a sync handler in its thread, a handler that ignores cancellation) or
        unconfirmed (it may have reached the broker). Returns the number lost.
        """
        if self._state is Lifecycle.OPEN:
            self._state = Lifecycle.DRAINING
        self._background.state = Lifecycle.DRAINING
        timeout = self.settings.shutdown_timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout

        def remaining() -> float:
            return max(0.0, deadline - loop.time())

        if self._outbox is not None:
            # First: the relay's batches in flight still dispatch into the backend.
            await self._outbox.stop(remaining())
        # Take no new received events, then let the handlers running now finish: they may
        # still emit, and their events are drained below.
        await self._backend.pause()
        if self._forwarding is not None:
            # Batches leave now, not when full: the handlers waiting on them finish below.
            self._forwarding.hurry()
        await self._backend.settle(remaining())
        left = await self.drain(remaining())
        interrupted = await self._background.cancel_all() if left else None
        self._background.state = Lifecycle.CLOSED
        # The backend gets a moment even when the time is up: acknowledging what was
        # handled spares those events a second delivery.
        await self._backend.stop(max(remaining(), _STOP_FLOOR_SECONDS))
        forwarding_lost = 0
        if self._forwarding is not None:
            # Whatever still waits (an awaited emit's event) gets the time left, then is
            # reported lost by name and id.
            forwarding_lost = await self._forwarding.close(remaining())
        if interrupted is None:
            return forwarding_lost
        for what, events, log in (
            ("were cancelled and lost", interrupted.lost, logger.error),
            ("were abandoned, still running", interrupted.abandoned, logger.warning),
            ("may have reached the broker, unconfirmed", interrupted.unconfirmed, logger.warning),
        ):
            if events:
                log(
                    f"Shutdown: {len(events)} background event(s) did not finish within "
                    f"{timeout}s and {what}: "
                    + ", ".join(e.describe() for e in sorted(events, key=_emitted_at))
                )
        return len(interrupted.lost) + forwarding_lost

    def close(self) -> None:
        """Clear every subscription and stop; later emits raise EventBusClosed."""
        self._state = Lifecycle.CLOSED
        self._accepting = False
        self._background.state = Lifecycle.CLOSED
        self._registry.clear()
        self._dispatcher.shutdown()

    def reopen(self) -> None:
        """Accept events again after :meth:`close`: the same app's lifespan may run twice
        (two ``with TestClient(app)`` blocks). Subscriptions start empty."""
        if self._state is not Lifecycle.CLOSED:
            return
        self._state = Lifecycle.OPEN
        self._accepting = not self.settings.disabled
        self._background.state = Lifecycle.OPEN
        self._background.bind(None)  # the next lifespan may run on another loop
        self._forward_configured()

    async def aclose(self, timeout: float | None = None) -> int:
        """:meth:`shutdown` then :meth:`close`; returns the number of events lost."""
        lost = await self.shutdown(timeout)
        self.close()
        return lost

    @property
    def closed(self) -> bool:
        return self._state is Lifecycle.CLOSED


def _emitted_at(envelope: EventEnvelope) -> float:
    return envelope.emitted_at_timestamp
