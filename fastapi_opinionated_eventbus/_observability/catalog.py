"""The event catalog: a model of the app's events, from what the bus knows.

Every event name (or pattern) that a handler subscribes to, that has a typed schema, or
that the code emits as a literal; for each, its handlers with their options and source
lines, its schema, and the places that emit it (the static scan of ``doctor``). The
AsyncAPI document (:mod:`.asyncapi`) and the live page (:mod:`.ui`) are built from it.
"""

from __future__ import annotations

import asyncio
import fnmatch
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._cli.discovery import source_location
from .._cli.scan import Scan, Site, scan_app

if TYPE_CHECKING:
    from fastapi import FastAPI
    from pydantic import BaseModel

    from .._core.bus import EventBus
    from .._core.registry import Subscription
    from ..backends.base import Backend, ServerInfo

__all__ = [
    "MAX_SCANNED_FILES",
    "AppCatalog",
    "Catalog",
    "EventEntry",
    "HandlerEntry",
    "ScanSummary",
    "build_catalog",
    "describe_servers",
    "typed_event_names",
]

MAX_SCANNED_FILES = 2_000
"""The running app's scan reads at most this many files (the CLI reads them all)."""


@dataclass(frozen=True, slots=True)
class HandlerEntry:
    """One subscription, and where its handler is defined."""

    subscription: Subscription
    location: str | None
    """``file:line`` relative to the app root (absolute outside it); None when unknown."""

    def to_json(self) -> dict[str, Any]:
        sub = self.subscription
        return {
            "handler": sub.name,
            "subscription": sub.event,
            "async": sub.is_async,
            "priority": sub.priority,
            "retry": None
            if sub.retry is None
            else {
                "max_attempts": sub.retry.max_attempts,
                "initial_delay": sub.retry.initial_delay,
                "backoff_factor": sub.retry.backoff_factor,
                "max_delay": sub.retry.max_delay,
            },
            "timeout": sub.timeout,
            "broadcast": sub.broadcast,
            "location": self.location,
        }


@dataclass(slots=True)
class EventEntry:
    """An event name, or a pattern that subscriptions use."""

    name: str
    is_pattern: bool
    schema: type[BaseModel] | None = None
    handlers: list[HandlerEntry] = field(default_factory=list)
    emit_sites: list[Site] = field(default_factory=list)
    patterns: list[str] = field(default_factory=list)
    """For a name: the subscribed patterns that match it too (their handlers run as well)."""

    @property
    def schema_name(self) -> str | None:
        """``module:qualname`` of the typed event's model."""
        schema = self.schema
        return None if schema is None else f"{schema.__module__}:{schema.__qualname__}"


@dataclass(frozen=True, slots=True)
class ScanSummary:
    """What the static scan read."""

    files: int
    truncated: bool
    computed: int
    """Emits whose name is an expression: the scan cannot say which event they send."""

    def to_json(self) -> dict[str, Any]:
        return {"files": self.files, "truncated": self.truncated, "computed_names": self.computed}


@dataclass(frozen=True, slots=True)
class Catalog:
    title: str
    version: str
    backend: str
    servers: list[ServerInfo]
    events: list[EventEntry]
    """Names first, then patterns, each sorted."""
    scan: ScanSummary | None
    """None when the code was not scanned (no emit sites are known then)."""


def build_catalog(
    subscriptions: Iterable[Subscription],
    schemas: Mapping[str, type[BaseModel]],
    scan: Scan | None,
    root: Path | None,
    *,
    title: str,
    version: str,
    backend: str,
    servers: list[ServerInfo],
) -> Catalog:
    """The catalog of an app. ``root`` is where handler locations are relative to."""
    entries: dict[str, EventEntry] = {}

    def entry(name: str, is_pattern: bool = False) -> EventEntry:
        found = entries.get(name)
        if found is None:
            found = entries[name] = EventEntry(name, is_pattern)
        return found

    for sub in subscriptions:
        file, line = source_location(sub.handler, root) if root is not None else (None, None)
        location = None if file is None else file if line is None else f"{file}:{line}"
        entry(sub.event, sub.is_pattern).handlers.append(HandlerEntry(sub, location))
    for name, schema in schemas.items():
        entry(name).schema = schema
    for site in scan.emitted if scan is not None else ():
        entry(site.name).emit_sites.append(site)
    patterns = sorted(name for name, event in entries.items() if event.is_pattern)
    for event in entries.values():
        if not event.is_pattern:
            event.patterns = [p for p in patterns if fnmatch.fnmatchcase(event.name, p)]
        event.handlers.sort(key=lambda h: (-h.subscription.priority, h.subscription.name))
    summary = None if scan is None else ScanSummary(scan.files, scan.truncated, len(scan.computed))
    ordered = sorted(entries.values(), key=lambda event: (event.is_pattern, event.name))
    return Catalog(title, version, backend, servers, ordered, summary)


def typed_event_names(schemas: Mapping[str, type[BaseModel]]) -> dict[str, str]:
    """Class name -> event name, so the scan reads ``emit(UserCreated(...))``."""
    return {schema.__name__: name for name, schema in schemas.items()}


def describe_servers(backend: Backend) -> list[ServerInfo]:
    """The backend's servers; none for a backend written before ``describe_servers``."""
    describe: Callable[[], list[ServerInfo]] | None = getattr(backend, "describe_servers", None)
    return [] if describe is None else describe()


class AppCatalog:
    """The catalog of a running app, for the plugin's endpoints.

    The code under ``root`` (the current directory at startup: the app root, as the core
    requires) is scanned once, at the first request that needs it, in a worker thread,
    reading at most :data:`MAX_SCANNED_FILES` files; again only if the typed events change.
    Subscriptions and schemas are read from the bus at every request, so handlers subscribed
    later appear; what is rendered from them is kept until they change.
    """

    def __init__(self, bus: EventBus, app: FastAPI, root: Path) -> None:
        self._bus = bus
        self._app = app
        self._root = root
        self._scan: tuple[frozenset[tuple[str, str]], Scan] | None = None
        self._scanning = asyncio.Lock()
        self._rendered: dict[str, tuple[object, Any]] = {}

    async def current(self) -> Catalog:
        schemas = self._bus.schemas()
        return build_catalog(
            self._bus.subscriptions(),
            schemas,
            await self._scanned(typed_event_names(schemas)),
            self._root,
            title=self._app.title,
            version=self._app.version,
            backend=self._bus.backend.name,
            servers=describe_servers(self._bus.backend),
        )

    async def rendered[T](self, name: str, render: Callable[[Catalog], T]) -> T:
        """``render(catalog)``, computed again only when the catalog's inputs changed."""
        catalog = await self.current()
        schemas = self._bus.schemas()
        # The objects themselves (compared by identity): a key holds them, so none of their
        # ids can be reused while it is kept.
        key = (
            tuple(self._bus.subscriptions()),
            tuple(schemas.items()),
            self._scan[1] if self._scan is not None else None,
            self._app.title,
            self._app.version,
        )
        cached = self._rendered.get(name)
        if cached is not None and cached[0] == key:
            result: T = cached[1]
            return result
        value = render(catalog)
        self._rendered[name] = (key, value)
        return value

    async def _scanned(self, typed: dict[str, str]) -> Scan:
        wanted = frozenset(typed.items())
        async with self._scanning:
            if self._scan is None or self._scan[0] != wanted:
                scan = await asyncio.to_thread(scan_app, self._root, typed, (), MAX_SCANNED_FILES)
                self._scan = (wanted, scan)
            return self._scan[1]
