"""The event bus: subscribe handlers, emit events (awaited, background, after response).

The bus prepares each event (name, payload, envelope) and hands it to its one backend,
whatever kind that is; the backend runs the handlers here or carries the event to the
process that will (see :mod:`fastapi_opinionated_eventbus.backends`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable, Iterator
from contextlib import contextmanager
from contextvars import copy_context
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Unpack, overload

from fastapi_opinionated.shared.logger import ns_logger
from pydantic import BaseModel

from ..backends.factory import create_backend
from ..metrics import CountingCollector, FanOutCollector, MetricsCollector, build_collector
from .after_response import ResponseQueue, response_queue
from .background import BackgroundQueue
from .correlation import request_correlation_id
from .dispatch import Dispatcher
from .envelope import EventEnvelope, current_var, new_envelope
from .errors import ChainDepthExceeded, ConfigurationError, EventBusClosed, EventBusOverloaded
from .lifecycle import Lifecycle
from .port import BusPort
from .registry import Plan, Registry, Subscription, build_subscription, check_event_name
from .results import EmitResult, HandlerFailure
from .retry import RetryPolicy
from .settings import BusSettings, load_settings
from .typed import event_name_of, validate_payload

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Session

    from .._observability.tracing import EventTracer
    from ..backends.base import Backend
    from ..forwarding import Forward, Forwarder, ForwardOptions
    from ..forwarding._routes import Forwarding
    from ..outbox import AsyncOutbox, Outbox
    from ..outbox._service import OutboxService
    from .dead_letters import DeadLetter

__all__ = ["EventBus"]

logger = ns_logger("EventBus")

# What the backend's stop() gets when shutdown's time is up: enough to send the
# acknowledgements of what was handled.
_STOP_FLOOR_SECONDS = 1.0


class EventBus:
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
        port = BusPort(self._registry, self._dispatcher, app_name=app_name, taps=self._taps)
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

    # ================================================================ subscriptions
    def subscribe(
        self,
        event: str | type[BaseModel],
        handler: Callable[..., Any],
        *,
        priority: int = 0,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        broadcast: bool = False,
    ) -> Subscription:
        """Subscribe ``handler`` to an event name, a shell-style pattern or a typed event."""
        sub, schema = build_subscription(
            event, handler, priority=priority, retry=retry, timeout=timeout, broadcast=broadcast
        )
        self.add(sub, schema)
        return sub

    def add(self, sub: Subscription, schema: type[BaseModel] | None = None) -> None:
        """Subscribe a prepared :class:`Subscription` (what ``@OnInternalEvent`` built),
        registering ``schema`` for its name."""
        if self._state is Lifecycle.CLOSED:
            raise EventBusClosed(f"cannot subscribe {sub.name} to {sub.event!r}: the bus is closed")
        if sub.retry is None and self._default_retry is not None:
            sub = replace(sub, retry=self._default_retry)
        if schema is not None:
            self.register_schema(sub.event, schema)
        self._registry.add(sub)

    def unsubscribe(self, event: str | type[BaseModel], handler: Callable[..., Any]) -> bool:
        """Remove ``handler`` from ``event``; returns False when it was not subscribed."""
        if isinstance(event, type) and issubclass(event, BaseModel):
            event = event_name_of(event)
        return self._registry.remove(check_event_name(event), handler)

    def register_schema(self, event: str, model: type[BaseModel]) -> None:
        """Validate dict payloads of ``event`` into ``model`` at emit; handlers get the model."""
        check_event_name(event)
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise TypeError(f"a schema must be a pydantic BaseModel subclass, got {model!r}")
        existing = self._registry.schema_for(event)
        if existing is not None and existing is not model:
            raise ValueError(
                f"event {event!r} already has the schema {existing.__qualname__}; "
                f"cannot register {model.__qualname__} too"
            )
        self._registry.set_schema(event, model)

    def subscriptions(self) -> list[Subscription]:
        return self._registry.subscriptions()

    @property
    def dependency_overrides(self) -> dict[Callable[..., Any], Callable[..., Any]]:
        """Replacements for the handlers' dependencies, as FastAPI's
        ``app.dependency_overrides``: with the plugin it IS the app's dict, so one override
        serves routes and handlers; a standalone bus has a dict of its own."""
        provider = self._overrides_provider
        if provider is None:
            return self._own_overrides
        overrides: dict[Callable[..., Any], Callable[..., Any]] = provider.dependency_overrides
        return overrides

    def _current_overrides(self) -> dict[Callable[..., Any], Callable[..., Any]] | None:
        return self.dependency_overrides

    def schemas(self) -> dict[str, type[BaseModel]]:
        """The typed-event schema of each event name that has one."""
        return self._registry.schemas()

    # ================================================================ forwarding
    def forward(
        self,
        event: str | type[BaseModel],
        forwarder: Forwarder,
        **options: Unpack[ForwardOptions],
    ) -> Subscription:
        """Forward the events ``event`` (a name, pattern or typed event) matches to another
        service through ``forwarder`` (see :mod:`fastapi_opinionated_eventbus.forwarding`):
        a subscription whose handler returns once the forwarder accepted the event's batch.
        """
        from ..forwarding import Forward

        return self.add_forward(Forward(event, forwarder, **options))

    def add_forward(self, spec: Forward) -> Subscription:
        """Subscribe a prepared :class:`~fastapi_opinionated_eventbus.forwarding.Forward`."""
        from ..forwarding._routes import Forwarding, build_subscription

        sub, schema, _ = build_subscription(spec, self._default_retry)
        self.add(sub, schema)
        if self._forwarding is None:
            self._forwarding = Forwarding(self._on_lost)
        self._forwarding.keep(sub)
        return sub

    def unforward(self, event: str | type[BaseModel], forwarder: Forwarder) -> bool:
        """Stop forwarding ``event`` through ``forwarder``; False when it was not. Events
        already waiting in a batch are still sent."""
        if isinstance(event, type) and issubclass(event, BaseModel):
            event = event_name_of(event)
        subs = self._forwarding.subscriptions_of(forwarder) if self._forwarding else []
        removed = [self._registry.remove(s.event, s.handler) for s in subs if s.event == event]
        return any(removed)

    def _forward_configured(self) -> None:
        for spec in self.settings.forward:
            self.add_forward(spec)

    # ================================================================ emitting
    def emit(
        self, event: str | BaseModel, /, *args: Any, strict: bool | None = None, **kwargs: Any
    ) -> Coroutine[Any, Any, EmitResult]:
        """Hand ``event`` to the backend and wait: for its handlers to finish (local), or
        until the broker stored it (``result.published``). Use it as ``await emit(...)``.

        Async handlers run on the loop and sync ones in worker threads, concurrently within
        one priority. Failures are logged and returned, not raised, unless ``strict``.
        (``strict`` is therefore a reserved keyword: handlers cannot receive it.) A bad
        name or payload raises at once, before anything runs.
        """
        # A plain function returning the backend's coroutine: the awaited emit costs one
        # coroutine of ours, not two. _prepare() is inlined: calling it costs ~1,000
        # instructions per emit, +5% (callgrind, step 6c).
        if type(event) is not str or not event:
            event, args, kwargs = _normalize(event, args, kwargs)
        if not self._accepting:
            self._refuse(event)
            return _no_result()
        plan = self._plans.get(event) or self._registry.plan(event)
        if plan.schema is not None:
            args, kwargs = validate_payload(plan.schema, event, args, kwargs), {}
        parent = current_var.get()
        if parent is None:
            envelope = new_envelope(event, args, kwargs, request_correlation_id.get())
        else:
            envelope = self._child(parent, event, args, kwargs)
        if self._observed:
            return self._emit_observed(envelope, plan, strict)
        if strict or (strict is None and self._strict):
            return self._emit_strictly(self._publish(envelope, plan))
        return self._publish(envelope, plan)

    async def _emit_observed(
        self, envelope: EventEnvelope, plan: Plan, strict: bool | None
    ) -> EmitResult:
        """emit() with taps, metrics or tracing: the slower, general path."""
        self._observe_emitted(envelope)
        if self._tracer is None:
            result = await self._publish(envelope, plan)
        else:
            with self._tracer.emit_span(envelope, remote=self._always_publish):
                result = await self._publish(self._traced(envelope), plan)
        if result.failures and (strict or (strict is None and self._strict)):
            raise _failures_group(envelope.name, result.failures)
        return result

    @staticmethod
    async def _emit_strictly(publishing: Coroutine[Any, Any, EmitResult]) -> EmitResult:
        result = await publishing
        if result.failures:
            assert result.event is not None
            raise _failures_group(result.event.name, result.failures)
        return result

    async def emit_many(
        self, events: Iterable[BaseModel | tuple[Any, ...]], *, strict: bool | None = None
    ) -> list[EmitResult]:
        """Hand several events to the backend at once, in order: one round trip to a broker
        (one batch and one flush, one pipeline); locally, one after another.

        Each item is a typed event instance or a tuple ``(name, *args)``. Every item is
        validated before anything is sent; an error names the item by its index.
        """
        items = list(events)
        if not self._accepting:
            self._refuse(f"a batch of {len(items)} events")
            return [EmitResult(None, 0) for _ in items]
        batch: list[tuple[EventEnvelope, Plan]] = []
        for index, item in enumerate(items):
            try:
                if isinstance(item, BaseModel):
                    prepared = self._prepare(item, (), {})
                elif isinstance(item, tuple) and item:
                    prepared = self._prepare(item[0], item[1:], {})
                else:
                    raise TypeError(
                        "each event is a typed event instance or a tuple (name, *args), "
                        f"got {type(item).__name__}: {item!r}"
                    )
            except Exception as exc:
                exc.add_note(f"emit_many(): event {index} of the batch")
                raise
            assert prepared is not None  # the bus accepts events (checked above)
            envelope, plan, _ = prepared
            if self._observed:
                envelope = self._observe_batched(envelope)
            batch.append((envelope, plan))
        results = await self._backend.publish_many(batch) if batch else []
        failures = tuple(f for result in results for f in result.failures)
        if failures and (self._strict if strict is None else strict):
            raise _failures_group(f"{len(batch)} events", failures)
        return results

    def _observe_batched(self, envelope: EventEnvelope) -> EventEnvelope:
        self._observe_emitted(envelope)
        if self._tracer is None:
            return envelope
        with self._tracer.emit_span(envelope, remote=self._always_publish):
            return self._traced(envelope)

    def _prepare(
        self, event: str | BaseModel, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[EventEnvelope, Plan, bool] | None:
        """The envelope and plan of an emit (and whether a handler emits it), validated now,
        in the caller's hands; None when the bus is disabled (emits are no-ops)."""
        if type(event) is not str or not event:
            event, args, kwargs = _normalize(event, args, kwargs)
        if not self._accepting:
            self._refuse(event)
            return None
        plan = self._plans.get(event) or self._registry.plan(event)
        if plan.schema is not None:
            args, kwargs = validate_payload(plan.schema, event, args, kwargs), {}
        parent = current_var.get()
        if parent is None:
            return new_envelope(event, args, kwargs, request_correlation_id.get()), plan, False
        return self._child(parent, event, args, kwargs), plan, True

    def _child(
        self, parent: EventEnvelope, event: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> EventEnvelope:
        """The envelope of an event a handler emits: it inherits the correlation id."""
        chain = parent.child_chain()
        if len(chain) >= self._max_chain_depth:
            raise ChainDepthExceeded(
                f"event {event!r} emitted at depth {len(chain) + 1} > max_chain_depth="
                f"{self._max_chain_depth}; a handler cycle? "
                f"Chain: {' -> '.join((*chain, event))}"
            )
        return EventEnvelope(event, args, kwargs, parent.correlation_id, chain=chain)

    def _traced(self, envelope: EventEnvelope) -> EventEnvelope:
        """With a broker, the event carries the emit span's context to its consumer."""
        if self._tracer is None or not self._always_publish:
            return envelope
        return envelope.with_trace(self._tracer.carrier())

    def _observe_emitted(self, envelope: EventEnvelope) -> None:
        for callback in self._taps:
            callback(envelope)
        if self._metrics is not None:
            self._metrics.emitted(envelope.name)

    def emit_nowait(self, event: str | BaseModel, /, *args: Any, **kwargs: Any) -> EventEnvelope:
        """Queue ``event`` for background dispatch and return its envelope at once.

        Thread-safe: sync code (e.g. a sync route in a worker thread) may call it too.

        :raises EventBusOverloaded: when ``max_pending`` background events are in flight.
        :raises EventBusClosed: once shutdown has begun.
        """
        # _prepare() and _submit() inlined: this is the background hot path (calling
        # _prepare() costs ~1,000 instructions per event, +4.5%; callgrind, step 6c).
        if type(event) is not str or not event:
            event, args, kwargs = _normalize(event, args, kwargs)
        if not self._accepting:
            self._refuse(event)
            return _placeholder(event, args, kwargs)
        plan = self._plans.get(event) or self._registry.plan(event)
        if plan.schema is not None:
            args, kwargs = validate_payload(plan.schema, event, args, kwargs), {}
        parent = current_var.get()
        if parent is None:
            envelope = new_envelope(event, args, kwargs, request_correlation_id.get())
        else:
            envelope = self._child(parent, event, args, kwargs)
        if self._observed:
            return self._emit_nowait_observed(envelope, plan, parent is not None)
        if self._always_publish:
            self._check(envelope)
        elif not plan.count and self._background.state is Lifecycle.OPEN:
            return envelope
        self._background.submit(envelope, plan, copy_context(), parent is not None)
        return envelope

    def _emit_nowait_observed(
        self, envelope: EventEnvelope, plan: Plan, from_handler: bool
    ) -> EventEnvelope:
        self._observe_emitted(envelope)
        if self._tracer is None:
            self._submit(envelope, plan, from_handler)
            return envelope
        # Inside the emit span, so the handlers' spans (and a remote consumer's) become
        # its children.
        with self._tracer.emit_span(envelope, remote=self._always_publish):
            envelope = self._traced(envelope)
            self._submit(envelope, plan, from_handler)
        return envelope

    def _submit(self, envelope: EventEnvelope, plan: Plan, from_handler: bool) -> None:
        if self._always_publish:
            # An argument that cannot cross processes is refused here, in the caller's
            # hands, rather than lost in the background.
            self._check(envelope)
        elif not plan.count and self._background.state is Lifecycle.OPEN:
            return  # nobody to run it (refused the same way as others once shutting down)
        self._background.submit(envelope, plan, copy_context(), from_handler)

    def emit_after_response(
        self, event: str | BaseModel, /, *args: Any, **kwargs: Any
    ) -> EventEnvelope:
        """Inside an HTTP request: dispatch once the response has been sent, and only if the
        request succeeded (a 5xx or an unhandled exception discards the queued events).
        Outside a request: the same as :meth:`emit_nowait`.
        """
        queue = response_queue.get()
        if queue is None or queue.closed:
            return self.emit_nowait(event, *args, **kwargs)
        prepared = self._prepare(event, args, kwargs)
        if prepared is None:
            return _placeholder(event, args, kwargs)
        envelope, plan, _ = prepared
        if self._observed:
            self._observe_emitted(envelope)
            envelope = self._traced(envelope)
        if self._always_publish:
            self._check(envelope)
        if plan.count or self._always_publish:
            queue.append((envelope, plan, copy_context()))
        return envelope

    def dispatch_after_response(self, queued: ResponseQueue) -> None:
        """Hand a request's after-response events to background dispatch (the middleware
        calls this once the response was sent); none is lost silently."""
        for envelope, plan, context in queued:
            try:
                self._background.submit(envelope, plan, context)
            except (EventBusClosed, EventBusOverloaded) as exc:
                self._background.count_refused(
                    envelope, f"not dispatched after the response: {exc}"
                )

    def _refuse(self, event: str) -> None:
        if self._state is Lifecycle.CLOSED:
            raise EventBusClosed(
                f"cannot emit {event!r}: the event bus was shut down with the app; its "
                "handlers are cleared (emit from a running app)"
            )
        if not self._disabled_logged:
            self._disabled_logged = True
            logger.warning("Event dispatch is disabled (EVENTBUS_DISABLED): emits are no-ops.")

    # ================================================================ outbox
    @overload
    def outbox(self, session: AsyncSession) -> AsyncOutbox: ...
    @overload
    def outbox(self, session: Session) -> Outbox: ...
    def outbox(self, session: Any) -> Outbox | AsyncOutbox:
        """The transactional outbox bound to ``session`` (a SQLAlchemy ``AsyncSession``, or a
        ``Session``): its ``emit`` writes the event in the session's transaction, and the
        event is dispatched after the commit, never if it rolls back.

        :raises ConfigurationError: the outbox is off (no ``outbox_url``).
        """
        if self._outbox is None:
            raise ConfigurationError(
                "the transactional outbox is off: set the outbox_url option (or "
                "EVENTBUS_OUTBOX_URL) to the database your sessions write to, e.g. "
                "'postgresql+asyncpg://user:password@host/db' or "
                "'sqlite+aiosqlite:///./app.db', and install the extra: "
                "pip install 'fastapi-opinionated-eventbus[outbox]'"
            )
        return self._outbox.bind(session)

    def _open_outbox(self) -> OutboxService:
        try:
            from ..outbox._service import OutboxService
        except ImportError as exc:
            raise ConfigurationError(
                "option 'outbox_url' needs the outbox extra: pip install "
                f"'fastapi-opinionated-eventbus[outbox]' ({exc})"
            ) from exc
        return OutboxService(
            self.settings,
            prepare=self._prepare,
            dispatch=self.publish_stored,
            schema_for=self._registry.schema_for,
            subscriptions=self._registry.subscriptions,
            trace_carrier=self._tracer.carrier if self._tracer is not None else None,
            metrics=self._metrics,
        )

    async def publish_stored(self, envelope: EventEnvelope) -> EmitResult:
        """Hand an event built earlier (stored in the outbox) to the backend, observed like
        an emit: locally its handlers run, with a broker it is published.

        :raises EventBusClosed: after :meth:`close` (its subscriptions are gone).
        """
        if self._state is Lifecycle.CLOSED:
            raise EventBusClosed(f"cannot dispatch {envelope.describe()}: the bus is closed")
        plan = self._plans.get(envelope.name) or self._registry.plan(envelope.name)
        if self._observed:
            return await self._emit_observed(envelope, plan, False)
        return await self._publish(envelope, plan)

    # ================================================================ background
    @property
    def backend(self) -> Backend:
        """The backend events are handed to."""
        return self._backend

    @property
    def pending(self) -> int:
        """Background events accepted and not yet finished."""
        return self._background.pending

    @property
    def lost_events(self) -> int:
        """Background events that never ran to their end: cancelled before they could,
        refused after the response, not accepted by the broker, and forwarded events not
        accepted by shutdown's end (each logged)."""
        forwarding_lost = self._forwarding.lost if self._forwarding is not None else 0
        return self._background.lost + forwarding_lost

    @property
    def abandoned_events(self) -> int:
        """Background events still running when shutdown gave up on them (each logged):
        a sync handler in its worker thread, a handler that ignores cancellation."""
        return self._background.abandoned

    @property
    def unconfirmed_events(self) -> int:
        """Background events that may have reached the broker, unconfirmed (each logged)."""
        return self._background.unconfirmed

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

    # ================================================================ dead letters
    async def dead_letters(self) -> list[DeadLetter]:
        """Handler failures after their last attempt, oldest first, as the backend keeps
        them: in memory (bounded) locally, the dead-letter stream or topic with a broker."""
        return await self._backend.dead_letters()

    async def replay_dead_letters(self) -> EmitResult:
        """Run each dead letter's handler again; the ones failing again stay dead letters.

        The result's ``handled`` counts the letters replayed, ``failures`` those that
        failed again. Letters whose handler is not subscribed here stay, and are logged.
        """
        return await self._backend.replay_dead_letters()

    async def purge_dead_letters(self) -> int:
        """Delete every dead letter; returns how many there were."""
        return await self._backend.purge_dead_letters()

    async def health(self) -> dict[str, Any]:
        """The bus's state and counts, and the backend's :class:`BackendHealth` keys."""
        report: dict[str, Any] = {
            "backend": self._backend.name,
            "state": self._state.value,
            "healthy": self._state is not Lifecycle.CLOSED,
            "pending": self.pending,
            "lost_events": self.lost_events,
            "background": {
                "emitted": self._background.accepted,
                "handled": self._background.handled,
                "lost": self.lost_events,
                "abandoned": self.abandoned_events,
                "unconfirmed": self.unconfirmed_events,
                "pending": self.pending,
            },
            "abandoned_threads": self.abandoned_threads,
        }
        report.update(await self._backend.health())
        if self._outbox is not None:
            report["outbox"] = await self._outbox.health()
        if self._forwarding is not None:
            report["forwarding"] = self._forwarding.health()
        return report

    # ================================================================ observation
    @contextmanager
    def tap(self, callback: Callable[[EventEnvelope], None]) -> Iterator[None]:
        """Call ``callback`` with every envelope emitted while the block runs (tests)."""
        self._taps.append(callback)
        self._update_observed()
        try:
            yield
        finally:
            self._taps.remove(callback)
            self._update_observed()

    def _update_observed(self) -> None:
        self._observed = bool(self._taps or self._metrics is not None or self._tracer is not None)

    def _on_lost(self, envelope: EventEnvelope) -> None:
        if self._metrics is not None:
            self._metrics.lost(envelope.name)

    @property
    def metrics(self) -> MetricsCollector | None:
        """The configured metrics collector (None when metrics are off)."""
        return self._metrics

    @property
    def abandoned_threads(self) -> int:
        return self._dispatcher.abandoned_threads

    def __repr__(self) -> str:
        return (
            f"<EventBus {self._state.value} backend={self._backend.name} "
            f"subscriptions={len(self._registry.subscriptions())} pending={self.pending}>"
        )


def _failures_group(event: str, failures: tuple[HandlerFailure, ...]) -> ExceptionGroup[Exception]:
    return ExceptionGroup(
        f"{len(failures)} handler(s) failed on event {event!r}",
        [failure.exception for failure in failures],
    )


def _emitted_at(envelope: EventEnvelope) -> float:
    return envelope.emitted_at_timestamp


def _placeholder(
    event: str | BaseModel, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> EventEnvelope:
    """The envelope a disabled bus returns from a non-blocking emit (nothing is sent)."""
    name = event if isinstance(event, str) else event_name_of(type(event))
    return EventEnvelope(name, args, kwargs)


def _normalize(
    event: object, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
    """The slow path of emit's first argument: a typed event instance, or a bad name."""
    if isinstance(event, BaseModel):
        if args or kwargs:
            raise TypeError(
                f"emit({type(event).__qualname__}(...)) takes no further arguments: the "
                "model instance is the payload"
            )
        return event_name_of(type(event)), (event,), {}
    return check_event_name(event, what="event name to emit"), args, kwargs


async def _no_result() -> EmitResult:
    """What emit returns while the bus is disabled."""
    return EmitResult(None, 0)
