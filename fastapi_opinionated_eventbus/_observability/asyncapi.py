"""The catalog as an AsyncAPI 3.0.0 document.

One channel per event name (``address`` is the name) or pattern (``address`` null: no
single address, ``x-eventbus-pattern`` says which names it matches); one message per
channel, its payload from :mod:`.payloads`, the event id and correlation id as headers;
a ``receive`` operation per handler and a ``send`` operation per literal emit site. What
AsyncAPI has no field for (priority, retry, timeout, broadcast, file:line) is in ``x-eventbus-*``
extensions. Ids are the names with every character outside ``[A-Za-z0-9._-]`` replaced,
made unique.
"""

from __future__ import annotations

import json
import re
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from .payloads import describe_payloads

if TYPE_CHECKING:
    from .._cli.scan import Site
    from ..backends.base import ServerInfo
    from .catalog import Catalog, EventEntry, HandlerEntry

__all__ = ["ASYNCAPI_VERSION", "asyncapi_document", "dump_document"]

ASYNCAPI_VERSION = "3.0.0"
_HEADERS = "eventbus.EventHeaders"  # a dot: never one of Pydantic's definition names
_CORRELATION = "eventbus.correlationId"
_NOT_AN_ID = re.compile(r"[^A-Za-z0-9._-]+")


class _Ids:
    """Safe, unique keys for channels, messages and operations."""

    def __init__(self) -> None:
        self._taken: set[str] = set()

    def make(self, *parts: str) -> str:
        base = ".".join(_NOT_AN_ID.sub("_", part).strip("_") or "_" for part in parts)
        key, n = base, 1
        while key in self._taken:
            n += 1
            key = f"{base}_{n}"
        self._taken.add(key)
        return key


