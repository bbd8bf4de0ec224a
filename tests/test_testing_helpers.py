"""The testing module itself: isolation of the core's global state, and event recording."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from fastapi_opinionated.app import App
from fastapi_opinionated.registry.plugin import PluginRegistry
from fastapi_opinionated.registry.plugin_store import PluginRegistryStore
from fastapi_opinionated.routing.registry import RouterRegistry
from support import EXAMPLE_APP, AppDir, Factory

from fastapi_opinionated_eventbus import EventBus, EventBusNotEnabled, eventbus_api
from fastapi_opinionated_eventbus.testing import (
    EventRecorder,
    create_app,
    isolated_core,
    running,
)

HANDLERS = """
    from fastapi_opinionated_eventbus import OnInternalEvent

    calls = []


    @OnInternalEvent("user.created")
    async def welcome(user_id):
        calls.append(user_id)
"""


def _snapshot() -> dict[str, Any]:
    return {
        "fastapi": App.fastapi,
        "app_plugin": App.plugin,
        "registry_plugin": PluginRegistry.plugin,
        "instances": PluginRegistry._plugin_instances,
        "config": PluginRegistry._plugin_config,
        "store": PluginRegistryStore.registries,
        "store_content": {k: dict(v) for k, v in PluginRegistryStore.registries.items()},
        "controllers": RouterRegistry.controllers,
        "function_routes": RouterRegistry.function_routes,
        "metadata_scanning": PluginRegistry.metadata_scanning,
        "cwd": os.getcwd(),
        "sys_path": list(sys.path),
        "app_modules": sorted(m for m in sys.modules if m == "app" or m.startswith("app.")),
    }


def test_isolated_core_restores_everything_even_when_the_block_raises(app_dir: AppDir) -> None:
    root = app_dir({"users/handlers.py": HANDLERS}).resolve()
    before = _snapshot()

    with pytest.raises(RuntimeError, match="boom"), isolated_core(root):
        # Inside: a fresh, empty core, the app dir as cwd and on sys.path.
        assert App.plugin is not before["app_plugin"]
        assert PluginRegistryStore.registries == {}
        assert Path.cwd() == root
        assert sys.path[0] == str(root)
        create_app(root)
        assert isinstance(eventbus_api(), EventBus)
        assert "app.domains.users.handlers" in sys.modules
        assert PluginRegistryStore.registries["eventbus"]["handlers"]
        raise RuntimeError("boom")

    after = _snapshot()
    for key in ("fastapi", "app_plugin", "registry_plugin", "instances", "config", "store"):
        assert after[key] is before[key], key
    for key in (
        "store_content",
        "controllers",
        "function_routes",
        "metadata_scanning",
        "cwd",
        "sys_path",
        "app_modules",
    ):
        assert after[key] == before[key], key
    assert "app.domains.users.handlers" not in sys.modules


def test_isolated_core_gives_each_block_its_own_app(app_dir: AppDir) -> None:
    first, second = app_dir({"users/handlers.py": HANDLERS}), app_dir({})
    with isolated_core(first):
        create_app(first)
        first_bus = eventbus_api()
    with isolated_core(second):
        with pytest.raises(EventBusNotEnabled):
            eventbus_api()  # nothing leaks from the first block
        create_app(second)
        assert eventbus_api() is not first_bus


def test_create_app_refuses_an_app_dir_that_does_not_enable_the_plugin(app_dir: AppDir) -> None:
    root = app_dir({"users/handlers.py": HANDLERS}, enable=False)
    with isolated_core(root), pytest.raises(RuntimeError, match="does not enable the EventBus"):
        create_app(root)


async def test_event_recorder_records_emitted_names_in_order(
    app_dir: AppDir,
    eventbus_app_factory: Factory,
    eventbus_recorder: Callable[..., Any],
) -> None:
    app = eventbus_app_factory(app_dir({"users/handlers.py": HANDLERS}))
    async with running(app):
        bus = eventbus_api()
        await bus.emit("before.recording")
        with eventbus_recorder() as events:
            await bus.emit("user.created", 1)
            await bus.emit("nobody.listens", x=1)  # recorded though no handler runs
            bus.emit_nowait("user.created", 2)
            await bus.emit("user.deleted", 1)
        assert await bus.drain(5) == 0
        await bus.emit("after.recording")

    assert isinstance(events, EventRecorder)
    assert events.names() == ["user.created", "nobody.listens", "user.created", "user.deleted"]
    assert len(events) == 4
    assert [e.args for e in events.named("user.created")] == [(1,), (2,)]
    assert events.named("nobody.listens")[0].kwargs == {"x": 1}
    assert [e.name for e in events] == events.names()


async def test_event_recorder_on_an_explicit_bus(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    app = eventbus_app_factory(app_dir({"users/handlers.py": HANDLERS}))
    recorder = EventRecorder()
    async with running(app):
        bus = eventbus_api()
        with recorder.recording(bus) as recording:
            assert recording is recorder
            await bus.emit("a")
            await bus.emit("b")
            await bus.emit("a")
        await bus.emit("c")
    assert recorder.names() == ["a", "b", "a"]


def test_readme_recipe_recorder_with_testclient_on_the_example_app(
    eventbus_app_factory: Factory,
    eventbus_recorder: Callable[..., Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EXAMPLE_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'users.db'}")
    app = eventbus_app_factory(EXAMPLE_APP, main="main:app")
    try:
        with TestClient(app) as client, eventbus_recorder() as events:
            client.post("/users/", json={"name": "Jane", "email": "j@example.com"})
            # user.created goes through the outbox: recorded when dispatched, just after
            # the commit, so wait for its handlers.
            deadline = time.monotonic() + 15
            while len(client.get("/users/activity").json()) < 2:
                assert time.monotonic() < deadline, "user.created was not dispatched"
                time.sleep(0.02)
    finally:
        sys.modules.pop("main", None)
    assert events.names() == ["user.created"]
    [event] = events
    assert event.args[0]["name"] == "Jane"
