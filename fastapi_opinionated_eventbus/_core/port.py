"""The bus's side of the backend contract: how received events reach the handlers.

A backend gets this object, not the bus: it can run handlers and look up what it needs
to decode events, nothing more (see :class:`~..backends.base.BackendPort`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Sequence
from contextvars import Context
from typing import TYPE_CHECKING, Any

from .dispatch import Dispatcher, KeepLetter
from .envelope import EventEnvelope
from .registry import Plan, Registry, Subscription
from .results import EmitResult

if TYPE_CHECKING:
    from pydantic import BaseModel

    from .dead_letters import DeadLetter

__all__ = ["BusPort"]


class BusPort:
    """Implements :class:`~fastapi_opinionated_eventbus.backends.BackendPort`."""

    def __init__(
        self,
        registry: Registry,
        dispatcher: Dispatcher,
        *,
        app_name: str | None,
    ) -> None:
        self._registry = registry
        self._dispatcher = dispatcher
        self._app_name = app_name
        # The dispatcher's own bound method: an in-process backend's publish adds no frame.
        self.run: Callable[[EventEnvelope, Plan], Coroutine[Any, Any, EmitResult]]
        self.run = dispatcher.run
        self.start: Callable[[EventEnvelope, Plan, Context], Awaitable[object] | None]
        self.start = dispatcher.start

    @property
    def app_name(self) -> str | None:
        return self._app_name

    def schema_for(self, event: str) -> type[BaseModel] | None:
        schema: type[BaseModel] | None = self._registry.schema_for(event)
        return schema

    def subscriptions(self) -> Sequence[Subscription]:
        return self._registry.subscriptions()

    def has_handlers(self, *, broadcast: bool) -> bool:
        return any(sub.broadcast == broadcast for sub in self._registry.subscriptions())

    def handles(self, event: str, *, broadcast: bool) -> bool:
        plan = self._registry.plan(event)
        return any(sub.broadcast == broadcast for group in plan.groups for sub in group)

    def keep_dead_letters(self, keep: KeepLetter) -> None:
        self._dispatcher.keep = keep

    async def deliver(self, envelope: EventEnvelope, *, broadcast: bool | None) -> EmitResult:
        plan = self._registry.plan(envelope.name)
        if broadcast is not None and plan.count:
            plan = plan.only(broadcast=broadcast)
        if not plan.count:
            return EmitResult(envelope, 0)
        # No tap here: taps see emits (the emitting process taps before publishing), so an
        # event this process emitted and then consumed is recorded once.
        return await self._dispatcher.run(envelope, plan)

    async def replay(self, letter: DeadLetter) -> EmitResult | None:
        sub = self._subscription_of(letter)
        if sub is None:
            return None
        failure = await self._dispatcher.replay(letter, sub)
        return EmitResult(letter.event, 1, (failure,) if failure else ())

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
