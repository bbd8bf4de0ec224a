"""Where events go after emit: this process (the default) or another one (Redis Streams)."""

from __future__ import annotations

from typing import Any, Protocol

from .._core.dead_letters import DeadLetter
from .._core.envelope import EventEnvelope
from .._core.results import EmitResult

__all__ = ["RemoteBackend"]


class RemoteBackend(Protocol):
    """A backend that carries events to the processes that run their handlers.

    The bus calls ``publish`` instead of running handlers; the backend's consumers hand
    every event they receive to ``EventBus.dispatch_received`` and acknowledge it only
    after that returned.
    """

    @property
    def pending_entries(self) -> int:
        """Entries delivered and not yet acknowledged, as last seen (a metrics gauge)."""

    async def connect(self) -> None:
        """Connect for publishing and inspection only, without consuming (the CLI)."""

    async def start(self) -> None:
        """Connect (retrying up to ``connect_timeout``) and start consuming."""

    def validate(self, envelope: EventEnvelope) -> None:
        """Raise EventSerializationError now if the event cannot be published."""

    async def pause(self) -> None:
        """Stop taking new entries (shutdown has begun); in-flight ones finish."""

    async def settle(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the handlers running now to finish."""

    async def publish(self, envelope: EventEnvelope) -> None:
        """Return once the event is durably stored; raise BackendUnavailable or
        EventSerializationError otherwise (nothing stored)."""

    async def stop(self) -> None:
        """Stop reading, finish or hand back in-flight entries, close connections."""

    async def health(self) -> dict[str, Any]:
        """Reachability, pending/lag and dead-letter count."""

    async def dead_letters(self) -> list[DeadLetter]: ...

    async def replay_dead_letters(self) -> EmitResult: ...

    async def purge_dead_letters(self) -> int: ...
