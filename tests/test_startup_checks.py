"""The first run, as a new user gets it wrong: the plugin configured but never enabled, the
app started outside its root. The core says nothing in either case; the bus must."""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from fastapi_opinionated.app import App
from support import USERS_APP, AppDir, Factory, strip_ansi, uvicorn

from fastapi_opinionated_eventbus import EventBusNotEnabled, eventbus_api
from fastapi_opinionated_eventbus.plugin import EventBusPlugin
from fastapi_opinionated_eventbus.testing import isolated_core

ENABLE = "fastapi-opinionated plugins enable fastapi_opinionated_eventbus.plugin.EventBusPlugin"

MAIN = """
from fastapi_opinionated.app import App

from fastapi_opinionated_eventbus import EventBusPlugin

App.configurePlugin(EventBusPlugin())
app = App.create(title="Users")
"""


def messages(caplog: pytest.LogCaptureFixture, level: str) -> list[str]:
    return [strip_ansi(r.getMessage()) for r in caplog.records if r.levelname == level]


def users_app(app_dir: AppDir, *, enable: bool) -> Path:
    return app_dir(USERS_APP, enable=enable)


def test_configured_but_not_enabled_warns_with_the_command(
    app_dir: AppDir, caplog: pytest.LogCaptureFixture
) -> None:
    root = users_app(app_dir, enable=False)
    with isolated_core(root):
        App.configurePlugin(EventBusPlugin())
        App.create()

    [warning] = messages(caplog, "WARNING")
    assert warning.startswith(
        f"EventBusPlugin is configured but not enabled: "
        f"{root.resolve() / '.fastapi_opinionated' / 'enabled_plugins.py'} does not list "
        "fastapi_opinionated_eventbus.plugin.EventBusPlugin, so App.create() will not enable it"
    )
    assert f"Fix: run `{ENABLE}` in the app's root directory" in warning


def test_an_emitting_route_that_fails_names_the_exception_and_the_fix(
    app_dir: AppDir, caplog: pytest.LogCaptureFixture
) -> None:
    root = users_app(app_dir, enable=False)
    with isolated_core(root):
        App.configurePlugin(EventBusPlugin())
        app = App.create()
        with TestClient(app, raise_server_exceptions=False) as client:
            first = client.post("/users/")
            second = client.post("/users/")

        with pytest.raises(EventBusNotEnabled) as raised:
            eventbus_api()

    assert (first.status_code, second.status_code) == (500, 500)
    # The server's own log line names no exception: the bus's does, once per app.
    [error] = messages(caplog, "ERROR")
    assert error.startswith("eventbus_api(): EventBusNotEnabled: The EventBus plugin is not")
    assert f"run `{ENABLE}` in the app's root directory" in error
    assert f"here {root.resolve()})" in error
    assert f"run `{ENABLE}`" in str(raised.value)


def test_enabled_app_logs_its_handlers_at_startup(
    app_dir: AppDir, eventbus_app_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    root = users_app(app_dir, enable=True)
    app = eventbus_app_factory(root)
    with TestClient(app):
        pass

    assert (
        "2 handler(s) subscribed to 2 event name(s) or pattern(s), from "
        f"app.domains.users.handlers (app root {root.resolve()})"
    ) in messages(caplog, "INFO")
    assert messages(caplog, "WARNING") == []


def test_enabled_app_without_domains_warns_at_create_and_at_startup(
    tmp_path: Path, eventbus_app_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "bare"
    (root / ".fastapi_opinionated").mkdir(parents=True)
    (root / ".fastapi_opinionated" / "enabled_plugins.py").write_text(
        "ENABLED_PLUGINS = ['fastapi_opinionated_eventbus.plugin.EventBusPlugin']\n"
    )
    app = eventbus_app_factory(root)
    created = messages(caplog, "WARNING")
    with TestClient(app):
        pass

    assert created == [
        f"No app/domains directory in the current directory ({root.resolve()}): App.create() "
        "imports the app's handlers and controllers from there, so none will be found "
        "(routes answer 404, emits reach no handler). Start the app from its root "
        "directory: uvicorn's --app-dir changes the import path, not the current directory."
    ]
    assert messages(caplog, "WARNING")[1:] == [
        f"No @OnInternalEvent handler is subscribed (none was found in "
        f"{root.resolve() / 'app' / 'domains'}): every emit will reach no handler. Start the "
        "app from its root directory."
    ]


def test_uvicorn_app_dir_from_elsewhere_says_what_is_wrong(app_dir: AppDir, tmp_path: Path) -> None:
    """`uvicorn --app-dir <root> main:app` run from another directory: the core reads the
    enabled plugins and imports app/domains relative to the current directory."""
    root = users_app(app_dir, enable=True)
    (root / "main.py").write_text(textwrap.dedent(MAIN))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    log = tmp_path / "uvicorn.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTBUS_")}
    with (
        uvicorn(elsewhere, "--app-dir", str(root), "main:app", log=log, env=env) as url,
        httpx.Client(base_url=url, timeout=5) as client,
    ):
        deadline = time.monotonic() + 30
        while True:
            try:
                status = client.post("/users/").status_code
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)  # polling interval, not synchronisation

    output = strip_ansi(log.read_text())
    assert status == 404  # what the user sees; the log now says why
    assert f"No app/domains directory in the current directory ({elsewhere})" in output
    assert (
        f"EventBusPlugin is configured but not enabled: "
        f"{elsewhere / '.fastapi_opinionated' / 'enabled_plugins.py'} does not list"
    ) in output
