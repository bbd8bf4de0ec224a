"""The example app: `uvicorn main:app` from this directory (see the README)."""

from __future__ import annotations

from importlib.util import find_spec
from typing import Any

from app.domains.user.storage import create_tables, database_url
from fastapi_opinionated.app import App

from fastapi_opinionated_eventbus import EventBusPlugin

create_tables()
# The users' database is also the outbox: user.created is written in the same transaction.
# /_eventbus is the bus as JSON, /_eventbus/ui the live event catalog, /asyncapi.json the
# AsyncAPI document of the app's events (see the README's "Event catalog" to protect them).
options: dict[str, Any] = {
    "introspection_path": "/_eventbus",
    "asyncapi_path": "/asyncapi.json",
    "outbox_url": database_url(),
}
if find_spec("prometheus_client") is not None:  # the [prometheus] extra is installed
    options |= {"metrics": "prometheus", "metrics_path": "/metrics"}

# Options may also come from EVENTBUS_* environment variables (explicit ones win).
App.configurePlugin(EventBusPlugin(), **options)

app = App.create(title="EventBus example")