def asyncapi_document(catalog: Catalog) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document of ``catalog`` (JSON-ready)."""
    payloads, definitions = describe_payloads(catalog.events, "#/components/schemas/{model}")
    ids = _Ids()
    channels: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for event in catalog.events:
        channel_id = ids.make(event.name)
        messages[channel_id] = _message(event, payloads[event.name])
        channels[channel_id] = _channel(event, channel_id, catalog)
        message_ref = {"$ref": f"#/channels/{channel_id}/messages/{channel_id}"}
        for handler in event.handlers:
            key = ids.make(channel_id, "receive", handler.subscription.name)
            operations[key] = _receive(handler, channel_id, message_ref)
        for site in event.emit_sites:
            key = ids.make(channel_id, "send", site.file, str(site.line))
            operations[key] = _send(site, channel_id, message_ref)
    document: dict[str, Any] = {
        "asyncapi": ASYNCAPI_VERSION,
        "info": _info(catalog),
        "defaultContentType": "application/json",
    }
    if catalog.servers:
        document["servers"] = {server["name"]: _server(server) for server in catalog.servers}
    document |= {
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": {**definitions, _HEADERS: _headers_schema()},
            "messages": messages,
            "correlationIds": {
                _CORRELATION: {
                    "description": "Shared by every event of one request, and by the events "
                    "its handlers emit in turn.",
                    "location": "$message.header#/correlation_id",
                }
            },
        },
        "x-eventbus": _extension(catalog),
    }
    return document


def _info(catalog: Catalog) -> dict[str, Any]:
    return {
        "title": catalog.title,
        "version": catalog.version,
        "description": (
            f"The events of {catalog.title}, through the {catalog.backend} backend: one "
            "channel per event name or subscribed pattern; a receive operation per handler, "
            "a send operation per place the code emits the name as a literal. A typed "
            "event's payload is its model; another event's payload is the array of "
            "positional arguments emit() passes after the name, as its handlers annotate "
            "them (the empty schema when none does)."
        ),
    }


def _server(server: ServerInfo) -> dict[str, Any]:
    described: dict[str, Any] = {"host": server["host"], "protocol": server["protocol"]}
    if "pathname" in server:
        described["pathname"] = server["pathname"]
    described["description"] = server["description"]
    return described


def _channel(event: EventEntry, channel_id: str, catalog: Catalog) -> dict[str, Any]:
    channel: dict[str, Any] = {
        "address": None if event.is_pattern else event.name,
        "title": event.name,
        "description": _channel_description(event, catalog),
        "messages": {channel_id: {"$ref": f"#/components/messages/{channel_id}"}},
    }
    if event.is_pattern:
        channel["x-eventbus-pattern"] = event.name
    if event.patterns:
        channel["x-eventbus-also-handled-by"] = event.patterns
    return channel


def _channel_description(event: EventEntry, catalog: Catalog) -> str:
    if event.is_pattern:
        lines = [
            f"A pattern subscription (shell-style, case-sensitive; * also matches dots): "
            f"its {len(event.handlers)} handler(s) run for every event name it matches."
        ]
    else:
        lines = [f"Handled here by {len(event.handlers)} handler(s)."]
        if event.patterns:
            lines.append(f"Also handled by the pattern(s) {', '.join(event.patterns)}.")
    if catalog.scan is not None and not event.is_pattern:
        lines.append(f"Emitted as a literal at {len(event.emit_sites)} place(s) in the code.")
    return " ".join(lines)


def _message(event: EventEntry, payload: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {
        "name": event.name,
        "title": event.name,
        "contentType": "application/json",
        "headers": {"$ref": f"#/components/schemas/{_HEADERS}"},
        "correlationId": {"$ref": f"#/components/correlationIds/{_CORRELATION}"},
        "payload": payload,
    }
    if event.schema is not None:
        message["summary"] = f"Typed event {event.schema.__qualname__}."
        message["x-eventbus-schema"] = event.schema_name
    elif payload:
        message["summary"] = "The positional arguments of emit(), as the handlers annotate them."
    else:
        message["summary"] = (
            "No typed schema and no annotated handler: the payload is not described."
        )
    return message


def _receive(handler: HandlerEntry, channel_id: str, message: dict[str, str]) -> dict[str, Any]:
    sub = handler.subscription
    retry = "no retry" if sub.retry is None else f"up to {sub.retry.max_attempts} attempts"
    timeout = "no timeout" if sub.timeout is None else f"timeout {sub.timeout}s"
    kind = "async handler" if sub.is_async else "sync handler (worker thread)"
    broadcast = ", broadcast (every process)" if sub.broadcast else ""
    operation: dict[str, Any] = {
        "action": "receive",
        "channel": {"$ref": f"#/channels/{channel_id}"},
        "messages": [message],
        "title": sub.name,
        "summary": f"{kind}, priority {sub.priority}, {retry}, {timeout}{broadcast}",
        "x-eventbus-handler": handler.to_json(),
    }
    if handler.location is not None:
        operation["description"] = f"Defined at {handler.location}."
    return operation


def _send(site: Site, channel_id: str, message: dict[str, str]) -> dict[str, Any]:
    return {
        "action": "send",
        "channel": {"$ref": f"#/channels/{channel_id}"},
        "messages": [message],
        "title": f"emit at {site.location}",
        "x-eventbus-emit-site": {"file": site.file, "line": site.line},
    }


def _headers_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "What every event carries besides its payload "
        "(current_event() in a handler).",
        "properties": {
            "event_id": {
                "type": "string",
                "description": "Unique, and the same on every delivery of the event: the key "
                "for idempotent handlers (current_event().id).",
            },
            "correlation_id": {
                "type": "string",
                "description": "The request's valid X-Correlation-ID or X-Request-ID (or a "
                "generated one) while a request is served, inherited by the events handlers "
                "emit; else the root event's id (current_event().correlation_id).",
            },
        },
        "required": ["event_id", "correlation_id"],
    }


def _extension(catalog: Catalog) -> dict[str, Any]:
    return {
        "generator": f"fastapi-opinionated-eventbus {_installed_version()}",
        "backend": catalog.backend,
        "scan": None if catalog.scan is None else catalog.scan.to_json(),
    }


def dump_document(document: dict[str, Any], *, as_yaml: bool) -> str:
    """The document as JSON (indented) or YAML text, in the order it was built."""
    if as_yaml:
        import yaml

        text: str = yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)
        return text
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def _installed_version() -> str:
    try:
        return version("fastapi-opinionated-eventbus")
    except PackageNotFoundError:  # pragma: no cover - a source checkout not installed
        return "(not installed)"
