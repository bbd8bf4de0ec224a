"""Forward subscriptions: the handler each one runs, and the bus's set of them.

A forward subscription is an ordinary :class:`Subscription` whose handler is a
:class:`ForwardRoute`: the dispatcher applies its pattern, priority, retry policy,
timeout, dead letters, metrics and tracing like any handler's. It is marked ``wrapped``
so that it always runs on the dispatcher's general path.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi_opinionated.shared.logger import ns_logger

from .._core.envelope import EventEnvelope, current_event
from .._core.registry import Subscription, check_subscription_options
from .._text import loggable
from ._batcher import Batcher
from ._protocol import Forwarder, forwarder_name
from ._spec import FORWARD_RETRY, Forward

if TYPE_CHECKING:
    from .._core.retry import RetryPolicy

__all__ = ["ForwardRoute", "Forwarding", "forward_subscription"]

logger = ns_logger("EventBus")

ROUTE_MODULE = "forward"
"""What a forward subscription's handler name starts with: ``forward:<forwarder name>``."""


class ForwardRoute:
    """The handler of one forward subscription: sends the current event through its
    batcher and returns once the forwarder accepted it."""

    def __init__(self, forwarder: Forwarder, batcher: Batcher) -> None:
        self.forwarder = forwarder
        self.batcher = batcher
        # describe() names a handler by these: "forward:SQSForwarder(orders)".
        self.__module__ = ROUTE_MODULE
        self.__qualname__ = self.__name__ = batcher.name

    async def __call__(self, *args: Any, **kwargs: Any) -> None:
        await self.batcher.send(current_event())

    def __repr__(self) -> str:
        return f"<ForwardRoute {self.__qualname__}>"


def forward_subscription(
    spec: Forward, default_retry: RetryPolicy | None
) -> tuple[Subscription, Any]:
    """The subscription of ``spec`` (retry: its own, else ``default_retry``, else
    :data:`FORWARD_RETRY`), whose handler is its :class:`ForwardRoute`, and its schema
    (typed events)."""
    name, schema = check_subscription_options(
        spec.event, priority=spec.priority, retry=spec.retry, timeout=spec.timeout
    )
    forwarder = spec.forwarder
    batcher = Batcher(
        forwarder.send_many,
        forwarder_name(forwarder),
        batch_size=spec.batch_size,
        max_wait=spec.max_wait,
        concurrency=spec.batches_in_flight,
        send_timeout=spec.send_timeout,
    )
    sub = Subscription(
        name,
        ForwardRoute(forwarder, batcher),
        priority=spec.priority,
        retry=spec.retry or default_retry or FORWARD_RETRY,
        timeout=spec.timeout,
        wrapped=True,
    )
    return sub, schema


class Forwarding:
    """The forward subscriptions of one bus: flushed and closed at its shutdown."""

    def __init__(self, on_lost: Callable[[EventEnvelope], None]) -> None:
        self._subs: list[Subscription] = []
        self._on_lost = on_lost
        self.lost = 0

    def keep(self, sub: Subscription) -> None:
        self._subs.append(sub)

    def subscriptions_of(self, forwarder: Forwarder) -> list[Subscription]:
        return [sub for sub in self._subs if _route(sub).forwarder is forwarder]

    def hurry(self) -> None:
        """Shutdown has begun: batches leave now instead of waiting to fill."""
        for sub in self._subs:
            _route(sub).batcher.hurry()

    async def close(self, timeout: float) -> int:
        """Send what is left within ``timeout`` seconds, report every event given up on
        (logged by name and id, counted), close the forwarders; return how many were lost."""
        self.hurry()  # every batcher sends at once; each is then waited for in turn
        subs, self._subs = self._subs, []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        lost: list[EventEnvelope] = []
        for sub in subs:
            lost.extend(await _route(sub).batcher.close(max(0.0, deadline - loop.time())))
        for envelope in lost:
            self._on_lost(envelope)
        if lost:
            self.lost += len(lost)
            logger.error(
                f"Shutdown: {len(lost)} forwarded event(s) were not accepted within the "
                "shutdown timeout and were lost: "
                + ", ".join(envelope.describe() for envelope in lost)
            )
        closed: set[int] = set()
        for sub in subs:
            forwarder = _route(sub).forwarder
            if id(forwarder) in closed:
                continue
            closed.add(id(forwarder))
            await _aclose(forwarder, _route(sub).batcher.name)
        return len(lost)

    def health(self) -> list[dict[str, Any]]:
        return [
            {"forwarder": _route(sub).batcher.name, "event": sub.event}
            | _route(sub).batcher.health()
            for sub in self._subs
        ]


def _route(sub: Subscription) -> ForwardRoute:
    route = sub.handler
    assert isinstance(route, ForwardRoute)
    return route


async def _aclose(forwarder: Forwarder, name: str) -> None:
    aclose = getattr(forwarder, "aclose", None)
    if aclose is None:
        return
    try:
        result = aclose()
        if inspect.isawaitable(result):
            await result
    except Exception as exc:
        logger.warning(
            f"Forwarder {name} failed to close: {type(exc).__name__}: {loggable(str(exc))}"
        )
