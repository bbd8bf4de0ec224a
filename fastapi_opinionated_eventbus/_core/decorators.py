"""``@OnInternalEvent`` and ``register_schema``: declare at import time, run once enabled."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel

from .declarations import declare_handler, declare_schema
from .registry import (
    Subscription,
    check_event_name,
    check_handler,
    check_subscription_options,
)
from .retry import RetryPolicy

__all__ = ["OnInternalEvent", "register_schema"]

F = TypeVar("F", bound=Callable[..., Any])


def OnInternalEvent(
    event: str | type[BaseModel],
    *,
    priority: int = 0,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
    broadcast: bool = False,
) -> Callable[[F], F]:
    """Subscribe the decorated ``async def`` or ``def`` to ``event``.

    ``event`` is a name (``"user.created"``), a shell-style pattern (``"user.*"``, ``"*"``)
    or a typed event class. Returns the function unchanged. Works before the plugin is
    enabled: the handler is recorded and subscribed when the app starts.

    :param priority: higher runs first; equal priorities run concurrently.
    :param retry: this handler's retry policy (default: the plugin's ``retry`` option).
    :param timeout: seconds before the handler counts as failed.
    :param broadcast: with a distributed backend, run in every process of the app.
    """
    if callable(event) and not isinstance(event, type):
        raise TypeError(
            '@OnInternalEvent needs the event name: write @OnInternalEvent("user.created"), '
            f"not a bare @OnInternalEvent above {getattr(event, '__qualname__', event)!r}"
        )
    # Checked now, at import time, whatever the decorated function turns out to be.
    name, schema = check_subscription_options(
        event, priority=priority, retry=retry, timeout=timeout, broadcast=broadcast
    )

    def decorator(handler: F) -> F:
        if callable(handler) and not inspect.isfunction(handler):
            # The core's `list handlers` reads __name__ and __code__: only functions have both.
            raise TypeError(
                f"@OnInternalEvent decorates functions (def or async def), not "
                f"{type(handler).__name__} objects; subscribe other callables at runtime "
                f"with eventbus_api().subscribe({event!r}, handler)"
            )
        sub = Subscription(
            name,
            check_handler(handler),
            priority=priority,
            retry=retry,
            timeout=timeout,
            broadcast=broadcast,
        )
        declare_handler(sub, schema)
        return handler

    return decorator


def register_schema(event: str, model: type[BaseModel]) -> None:
    """Validate payloads emitted as ``event`` with ``model``; handlers receive the model.

    May be called at import time, before the plugin is enabled.
    """
    check_event_name(event)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise TypeError(f"a schema must be a pydantic BaseModel subclass, got {model!r}")
    declare_schema(event, model)
