"""The plugin through the real core: the README's quick start, its identity, its options,
and what ``eventbus_api()`` says when the plugin is not enabled."""

from __future__ import annotations

import importlib
import textwrap

import pytest
from fastapi.testclient import TestClient
from fastapi_opinionated.app import App
from fastapi_opinionated.shared.base_plugin import BasePlugin
from fastapi_opinionated.utils.import_string import import_string
from support import AppDir, Factory

import fastapi_opinionated_eventbus
from fastapi_opinionated_eventbus import (
    ConfigurationError,
    EventBus,
    EventBusError,
    EventBusNotEnabled,
    eventbus_api,
)
from fastapi_opinionated_eventbus.plugin import EventBusPlugin
from fastapi_opinionated_eventbus.testing import isolated_core, running

PLUGIN_PATH = "fastapi_opinionated_eventbus.plugin.EventBusPlugin"

# ---------------------------------------------------------------- quick start

QUICK_START_MAIN = """
    from fastapi_opinionated.app import App

    from fastapi_opinionated_eventbus import EventBusPlugin, eventbus_api

    # Configure the plugin before creating the app
    App.configurePlugin(EventBusPlugin())

    # Create your application
    app = App.create(title="My API with EventBus")


    @app.post("/users")
    async def create_user(user: dict):
        user_data = {"id": 1, "name": "Jane Doe", **user}
        result = await eventbus_api().emit("user.created", user_data)
        return {**user_data, "handlers_run": result.handled}


    @app.put("/users/1")
    async def update_user(user: dict):
        await eventbus_api().emit("user.updated", user)
        return user
"""

QUICK_START_HANDLERS = """
    import threading

    from fastapi_opinionated_eventbus import OnInternalEvent

    seen = []


    @OnInternalEvent("user.created")
    async def handle_user_created(user_data: dict):
        seen.append(("created", user_data))


    @OnInternalEvent("user.updated")
    def handle_user_updated(user_data: dict):
        seen.append(("updated", user_data, threading.current_thread().name))
"""


def test_quick_start_route_emits_and_the_handlers_ran(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    root = app_dir({"users/handlers.py": QUICK_START_HANDLERS})
    (root / "main.py").write_text(textwrap.dedent(QUICK_START_MAIN))
    app = eventbus_app_factory(root, main="main:app")
    handlers = importlib.import_module("app.domains.users.handlers")

    assert app.title == "My API with EventBus"
    with TestClient(app) as client:
        created = client.post("/users", json={"email": "jane@example.com"})
        updated = client.put("/users/1", json={"name": "Jane D."})

    assert created.status_code == 200
    user = {"id": 1, "name": "Jane Doe", "email": "jane@example.com"}
    assert created.json() == {**user, "handlers_run": 1}
    assert updated.status_code == 200
    assert handlers.seen[0] == ("created", user)
    kind, data, thread_name = handlers.seen[1]
    assert (kind, data) == ("updated", {"name": "Jane D."})
    assert thread_name != "MainThread"
    assert len(handlers.seen) == 2


async def test_app_create_exposes_the_bus_as_app_plugin_eventbus(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    eventbus_app_factory(app_dir({"users/handlers.py": QUICK_START_HANDLERS}))
    bus = eventbus_api()
    assert isinstance(bus, EventBus)
    assert App.plugin.eventbus is bus


# ---------------------------------------------------------------- identity


def test_plugin_is_importable_from_its_module_and_the_package_root() -> None:
    assert fastapi_opinionated_eventbus.EventBusPlugin is EventBusPlugin
    # The path the CLI writes and the core imports (and looks the config up by).
    assert import_string(PLUGIN_PATH) is EventBusPlugin
    assert f"{EventBusPlugin.__module__}.{EventBusPlugin.__name__}" == PLUGIN_PATH


def test_plugin_names_and_base_class() -> None:
    assert EventBusPlugin.public_name == "eventbus"
    assert EventBusPlugin.command_name == "eventbus.enable"
    assert issubclass(EventBusPlugin, BasePlugin)
    assert isinstance(EventBusPlugin(), BasePlugin)
    # The enable command is registered with the core when the plugin module is imported.
    assert "eventbus.enable" in App._cmd_handlers


# ---------------------------------------------------------------- options

HANDLERS = """
    from fastapi_opinionated_eventbus import OnInternalEvent


    @OnInternalEvent("ping")
    async def pong():
        pass
"""


def test_unknown_option_is_a_configuration_error_at_app_create(app_dir: AppDir) -> None:
    root = app_dir({"misc/handlers.py": HANDLERS})
    with isolated_core(root):
        App.configurePlugin(EventBusPlugin(), nope=1)
        with pytest.raises(ConfigurationError, match=r"Unknown EventBusPlugin option.*'nope'"):
            App.create()


def test_unknown_option_error_lists_the_valid_options(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    with pytest.raises(ConfigurationError) as info:
        eventbus_app_factory(app_dir({"misc/handlers.py": HANDLERS}), nope=1, strictt=True)
    message = str(info.value)
    assert "'nope'" in message and "'strictt'" in message
    assert "max_pending" in message and "strict" in message
    assert isinstance(info.value, ValueError) and isinstance(info.value, EventBusError)


@pytest.mark.parametrize(
    ("option", "value"),
    [("max_pending", -1), ("max_pending", 0), ("shutdown_timeout", -5), ("strict", "maybe")],
)
def test_invalid_option_value_is_a_configuration_error_naming_it(
    app_dir: AppDir, option: str, value: object
) -> None:
    root = app_dir({"misc/handlers.py": HANDLERS})
    with isolated_core(root):
        App.configurePlugin(EventBusPlugin(), **{option: value})
        with pytest.raises(ConfigurationError, match=rf"'{option}'.*{value!r}"):
            App.create()


async def test_valid_options_reach_the_bus(app_dir: AppDir, eventbus_app_factory: Factory) -> None:
    app = eventbus_app_factory(app_dir({"misc/handlers.py": HANDLERS}), strict=True, max_pending=7)
    async with running(app):
        settings = eventbus_api().settings
    assert settings.strict is True
    assert settings.max_pending == 7


# ---------------------------------------------------------------- not enabled


def _assert_says_how_to_enable(error: EventBusNotEnabled) -> None:
    message = str(error)
    assert f"fastapi-opinionated plugins enable {PLUGIN_PATH}" in message
    assert "App.configurePlugin" in message


def test_eventbus_api_before_any_app_raises_not_enabled_with_instructions() -> None:
    with isolated_core(), pytest.raises(EventBusNotEnabled) as info:
        eventbus_api()
    _assert_says_how_to_enable(info.value)
    assert isinstance(info.value, RuntimeError)


def test_eventbus_api_when_configured_but_not_enabled_by_the_cli(app_dir: AppDir) -> None:
    # configurePlugin alone does not enable a plugin: the enabled_plugins file must list it.
    root = app_dir({"misc/handlers.py": HANDLERS}, enable=False)
    with isolated_core(root):
        App.configurePlugin(EventBusPlugin())
        App.create()
        with pytest.raises(EventBusNotEnabled) as info:
            eventbus_api()
    _assert_says_how_to_enable(info.value)
