"""``eventbus_api()``: the accessor routes and services use."""

from __future__ import annotations

from fastapi_opinionated.app import App

from .bus import EventBus
from .errors import EventBusNotEnabled

__all__ = ["eventbus_api"]


def eventbus_api() -> EventBus:
    """The app's event bus.

    :raises EventBusNotEnabled: when the plugin is not enabled (the message says how).
    """
    try:
        # An attribute read, not getattr(..., None): this runs on every emit of every route.
        bus: EventBus = App.plugin.eventbus
    except AttributeError:
        raise EventBusNotEnabled(
            "The EventBus plugin is not enabled (or App.create() has not run yet)."
        ) from None
    return bus
