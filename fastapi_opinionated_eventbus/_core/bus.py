"""The event bus: subscribe handlers, emit events (awaited, background, after response)."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from fastapi_opinionated.shared.logger import ns_logger
from pydantic import BaseModel

from .._observability.tracing import EventTracer
from ..backends import RemoteBackend
from ..metrics import CountingCollector, FanOutCollector, MetricsCollector, build_collector
from .background import CLOSED, DRAINING, OPEN, BackgroundQueue, QueueItem
from .correlation import request_correlation_id
from .dead_letters import DeadLetter, DeadLetterStore
from .dispatch import Dispatcher, cancelled_by_handler
from .envelope import EventEnvelope, _current, _reset_current
from .errors import ChainDepthExceeded, EventBusClosed, EventBusOverloaded
from .registry import Plan, Registry, Subscription, build_subscription, check_event_name
from .results import EmitResult, HandlerFailure
from .retry import RetryPolicy
from .settings import BusSettings, load_settings
from .typed import event_name_of, validate_payload

__all__ = ["EventBus"]

logger = ns_logger("EventBus")

_OPEN, _DRAINING, _CLOSED = "open", "draining", "closed"


class ResponseQueue(list[QueueItem]):
    """The after-response events of one HTTP request. ``closed`` once the middleware has
    dispatched or discarded them: a task the request started that outlives it (copying
    this context) then emits in the background instead of into a queue nobody reads."""

    __slots__ = ("closed",)

    def __init__(self) -> None:
        super().__init__()
        self.closed = False


# Set by the after-response middleware for the duration of one HTTP request.
_response_queue: contextvars.ContextVar[ResponseQueue | None] = contextvars.ContextVar(
    "eventbus_response_queue", default=None
)


class EventBus:
    """An in-process event bus.

    ``await emit()`` runs the matching handlers and waits for them; ``emit_nowait()`` and
    ``emit_after_response()`` hand events to background dispatch, which is tracked, bounded
    by ``max_pending`` and drained on shutdown. Handlers' failures are isolated and logged.
    """

    def __init__(
        self, settings: BusSettings | None = None, *, app_name: str | None = None, **options: Any
    ) -> None:
        if settings is not None and options:
            raise TypeError("pass either settings or options, not both")
        self.settings = settings if settings is not None else load_settings(**options)
        self.app_name = app_name
        s = self.settings
        self._registry = Registry(cache_size=s.pattern_cache_size)
        self._dead_letters = DeadLetterStore(s.dead_letter_capacity)
        self._dispatcher = Dispatcher(self._dead_letters, s.thread_pool_size)
        self._strict = s.strict
        self._max_chain_depth = s.max_chain_depth
        self._default_retry: RetryPolicy | None = s.retry
        self._state = _OPEN
        # False when disabled or closed: the one flag the hot path reads.
        self._accepting = not s.disabled
        self._disabled_logged = False
        self._taps: list[Callable[[EventEnvelope], None]] = []
        self._backend: RemoteBackend | None = None
        run_background: Callable[[EventEnvelope, Plan], Coroutine[Any, Any, object]]
        run_background = self._dispatcher.run
        if s.backend == "redis":
            from ..backends.redis.backend import RedisStreamsBackend

            self._backend = RedisStreamsBackend(self, s)
            run_background = self._publish_in_background
        self._background = BackgroundQueue(run_background, s.max_pending, self._on_lost)
        # Observation: metrics, tracing, taps. Off by default; when all are off, emit reads
        # one flag (_observed) and nothing else.
        self.counters = CountingCollector() if s.introspection_path else None
        collectors = [c for c in (build_collector(s.metrics), self.counters) if c is not None]
        self._metrics: MetricsCollector | None = None
        if len(collectors) == 1:
            self._metrics = collectors[0]
        elif collectors:
            self._metrics = FanOutCollector(collectors)
        self._tracer = EventTracer() if s.tracing else None
        self._dispatcher.observe(self._metrics, self._tracer)
        if self._metrics is not None:
            self._metrics.watch(
                lambda: self.pending, lambda: getattr(self._backend, "pending_entries", 0)
            )
        self._observed = False
        self._update_observed()
        # The registry's plan cache, read directly on the hot path (the registry clears
        # it in place, never replaces it).
        self._plans = self._registry._plans

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
        self._add(sub, schema)
        return sub

    def _add(self, sub: Subscription, schema: Any = None) -> None:
        if self._state == _CLOSED:
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

    # ================================================================ emitting
    async def emit(
        self, event: str | BaseModel, /, *args: Any, strict: bool | None = None, **kwargs: Any
    ) -> EmitResult:
        """Run every handler of ``event`` with these arguments and wait for all of them.

        Async handlers run on the loop and sync ones in worker threads, concurrently within
        one priority. Failures are logged and returned, not raised, unless ``strict``.
        (``strict`` is therefore a reserved keyword: handlers cannot receive it.)
        """
        if type(event) is not str or not event:
            event, args, kwargs = _normalize(event, args, kwargs)
        if not self._accepting:
            self._refuse(event)
            return EmitResult(None, 0)
        plan = self._plans.get(event) or self._registry.plan(event)
        if plan.schema is not None:
            args, kwargs = validate_payload(plan.schema, event, args, kwargs), {}
        parent = _current.get()
        if parent is None:
            envelope = EventEnvelope(event, args, kwargs, request_correlation_id.get())
        else:
            envelope = self._child_envelope(parent, event, args, kwargs)
        if self._observed:
            result = await self._emit_observed(envelope, plan)
            if result.failures and (self._strict if strict is None else strict):
                raise _failures_group(event, result.failures)
            return result
        single = plan.single
        if single is not None:
            # The common case inlined: one plain async handler, awaited in this task.
            token = _current.set(envelope)
            try:
                await single.handler(*args, **kwargs)
                return EmitResult(envelope, 1)
            except Exception as exc:
                failures: tuple[HandlerFailure, ...] = (
                    self._dispatcher.give_up(single, envelope, exc, 1),
                )
            except asyncio.CancelledError as cancelled:
                failures = (
                    self._dispatcher.give_up(single, envelope, cancelled_by_handler(cancelled), 1),
                )
            finally:
                _reset_current(token)
        elif plan.count:
            failures = await self._dispatcher.run(envelope, plan)
        else:
            return EmitResult(envelope, 0)
        if failures and (self._strict if strict is None else strict):
            raise _failures_group(event, failures)
        return EmitResult(envelope, plan.count, failures)

    async def _emit_observed(self, envelope: EventEnvelope, plan: Plan) -> EmitResult:
        """emit() with taps, metrics, tracing or a remote backend: the slower, general path."""
        self._observe_emitted(envelope)
        if self._tracer is None:
            return await self._deliver(envelope, plan)
        with self._tracer.emit_span(envelope, remote=self._backend is not None):
            if self._backend is not None:
                envelope._trace = self._tracer.carrier()
            return await self._deliver(envelope, plan)

    async def _deliver(self, envelope: EventEnvelope, plan: Plan) -> EmitResult:
        if self._backend is not None:
            await self._backend.publish(envelope)
            return EmitResult(envelope, 0, published=True)
        if not plan.count:
            return EmitResult(envelope, 0)
        return EmitResult(envelope, plan.count, await self._dispatcher.run(envelope, plan))

    def _observe_emitted(self, envelope: EventEnvelope) -> None:
        if self._taps:
            self._tap(envelope)
        if self._metrics is not None:
            self._metrics.emitted(envelope.name)

    def emit_nowait(self, event: str | BaseModel, /, *args: Any, **kwargs: Any) -> EventEnvelope:
        """Queue ``event`` for background dispatch and return its envelope at once.

        Thread-safe: sync code (e.g. a sync route in a worker thread) may call it too.

        :raises EventBusOverloaded: when ``max_pending`` background events are in flight.
        :raises EventBusClosed: once shutdown has begun.
        """
        # _prepare() inlined: this is the background hot path.
        if type(event) is not str or not event:
            event, args, kwargs = _normalize(event, args, kwargs)
        if not self._accepting:
            self._refuse(event)
            return EventEnvelope(event, args, kwargs)
        plan = self._plans.get(event) or self._registry.plan(event)
        if plan.schema is not None:
            args, kwargs = validate_payload(plan.schema, event, args, kwargs), {}
        parent = _current.get()
        if parent is None:
            envelope = EventEnvelope(event, args, kwargs, request_correlation_id.get())
        else:
            envelope = self._child_envelope(parent, event, args, kwargs)
        if self._observed:
            self._observe_emitted(envelope)
            if self._tracer is not None:
                # Inside the emit span, so the handlers' spans (and a remote consumer's)
                # become its children.
                with self._tracer.emit_span(envelope, remote=self._backend is not None):
                    if self._backend is not None:
                        envelope._trace = self._tracer.carrier()
                    self._submit_if_needed(envelope, plan, parent is not None)
                return envelope
        self._submit_if_needed(envelope, plan, parent is not None)
        return envelope

    def _submit_if_needed(self, envelope: EventEnvelope, plan: Plan, from_handler: bool) -> None:
        if self._backend is not None:
            # Refuse an argument that cannot cross processes here, in the caller's hands,
            # rather than losing the event in the background.
            self._backend.validate(envelope)
        if plan.count or self._backend is not None or self._background.state is not OPEN:
            # (Refused the same way with or without handlers once shutdown has begun.)
            self._background.submit(envelope, plan, contextvars.copy_context(), from_handler)

    def emit_after_response(
        self, event: str | BaseModel, /, *args: Any, **kwargs: Any
    ) -> EventEnvelope:
        """Inside an HTTP request: dispatch once the response has been sent, and only if the
        request succeeded (a 5xx or an unhandled exception discards the queued events).
        Outside a request: the same as :meth:`emit_nowait`.
        """
        queue = _response_queue.get()
        if queue is None or queue.closed:
            return self.emit_nowait(event, *args, **kwargs)
        envelope, plan = self._prepare(event, args, kwargs)
        if plan is not None:
            queue.append((envelope, plan, contextvars.copy_context()))
        return envelope

    def _prepare(
        self, event: str | BaseModel, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[EventEnvelope, Plan | None]:
        """Validate and build the envelope now, so a bad emit fails in the caller's hands."""
        if type(event) is not str or not event:
            event, args, kwargs = _normalize(event, args, kwargs)
        if not self._accepting:
            self._refuse(event)
            return EventEnvelope(event, args, kwargs), None
        plan = self._plans.get(event) or self._registry.plan(event)
        if plan.schema is not None:
            args, kwargs = validate_payload(plan.schema, event, args, kwargs), {}
        parent = _current.get()
        if parent is None:
            envelope = EventEnvelope(event, args, kwargs, request_correlation_id.get())
        else:
            envelope = self._child_envelope(parent, event, args, kwargs)
        if self._observed:
            self._observe_emitted(envelope)
            if self._tracer is not None and self._backend is not None:
                envelope._trace = self._tracer.carrier()
        if self._backend is not None:
            self._backend.validate(envelope)
        # With a remote backend every event is published, handlers here or not.
        return envelope, (plan if plan.count or self._backend is not None else None)

    def _child_envelope(
        self, parent: EventEnvelope, event: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> EventEnvelope:
        chain = parent.child_chain()
        if len(chain) >= self._max_chain_depth:
            raise ChainDepthExceeded(
                f"event {event!r} emitted at depth {len(chain) + 1} > max_chain_depth="
                f"{self._max_chain_depth}; a handler cycle? "
                f"Chain: {' -> '.join((*chain, event))}"
            )
        return EventEnvelope(event, args, kwargs, parent.correlation_id, chain=chain)

    def _refuse(self, event: str) -> None:
        if self._state == _CLOSED:
            raise EventBusClosed(
                f"cannot emit {event!r}: the event bus was shut down with the app; its "
                "handlers are cleared (emit from a running app)"
            )
        if not self._disabled_logged:
            self._disabled_logged = True
            logger.warning("Event dispatch is disabled (EVENTBUS_DISABLED): emits are no-ops.")

    # ================================================================ background
    def _submit_after_response(self, items: list[QueueItem]) -> None:
        """Called by the middleware once the response was sent; nothing is lost silently."""
        for envelope, plan, context in items:
            try:
                self._background.submit(envelope, plan, context)
            except (EventBusClosed, EventBusOverloaded) as exc:
                self._background.count_lost(envelope, f"not dispatched after the response: {exc}")

    async def _publish_in_background(self, envelope: EventEnvelope, plan: Plan) -> None:
        assert self._backend is not None
        try:
            await self._backend.publish(envelope)
        except Exception as exc:
            self._background.count_lost(envelope, f"not published: {type(exc).__name__}: {exc}")

    async def dispatch_received(self, envelope: EventEnvelope, *, broadcast: bool) -> EmitResult:
        """Run this process's handlers for an event a remote backend delivered.

        ``broadcast`` selects the broadcast subscriptions (run in every process) or the
        others (run once per app). Never raises for a handler failure.
        """
        plan = self._registry.plan(envelope.name)
        if plan.count:
            plan = plan.only(broadcast=broadcast)
        if not plan.count:
            return EmitResult(envelope, 0)
        if self._taps:
            self._tap(envelope)
        return EmitResult(envelope, plan.count, await self._dispatcher.run(envelope, plan))

    @property
    def backend(self) -> RemoteBackend | None:
        return self._backend

    @property
    def pending(self) -> int:
        """Background events accepted and not yet finished."""
        return self._background.pending

    @property
    def lost_events(self) -> int:
        """Background events cancelled, refused or unpublished at shutdown (each logged)."""
        return self._background.lost

    async def drain(self, timeout: float | None = None) -> int:
        """Wait until every background event has finished, or ``timeout`` seconds passed.

        Returns how many are still in flight (0 when drained). Cancels nothing.
        """
        return await self._background.wait_idle(timeout)

    # ================================================================ lifecycle
    async def start(self) -> None:
        """Bind the bus to the running loop and start the backend (the plugin does this at
        app startup)."""
        self._background.bind(asyncio.get_running_loop())
        if self._backend is not None:
            await self._backend.start()

    async def shutdown(self, timeout: float | None = None) -> int:
        """Refuse new background events (except those handlers still running emit), let
        in-flight work finish for up to ``timeout`` seconds (default: the
        ``shutdown_timeout`` option), then cancel and report what is left.

        Returns the number of events lost, each of which is logged by name and id.
        """
        if self._state == _OPEN:
            self._state = _DRAINING
        self._background.state = DRAINING
        timeout = self.settings.shutdown_timeout if timeout is None else timeout
        deadline = asyncio.get_running_loop().time() + timeout
        if self._backend is not None:
            # Take no new entries, then let the handlers running now finish: they may
            # still emit, and their events are drained below.
            await self._backend.pause()
            await self._backend.settle(timeout)
        remaining = await self.drain(max(0.0, deadline - asyncio.get_running_loop().time()))
        lost = await self._background.cancel_all() if remaining else []
        self._background.state = CLOSED
        if self._backend is not None:
            await self._backend.stop()
        if lost:
            logger.error(
                f"Shutdown: {len(lost)} background event(s) did not finish within {timeout}s "
                "and were cancelled: "
                + ", ".join(e.describe() for e in sorted(lost, key=_emitted_at))
            )
        return len(lost)

    def close(self) -> None:
        """Clear every subscription and stop; later emits raise EventBusClosed."""
        self._state = _CLOSED
        self._accepting = False
        self._background.state = CLOSED
        self._registry.clear()
        self._dispatcher.shutdown()

    def reopen(self) -> None:
        """Accept events again after :meth:`close`: the same app's lifespan may run twice
        (two ``with TestClient(app)`` blocks). Subscriptions start empty."""
        if self._state != _CLOSED:
            return
        self._state = _OPEN
        self._accepting = not self.settings.disabled
        self._background.state = OPEN
        self._background.bind(None)  # the next lifespan may run on another loop

    async def aclose(self, timeout: float | None = None) -> int:
        """:meth:`shutdown` then :meth:`close`; returns the number of events lost."""
        lost = await self.shutdown(timeout)
        self.close()
        return lost

    @property
    def closed(self) -> bool:
        return self._state == _CLOSED

    # ================================================================ dead letters
    async def dead_letters(self) -> list[DeadLetter]:
        """Handler failures after their last attempt, oldest first: in memory (bounded) with
        the local backend, the dead-letter stream with Redis."""
        if self._backend is not None:
            return await self._backend.dead_letters()
        return list(self._dead_letters)

    @property
    def dropped_dead_letters(self) -> int:
        return self._dead_letters.dropped

    async def replay_dead_letters(self) -> EmitResult:
        """Run each dead letter's handler again; the ones failing again return to the store.

        The result's ``handled`` counts the letters replayed, ``failures`` those that
        failed again.

        Letters whose handler is no longer subscribed are put back and reported.
        """
        if self._backend is not None:
            return await self._backend.replay_dead_letters()
        letters = self._dead_letters.take_all()
        failures = []
        replayed = 0
        for letter in letters:
            sub = self._subscription_of(letter)
            if sub is None:
                self._dead_letters.add(letter)
                logger.warning(
                    f"Dead letter of event {letter.event.describe()} not replayed: handler "
                    f"{letter.handler} is no longer subscribed"
                )
                continue
            replayed += 1
            failure = await self._dispatcher.replay(letter, sub)
            if failure is not None:
                failures.append(failure)
        return EmitResult(None, replayed, tuple(failures))

    def _subscription_of(self, letter: DeadLetter) -> Subscription | None:
        """The subscription a letter came from, if it is still subscribed: the same object,
        else one with the same handler and subscribed name (e.g. after a restart)."""
        subs = self._registry.subscriptions()
        if letter.source is not None and any(sub is letter.source for sub in subs):
            return letter.source
        for sub in subs:
            if sub.name == letter.handler and letter.subscription in (None, sub.event):
                return sub
        return None

    async def replay_one(self, letter: DeadLetter) -> EmitResult:
        """Run one dead letter's handler again (used by backends' replay)."""
        sub = self._subscription_of(letter)
        if sub is None:
            raise LookupError(f"handler {letter.handler} is not subscribed in this process")
        failure = await self._dispatcher.replay(letter, sub)
        return EmitResult(letter.event, 1, (failure,) if failure else ())

    async def health(self) -> dict[str, Any]:
        """A report on the bus: backend reachability, in-flight and dead-letter counts."""
        report: dict[str, Any] = {
            "backend": self.settings.backend,
            "state": self._state,
            "healthy": self._state != _CLOSED,
            "pending": self.pending,
            "lost_events": self.lost_events,
            "abandoned_threads": self.abandoned_threads,
            "dead_letters": len(self._dead_letters),
            "dropped_dead_letters": self._dead_letters.dropped,
        }
        if self._backend is not None:
            report.update(await self._backend.health())
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
        self._observed = bool(
            self._taps
            or self._backend is not None
            or self._metrics is not None
            or self._tracer is not None
        )

    def _on_lost(self, envelope: EventEnvelope) -> None:
        if self._metrics is not None:
            self._metrics.lost(envelope.name)

    @property
    def metrics(self) -> MetricsCollector | None:
        """The configured metrics collector (None when metrics are off)."""
        return self._metrics

    def _tap(self, envelope: EventEnvelope) -> None:
        for callback in self._taps:
            callback(envelope)

    @property
    def abandoned_threads(self) -> int:
        return self._dispatcher.abandoned_threads

    def __repr__(self) -> str:
        return (
            f"<EventBus {self._state} subscriptions={len(self._registry.subscriptions())} "
            f"pending={self.pending}>"
        )


def _failures_group(event: str, failures: tuple[HandlerFailure, ...]) -> ExceptionGroup[Exception]:
    return ExceptionGroup(
        f"{len(failures)} handler(s) failed on event {event!r}",
        [failure.exception for failure in failures],
    )


def _emitted_at(envelope: EventEnvelope) -> float:
    return envelope.emitted_at_timestamp


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
