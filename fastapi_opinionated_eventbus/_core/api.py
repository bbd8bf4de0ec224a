"""``eventbus_api()``: the accessor routes and services use."""

from __future__ import annotations

from typing import Any

from fastapi_opinionated.app import App
from fastapi_opinionated.shared.logger import ns_logger

from .bus import EventBus
from .errors import EventBusNotEnabled

__all__ = ["eventbus_api"]

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
