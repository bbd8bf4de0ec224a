"""The example app: `uvicorn main:app` from this directory (see the README)."""

from __future__ import annotations

from importlib.util import find_spec
from typing import Any

from fastapi_opinionated.app import App

from fastapi_opinionated_eventbus import EventBusPlugin

options: dict[str, Any] = {"introspection_path": "/_eventbus"}
if find_spec("prometheus_client") is not None:  # the [prometheus] extra is installed
    options |= {"metrics": "prometheus", "metrics_path": "/metrics"}

# Options may also come from EVENTBUS_* environment variables (explicit ones win).
App.configurePlugin(EventBusPlugin(), **options)

app = App.create(title="EventBus example")
