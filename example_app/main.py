"""The example app: `uvicorn main:app` from this directory (see the README)."""

from __future__ import annotations

from fastapi_opinionated.app import App

from fastapi_opinionated_eventbus import EventBusPlugin

# Options may also come from EVENTBUS_* environment variables.
App.configurePlugin(EventBusPlugin())

app = App.create(title="EventBus example")
