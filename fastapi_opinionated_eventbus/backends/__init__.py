"""Where events go after emit: the backend protocol, and backends by name.

``local`` (the default) runs handlers in this process; ``redis`` carries events through
Redis Streams to whichever process of the app handles them. Other packages add backends
through the entry-point group ``fastapi_opinionated_eventbus.backends`` (see
:mod:`.factory`); the contract they implement is :class:`Backend` (see :mod:`.base`).
"""

from __future__ import annotations

from .base import (
    Backend,
    BackendFactory,
    BackendHealth,
    BackendPort,
    ServerInfo,
    StopReport,
    start_in_context,
)
from .factory import ENTRY_POINT_GROUP, backend_names, create_backend

__all__ = [
    "ENTRY_POINT_GROUP",
    "Backend",
    "BackendFactory",
    "BackendHealth",
    "BackendPort",
    "ServerInfo",
    "StopReport",
    "backend_names",
    "create_backend",
    "start_in_context",
]
