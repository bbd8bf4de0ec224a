"""Emitting: awaited, in a batch, in the background, after the response.

Every emit prepares the event (name, payload validated, envelope) in the caller's hands and
gives it to the bus's one backend. ``emit`` and ``emit_nowait`` are the hot paths: they
inline the preparation (measured, see their comments).
"""

from __future__ import annotations

from collections.abc import Coroutine, Iterable
from contextvars import copy_context
from typing import Any

from fastapi_opinionated.shared.logger import ns_logger
from pydantic import BaseModel

from .after_response import ResponseQueue, response_queue
from .correlation import request_correlation_id
from .envelope import EventEnvelope, current_var, new_envelope
from .errors import ChainDepthExceeded, EventBusClosed, EventBusOverloaded
from .lifecycle import Lifecycle
from .registry import Plan, check_event_name
from .results import EmitResult, HandlerFailure
from .state import BusState
from .typed import event_name_of, validate_payload

__all__ = ["Emitting"]

logger = ns_logger("EventBus")


class Emitting(BusState):
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


def _failures_group(event: str, failures: tuple[HandlerFailure, ...]) -> ExceptionGroup[Exception]:
    return ExceptionGroup(
        f"{len(failures)} handler(s) failed on event {event!r}",
        [failure.exception for failure in failures],
    )


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
