"""The states of the bus and of its background queue."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Lifecycle"]


class Lifecycle(StrEnum):
    OPEN = "open"
    """Takes every event."""
    DRAINING = "draining"
    """Shutdown has begun: takes only events that running handlers emit, so work in
    flight can finish."""
    CLOSED = "closed"
    """Takes nothing."""
