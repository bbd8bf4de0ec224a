"""Subscribing: handlers, schemas, forwarders, the outbox, and the dependencies handlers
are given (their overrides)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Unpack, overload

from pydantic import BaseModel

from .emitting import Emitting
from .errors import ConfigurationError, EventBusClosed
from .inspecting import Inspecting
from .lifecycle import Lifecycle
from .registry import Subscription, build_subscription, check_event_name
from .retry import RetryPolicy
from .typed import event_name_of

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Session

    from ..forwarding import Forward, Forwarder, ForwardOptions
    from ..outbox import AsyncOutbox, Outbox
    from ..outbox._service import OutboxService

__all__ = ["Subscribing"]


class Subscribing(Emitting, Inspecting):
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
        from ..forwarding._routes import Forwarding, forward_subscription

        sub, schema = forward_subscription(spec, self._default_retry)
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
