"""Where events go after emit: this process (the default) or another one (Redis Streams)."""

from __future__ import annotations

from typing import Any, Protocol

from ..dead_letters import DeadLetter
from ..events import EventEnvelope
from ..results import EmitResult

__all__ = ["RemoteBackend"]


class RemoteBackend(Protocol):
    """A backend that carries events to the processes that run their handlers.

    The bus calls ``publish`` instead of running handlers; the backend's consumers hand
    every event they receive to ``EventBus.dispatch_received`` and acknowledge it only
    after that returned.
    """

    async def start(self) -> None:
        """Connect (retrying up to ``connect_timeout``) and start consuming."""

    async def publish(self, envelope: EventEnvelope) -> None:
        """Return once the event is durably stored; raise BackendUnavailable or
        EventSerializationError otherwise (nothing stored)."""

    async def stop(self) -> None:
        """Stop reading, finish or hand back in-flight entries, close connections."""

    async def health(self) -> dict[str, Any]:
        """Reachability, pending/lag and dead-letter count."""

    async def dead_letters(self) -> list[DeadLetter]: ...

    async def replay_dead_letters(self) -> EmitResult: ...
