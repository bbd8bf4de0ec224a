"""Where events go after emit: the backend protocol, and backends by name.

``local`` (the default) runs handlers in this process; ``redis`` carries events through
Redis Streams to whichever process of the app handles them. Other packages add backends
through the entry-point group ``fastapi_opinionated_eventbus.backends`` (see
:mod:`.factory`); the contract they implement is :class:`Backend` (see :mod:`.base`).
This module also gives them what the built-in backends use: the JSON codec, the identity
check of received events, and the note of an interrupted publish.
"""

from __future__ import annotations

from .._codec import Codec, MalformedEntry
from .._core.envelope import check_identity
from .._core.interruption import Interruption, note_interruption
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
    "Codec",
    "Interruption",
    "MalformedEntry",
    "ServerInfo",
    "StopReport",
    "backend_names",
    "check_identity",
    "create_backend",
    "note_interruption",
    "start_in_context",
]
