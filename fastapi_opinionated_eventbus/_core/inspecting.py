"""Inspecting the bus: dead letters, health, counts, taps and metrics."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .lifecycle import Lifecycle
from .state import BusState

if TYPE_CHECKING:
    from ..backends.base import Backend
    from ..metrics import MetricsCollector
    from .dead_letters import DeadLetter
    from .envelope import EventEnvelope
    from .results import EmitResult

__all__ = ["Inspecting"]


class Inspecting(BusState):
    @property
    def backend(self) -> Backend:
        """The backend events are handed to."""
        return self._backend

    @property
    def pending(self) -> int:
        """Background events accepted and not yet finished."""
        return self._background.pending

    @property
    def lost_events(self) -> int:
        """Background events that never ran to their end: cancelled before they could,
        refused after the response, not accepted by the broker, and forwarded events not
        accepted by shutdown's end (each logged)."""
        forwarding_lost = self._forwarding.lost if self._forwarding is not None else 0
        return self._background.lost + forwarding_lost

    @property
    def abandoned_events(self) -> int:
        """Background events still running when shutdown gave up on them (each logged):
        a sync handler in its worker thread, a handler that ignores cancellation."""
        return self._background.abandoned

    @property
    def unconfirmed_events(self) -> int:
        """Background events that may have reached the broker, unconfirmed (each logged)."""
        return self._background.unconfirmed

    # ================================================================ dead letters
    async def dead_letters(self) -> list[DeadLetter]:
        """Handler failures after their last attempt, oldest first, as the backend keeps
        them: in memory (bounded) locally, the dead-letter stream or topic with a broker."""
        return await self._backend.dead_letters()

    async def replay_dead_letters(self) -> EmitResult:
        """Run each dead letter's handler again; the ones failing again stay dead letters.

        The result's ``handled`` counts the letters replayed, ``failures`` those that
        failed again. Letters whose handler is not subscribed here stay, and are logged.
        """
        return await self._backend.replay_dead_letters()

    async def purge_dead_letters(self) -> int:
        """Delete every dead letter; returns how many there were."""
        return await self._backend.purge_dead_letters()

    async def health(self) -> dict[str, Any]:
        """The bus's state and counts, and the backend's :class:`BackendHealth` keys."""
        report: dict[str, Any] = {
            "backend": self._backend.name,
            "state": self._state.value,
            "healthy": self._state is not Lifecycle.CLOSED,
            "pending": self.pending,
            "lost_events": self.lost_events,
            "background": {
                "emitted": self._background.accepted,
                "handled": self._background.handled,
                "lost": self.lost_events,
                "abandoned": self.abandoned_events,
                "unconfirmed": self.unconfirmed_events,
                "pending": self.pending,
            },
            "abandoned_threads": self.abandoned_threads,
        }
        report.update(await self._backend.health())
        if self._outbox is not None:
            report["outbox"] = await self._outbox.health()
        if self._forwarding is not None:
            report["forwarding"] = self._forwarding.health()
        return report

    # ================================================================ observation
    @contextmanager
    def tap(self, callback: Callable[[EventEnvelope], None]) -> Iterator[None]:
        """Call ``callback`` with every envelope emitted while the block runs (tests)."""
        self._taps.append(callback)
        self._update_observed()
        try:
            yield
        finally:
            self._taps.remove(callback)
            self._update_observed()

    def _update_observed(self) -> None:
        self._observed = bool(self._taps or self._metrics is not None or self._tracer is not None)

    def _on_lost(self, envelope: EventEnvelope) -> None:
        if self._metrics is not None:
            self._metrics.lost(envelope.name)

    @property
    def metrics(self) -> MetricsCollector | None:
        """The configured metrics collector (None when metrics are off)."""
        return self._metrics

    @property
    def abandoned_threads(self) -> int:
        return self._dispatcher.abandoned_threads

    def __repr__(self) -> str:
        return (
            f"<EventBus {self._state.value} backend={self._backend.name} "
            f"subscriptions={len(self._registry.subscriptions())} pending={self.pending}>"
        )
