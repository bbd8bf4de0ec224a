"""Handlers and schemas declared at import time, and the live bus that takes them.

``@OnInternalEvent`` must work before the plugin exists (domain modules are imported in
any order), so declarations go into the core's ``PluginRegistryStore`` (which also makes
``fastapi-opinionated list handlers --plugin eventbus`` list them). At startup the plugin
attaches its bus: the stored declarations are subscribed, and later ones (a module
imported after startup) go straight to the live bus as well, so none is silently lost.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi_opinionated.registry.plugin_store import PluginRegistryStore

from .registry import Subscription

if TYPE_CHECKING:
    from .bus import EventBus

__all__ = [
    "FORWARDS",
    "PLUGIN_NAME",
    "attach",
    "declare_forward",
    "declare_handler",
    "declare_schema",
    "detach",
]

PLUGIN_NAME = "eventbus"
HANDLERS = "handlers"
SCHEMAS = "schemas"
FORWARDS = "forwards"

_live: EventBus | None = None
# Store entries already given to the live bus: stored and live paths never double up.
_taken: set[int] = set()


def declare_handler(sub: Subscription, schema: Any) -> None:
    # "event" and "handler" are what the core's `list handlers` prints; the subscription
    # carries everything else.
    entry = {"event": sub.event, "handler": sub.handler, "schema": schema, "subscription": sub}
    PluginRegistryStore.add(PLUGIN_NAME, HANDLERS, entry)
    if _live is not None:
        _take(_live, entry)


def declare_schema(event: str, model: Any) -> None:
    entry = {"event": event, "schema": model}
    PluginRegistryStore.add(PLUGIN_NAME, SCHEMAS, entry)
    if _live is not None:
        _take(_live, entry)


def declare_forward(entry: dict[str, Any]) -> None:
    """A ``forward_events(...)`` declaration: ``event``, ``forward`` (the Forward spec),
    ``subscription`` (how the CLI shows it; each bus subscribes its own), ``schema``.
    No ``handler`` key: the core's ``list handlers`` reads functions' code there."""
    PluginRegistryStore.add(PLUGIN_NAME, FORWARDS, entry)
    if _live is not None:
        _take(_live, entry)


def _take(bus: EventBus, entry: dict[str, Any]) -> None:
    if id(entry) in _taken:
        return
    _taken.add(id(entry))
    spec = entry.get("forward")
    if spec is not None:
        bus.add_forward(spec)
        return
    sub = entry.get("subscription")
    if sub is None:
        bus.register_schema(entry["event"], entry["schema"])
    else:
        bus.add(sub, entry.get("schema"))


def attach(bus: EventBus) -> int:
    """Subscribe everything declared so far and route later declarations to ``bus``.

    Idempotent: attaching the live bus again only takes what it has not taken yet.
    """
    global _live
    if _live is not bus:
        detach()
        _live = bus
    store = PluginRegistryStore.get(PLUGIN_NAME)
    entries = [*store.get(SCHEMAS, ()), *store.get(HANDLERS, ()), *store.get(FORWARDS, ())]
    for entry in entries:
        _take(bus, entry)
    return len(store.get(HANDLERS, ()))


def detach(bus: EventBus | None = None) -> None:
    global _live
    if bus is None or _live is bus:
        _live = None
        _taken.clear()
