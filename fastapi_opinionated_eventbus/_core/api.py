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
    bus = getattr(App.plugin, "eventbus", None)
    if bus is None:
        raise EventBusNotEnabled(
            "The EventBus plugin is not enabled (or App.create() has not run yet)."
        )
    return bus  # type: ignore[no-any-return]
