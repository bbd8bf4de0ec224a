"""Backends by name: the built-in ones, and any a package adds through an entry point.

A package adds ``backend="nats"`` by declaring, in its own ``pyproject.toml``::

    [project.entry-points."fastapi_opinionated_eventbus.backends"]
    nats = "my_package.nats_backend:NatsBackend"

where ``NatsBackend(settings, port)`` implements :class:`~.base.Backend`.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, cast

from .._core.errors import ConfigurationError

if TYPE_CHECKING:
    from .._core.settings import BusSettings
    from .base import Backend, BackendFactory, BackendPort

__all__ = ["ENTRY_POINT_GROUP", "backend_names", "create_backend", "load_factory"]

ENTRY_POINT_GROUP = "fastapi_opinionated_eventbus.backends"

# Imported only when chosen: the Redis and Kafka backends need their extras.
_BUILT_IN = {
    "local": "fastapi_opinionated_eventbus.backends.local:LocalBackend",
    "redis": "fastapi_opinionated_eventbus.backends.redis:RedisStreamsBackend",
    "kafka": "fastapi_opinionated_eventbus.backends.kafka:KafkaBackend",
}


def _plugins() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def backend_names() -> list[str]:
    """Every backend name that can be configured here, built-in ones first."""
    return [*_BUILT_IN, *sorted(set(_plugins()) - set(_BUILT_IN))]


def load_factory(name: str) -> BackendFactory:
    """The factory behind a backend name; ConfigurationError when there is none."""
    # A third-party package cannot take over a built-in name.
    target = _BUILT_IN.get(name) or _plugins().get(name)
    if target is None:
        raise ConfigurationError(
            f"unknown backend {name!r}: known backends are "
            f"{', '.join(map(repr, backend_names()))} (a package can add one through the "
            f"entry-point group {ENTRY_POINT_GROUP!r})"
        )
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        extra = f"pip install 'fastapi-opinionated-eventbus[{name}]'" if name in _BUILT_IN else ""
        hint = f": {extra}" if extra else ""
        raise ConfigurationError(
            f"backend {name!r} cannot be loaded ({type(exc).__name__}: {exc}){hint}"
        ) from exc
    try:
        factory = getattr(module, attribute)
    except AttributeError:
        raise ConfigurationError(
            f"backend {name!r}: {module_name} has no attribute {attribute!r}"
        ) from None
    return cast("BackendFactory", factory)


def create_backend(settings: BusSettings, port: BackendPort) -> Backend:
    """The backend ``settings.backend`` names, bound to ``port``."""
    return load_factory(settings.backend)(settings, port)
