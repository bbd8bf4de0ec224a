"""The event catalog's live page: ``<introspection_path>/ui``.

A static HTML page, a script and a stylesheet shipped in ``static/`` (no build step, no
CDN: it works offline), served by the plugin. The script reads the introspection endpoint
every few seconds and builds the page with ``textContent`` only, so names and schemas
are always shown as text; a strict Content-Security-Policy forbids any other script,
style or connection. The page itself holds no data: it is the same for every app.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib.resources import files
from typing import Any

from fastapi.responses import Response

from .catalog import Catalog
from .payloads import describe_payloads, self_contained

__all__ = ["PAGE_HEADERS", "catalog_json", "mount_page"]

Route = Callable[[str, Callable[[], Awaitable[Response]], str], None]
"""Adds a GET route (path, endpoint, name) with the plugin's dependencies."""

_STATIC = files(__package__) / "static"
_ASSETS = {
    "catalog.js": "text/javascript; charset=utf-8",
    "catalog.css": "text/css; charset=utf-8",
}

PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def mount_page(route: Route, introspection_path: str) -> None:
    """The page at ``<introspection_path>/ui`` and its two assets beside it (the page
    links them relatively, so it works under any root path)."""
    base = f"{introspection_path}/ui"
    route(base, _serve((_STATIC / "catalog.html").read_bytes(), "text/html; charset=utf-8"), "ui")
    for name, media_type in _ASSETS.items():
        route(f"{base}/{name}", _serve((_STATIC / name).read_bytes(), media_type), name)


def _serve(body: bytes, media_type: str) -> Callable[[], Awaitable[Response]]:
    async def endpoint() -> Response:
        return Response(body, media_type=media_type, headers=PAGE_HEADERS)

    return endpoint


def catalog_json(catalog: Catalog) -> dict[str, Any]:
    """The catalog as the page reads it: each event with a self-contained payload schema."""
    payloads, definitions = describe_payloads(catalog.events, "#/$defs/{model}")
    return {
        "backend": catalog.backend,
        "servers": [dict(server) for server in catalog.servers],
        "scan": None if catalog.scan is None else catalog.scan.to_json(),
        "events": [
            {
                "name": event.name,
                "pattern": event.is_pattern,
                "schema": event.schema_name,
                "payload": self_contained(payloads[event.name], definitions),
                "handlers": [handler.to_json() for handler in event.handlers],
                "emit_sites": [site.location for site in event.emit_sites],
                "also_handled_by": event.patterns,
            }
            for event in catalog.events
        ],
    }
