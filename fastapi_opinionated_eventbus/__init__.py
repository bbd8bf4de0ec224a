"""In-app events for fastapi-opinionated: ``@OnInternalEvent`` handlers, ``eventbus_api().emit``."""

from __future__ import annotations

from ._codec import register_type
from ._core.api import EventBusDep, eventbus_api, get_correlation_id, get_event_bus
from ._core.bus import EventBus
from ._core.dead_letters import DeadLetter
from ._core.decorators import OnInternalEvent, register_schema
from ._core.envelope import EventEnvelope, current_event
from ._core.errors import (
    BackendUnavailable,
    ChainDepthExceeded,
    ConfigurationError,
    EventBusClosed,
    EventBusError,
    EventBusNotEnabled,
    EventBusOverloaded,
    EventSerializationError,
    HandlerTimeout,
    NoCurrentEvent,
)
from ._core.registry import Subscription
from ._core.results import EmitResult, HandlerFailure
from ._core.retry import RetryPolicy
from ._core.typed import TypedEvent
from .plugin import EventBusPlugin

__version__ = "0.2.0"

__all__ = [
    "BackendUnavailable",
    "ChainDepthExceeded",
    "ConfigurationError",
    "DeadLetter",
    "EmitResult",
    "EventBus",
    "EventBusClosed",
    "EventBusDep",
    "EventBusError",
    "EventBusNotEnabled",
    "EventBusOverloaded",
    "EventBusPlugin",
    "EventEnvelope",
    "EventSerializationError",
    "HandlerFailure",
    "HandlerTimeout",
    "NoCurrentEvent",
    "OnInternalEvent",
    "RetryPolicy",
    "Subscription",
    "TypedEvent",
    "current_event",
    "eventbus_api",
    "get_correlation_id",
    "get_event_bus",
    "register_schema",
    "register_type",
]
