"""``EventBusPlugin``: maps the core's lifecycle hooks onto the bus. No logic of its own."""

from __future__ import annotations

import os
import sys
from typing import Any

from fastapi import FastAPI
from fastapi_opinionated.app import App, AppCmd
from fastapi_opinionated.registry.plugin import PluginRegistry
from fastapi_opinionated.shared.base_plugin import BasePlugin

from ._core import declarations
from ._core.bus import EventBus
from ._core.enablement import PLUGIN_PATH, check_configured, check_domains, report_handlers
from ._observability.introspection import mount_endpoints
from .middleware import EventBusMiddleware

__all__ = ["PLUGIN_PATH", "EventBusPlugin"]


class EventBusPlugin(BasePlugin):
    """The event bus as a fastapi-opinionated plugin.

    Enable it with ``fastapi-opinionated plugins enable
    fastapi_opinionated_eventbus.plugin.EventBusPlugin`` and configure it before
    ``App.create()`` with ``App.configurePlugin(EventBusPlugin(), **options)``.
    """

    public_name = "eventbus"
    command_name = "eventbus.enable"

    def __init__(self) -> None:
        if PluginRegistry.metadata_scanning:
            # The core's CLI (`list handlers`) instantiates enabled plugins just before it
            # imports app/domains, but its console script does not put the app root on
            # sys.path: without this, `import app...` fails when run in an app directory.
            root = os.getcwd()
            if root not in sys.path:
                sys.path.insert(0, root)
        elif App.fastapi is None:
            # Built by the app's code to configure it, before App.create(): if App.create()
            # does not enable it, no hook of ours will ever run to say so.
            check_configured()

    @staticmethod
    @AppCmd("eventbus.enable")
    def _internal(app: Any, fastapi_app: FastAPI, **options: Any) -> EventBus:
        # The app's dependency_overrides serve the handlers' dependencies too (tests swap a
        # dependency once, for routes and handlers alike).
        bus = EventBus(
            app_name=fastapi_app.title, dependency_overrides_provider=fastapi_app, **options
        )
        fastapi_app.add_middleware(EventBusMiddleware, bus=bus)
        mount_endpoints(fastapi_app, bus)
        return bus

    def on_enable(self, app: Any, fastapi_app: FastAPI, plugin_api: Any) -> None:
        # Before the core imports app/domains: handlers are subscribed as their modules load,
        # so an emit between App.create() and startup already reaches them.
        declarations.attach(plugin_api)
        check_domains()

    def on_controllers_loaded(self, app: Any, fastapi_app: FastAPI) -> None:
        bus = _bus_of(app)
        bus.reopen()  # a no-op unless this app's lifespan already ran once
        declarations.attach(bus)
        report_handlers(bus.subscriptions(), distributed=bus.backend.distributed)

    async def on_ready_async(self, app: Any, fastapi_app: FastAPI, plugin_api: Any) -> None:
        await _bus_of(app).start()

    async def on_before_shutdown_async(
        self, app: Any, fastapi_app: FastAPI, plugin_api: Any
    ) -> None:
        await _bus_of(app).shutdown()

    def on_shutdown(self, app: Any, fastapi_app: FastAPI, plugin_api: Any) -> None:
        bus = _bus_of(app)
        declarations.detach(bus)
        bus.close()


def _bus_of(app: Any) -> EventBus:
    bus: EventBus = app.plugin.eventbus
    return bus
