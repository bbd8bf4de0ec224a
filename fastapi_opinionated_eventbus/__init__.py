"""In-app events for fastapi-opinionated: ``@OnInternalEvent`` handlers, ``eventbus_api().emit``."""

from __future__ import annotations

from .api import eventbus_api
from .bus import EventBus
from .codec import register_type
from .dead_letters import DeadLetter
from .decorators import OnInternalEvent, register_schema
from .errors import (
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
from .events import EventEnvelope, current_event
from .plugin import EventBusPlugin
from .registry import Subscription
from .results import EmitResult, HandlerFailure
from .retry import RetryPolicy
from .typed import TypedEvent

__version__ = "0.2.0"

__all__ = [
    "BackendUnavailable",
    "ChainDepthExceeded",
    "ConfigurationError",
    "DeadLetter",
    "EmitResult",
    "EventBus",
    "EventBusClosed",
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
    "register_schema",
    "register_type",
]
