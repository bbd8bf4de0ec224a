"""``eventbus_api()`` and its injectable forms: the accessors routes and services use."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends
from fastapi_opinionated.app import App
from fastapi_opinionated.shared.logger import ns_logger

from .bus import EventBus
from .correlation import request_correlation_id
from .envelope import current_var
from .errors import EventBusNotEnabled

__all__ = ["EventBusDep", "eventbus_api", "get_correlation_id", "get_event_bus"]

logger = ns_logger("EventBus")

_NO_APP = object()
_reported_for: Any = _NO_APP  # the app whose missing plugin was logged


def eventbus_api() -> EventBus:
    """The app's event bus.

    :raises EventBusNotEnabled: when the plugin is not enabled (the message says how).
    """
    try:
        # An attribute read, not getattr(..., None): this runs on every emit of every route.
        bus: EventBus = App.plugin.eventbus
    except AttributeError:
        raise _not_enabled() from None
    return bus


def _not_enabled() -> EventBusNotEnabled:
    global _reported_for
    error = EventBusNotEnabled(
        "The EventBus plugin is not enabled (or App.create() has not run yet)."
    )
    if _reported_for is not App.fastapi:
        # A route calling eventbus_api() answers 500 and the server's log line names no
        # exception (the core's formatter drops it): name it, with the fix, once per app.
        _reported_for = App.fastapi
        logger.error(f"eventbus_api(): {type(error).__name__}: {error}")
    return error


def get_event_bus() -> EventBus:
    """The app's event bus, as a FastAPI dependency: ``bus: EventBus =
    Depends(get_event_bus)``, or :data:`EventBusDep`. Override it like any dependency
    (``app.dependency_overrides[get_event_bus] = lambda: fake_bus``).

    :raises EventBusNotEnabled: when the plugin is not enabled.
    """
    return eventbus_api()


EventBusDep = Annotated[EventBus, Depends(get_event_bus)]
"""A route (or handler) parameter annotated ``EventBusDep`` receives the app's bus."""


def get_correlation_id() -> str | None:
    """The correlation id of the HTTP request being served (the one its response echoes in
    ``X-Correlation-ID``); inside a handler outside a request (a background or received
    event), the event's correlation id; otherwise None. A plain call or a dependency."""
    correlation_id = request_correlation_id.get()
    if correlation_id is not None:
        return correlation_id
    event = current_var.get()
    return None if event is None else event.correlation_id
