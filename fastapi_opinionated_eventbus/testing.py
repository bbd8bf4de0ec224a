"""Test helpers: fresh fastapi-opinionated apps with the bus, and recording of events.

The core keeps class-level global state and reads ``.fastapi_opinionated/enabled_plugins.py``
from the current directory, so building several apps in one test process needs care.
This module does it for you. Its fixtures, ``eventbus_app_factory`` and
``eventbus_recorder``, come with the package's pytest plugin (loaded automatically through
the ``pytest11`` entry point; see ``pytest_fastapi_opinionated_eventbus``)::

    def test_signup(eventbus_app_factory, eventbus_recorder):
        app = eventbus_app_factory("../app_root")  # relative to this test file's directory
        with TestClient(app) as client, eventbus_recorder() as events:
            client.post("/users", json={"name": "Jane"})
        assert events.names() == ["user.created"]

Outside pytest, use :func:`isolated_core`, :func:`create_app`, :func:`running`,
:func:`started_bus` and :class:`EventRecorder` directly.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi_opinionated.app import App
from fastapi_opinionated.registry.plugin import PluginRegistry
from fastapi_opinionated.registry.plugin_store import PluginRegistryStore
from fastapi_opinionated.routing.registry import RouterRegistry

# The fixtures live in the pytest plugin module, which must not import this package when
# pytest loads it; re-exported here for those who import them by name.
from pytest_fastapi_opinionated_eventbus import eventbus_app_factory, eventbus_recorder

from ._core import declarations
from ._core.api import eventbus_api
from ._core.bus import EventBus
from ._core.enablement import ENABLE_COMMAND, ENABLED_FILE
from ._core.envelope import EventEnvelope
from .plugin import PLUGIN_PATH, EventBusPlugin

__all__ = [
    "EventRecorder",
    "create_app",
    "eventbus_app_factory",
    "eventbus_recorder",
    "isolated_core",
    "load_app",
    "running",
    "started_bus",
]


def _empty_namespace() -> Any:
    return type("Plugins", (), {})()


def _app_modules() -> list[str]:
    return [name for name in sys.modules if name == "app" or name.startswith("app.")]


@contextmanager
def isolated_core(app_dir: str | os.PathLike[str] | None = None) -> Iterator[None]:
    """Give the block an empty core state (and ``app_dir`` as the current directory, on
    ``sys.path``); restore everything as it was afterwards, even on failure.

    ``App._cmd_handlers`` is kept: plugins register their enable command once, at import.
    """
    saved = {
        "fastapi": App.fastapi,
        "app_plugin": App.plugin,
        "registry_plugin": PluginRegistry.plugin,
        "metadata_scanning": PluginRegistry.metadata_scanning,
        "instances": PluginRegistry._plugin_instances,
        "config": PluginRegistry._plugin_config,
        "store": PluginRegistryStore.registries,
        "controllers": RouterRegistry.controllers,
        "function_routes": RouterRegistry.function_routes,
        "cwd": os.getcwd(),
        "sys_path": list(sys.path),
        "modules": {name: sys.modules[name] for name in _app_modules()},
    }
    for name in _app_modules():
        del sys.modules[name]
    App.fastapi = None
    App.plugin = _empty_namespace()
    PluginRegistry.plugin = _empty_namespace()
    PluginRegistry.metadata_scanning = False
    PluginRegistry._plugin_instances = {}
    PluginRegistry._plugin_config = {}
    PluginRegistryStore.registries = {}
    RouterRegistry.controllers = []
    RouterRegistry.function_routes = []
    declarations.detach()
    if app_dir is not None:
        root = str(Path(app_dir).resolve())
        os.chdir(root)
        sys.path.insert(0, root)
    try:
        yield
    finally:
        declarations.detach()
        for name in _app_modules():
            del sys.modules[name]
        sys.modules.update(saved["modules"])
        sys.path[:] = saved["sys_path"]
        os.chdir(saved["cwd"])
        App.fastapi = saved["fastapi"]
        App.plugin = saved["app_plugin"]
        PluginRegistry.plugin = saved["registry_plugin"]
        PluginRegistry.metadata_scanning = saved["metadata_scanning"]
        PluginRegistry._plugin_instances = saved["instances"]
        PluginRegistry._plugin_config = saved["config"]
        PluginRegistryStore.registries = saved["store"]
        RouterRegistry.controllers = saved["controllers"]
        RouterRegistry.function_routes = saved["function_routes"]


def _check_enabled(app_dir: Path) -> None:
    enabled = app_dir / ENABLED_FILE
    text = enabled.read_text() if enabled.exists() else ""
    if PLUGIN_PATH not in text:
        raise RuntimeError(
            f"{app_dir} does not enable the EventBus plugin: {enabled} must list "
            f"{PLUGIN_PATH!r}. Run `{ENABLE_COMMAND}` there."
        )


def create_app(
    app_dir: str | os.PathLike[str], plugin_options: dict[str, Any] | None = None, **fastapi: Any
) -> FastAPI:
    """``App.configurePlugin(EventBusPlugin(), **plugin_options)`` then ``App.create()`` in
    ``app_dir``. Call it inside :func:`isolated_core` (the fixture does)."""
    _check_enabled(Path(app_dir))
    App.configurePlugin(EventBusPlugin(), **(plugin_options or {}))
    app: FastAPI = App.create(**fastapi)
    return app


def load_app(app_dir: str | os.PathLike[str], target: str = "main:app") -> FastAPI:
    """Import the app object an app's own module builds (``"main:app"``), inside
    :func:`isolated_core`."""
    _check_enabled(Path(app_dir))
    module_name, _, attribute = target.partition(":")
    sys.modules.pop(module_name, None)
    module = importlib.import_module(module_name)
    app: FastAPI = getattr(module, attribute or "app")
    return app


@asynccontextmanager
async def started_bus(**options: Any) -> AsyncIterator[EventBus]:
    """A standalone, started ``EventBus(**options)`` (no app), closed on exit: for unit
    tests of handlers and of code that emits."""
    bus = EventBus(**options)
    await bus.start()
    try:
        yield bus
    finally:
        await bus.aclose(timeout=1)


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[FastAPI]:
    """Run the app's lifespan (startup, then shutdown on exit) without a server: the
    async counterpart of ``with TestClient(app):``, for use with httpx's ASGITransport."""
    async with app.router.lifespan_context(app):
        yield app


class EventRecorder:
    """The envelopes emitted on a bus while recording (at emit time, in order)."""

    def __init__(self) -> None:
        self.events: list[EventEnvelope] = []

    def __call__(self, envelope: EventEnvelope) -> None:
        self.events.append(envelope)

    def names(self) -> list[str]:
        return [event.name for event in self.events]

    def named(self, name: str) -> list[EventEnvelope]:
        return [event for event in self.events if event.name == name]

    def __len__(self) -> int:
        return len(self.events)

    def __iter__(self) -> Iterator[EventEnvelope]:
        return iter(self.events)

    @contextmanager
    def recording(self, bus: EventBus | None = None) -> Iterator[EventRecorder]:
        with (bus or eventbus_api()).tap(self):
            yield self
