"""A bounded in-memory store of events whose handler failed on its last attempt."""

from __future__ import annotations

import traceback
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from .envelope import EventEnvelope

if TYPE_CHECKING:
    from .registry import Subscription
    from .results import HandlerFailure

__all__ = ["DeadLetter", "DeadLetterStore"]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One handler's final failure on one event, kept for inspection and replay."""

    event: EventEnvelope
    handler: str
    exception_type: str
    message: str
    traceback: str
    attempts: int
    failed_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    reason: str = "handler failed"
    subscription: str | None = None
    """The subscribed name or pattern the handler ran for."""
    source: Subscription | None = field(default=None, repr=False, compare=False)
    """The very subscription, so a replay runs it with the same options."""

    @classmethod
    def from_exception(
        cls,
        event: EventEnvelope,
        handler: str,
        exc: BaseException,
        attempts: int,
        *,
        subscription: str | None = None,
        reason: str = "handler failed",
        source: Subscription | None = None,
    ) -> DeadLetter:
        """A dead letter of ``handler`` (its ``module:qualname``) failing with ``exc``."""
        return cls(
            event=event,
            handler=handler,
            exception_type=type(exc).__qualname__,
            message=str(exc),
            traceback="".join(traceback.format_exception(exc)),
            attempts=attempts,
            reason=reason,
            subscription=subscription,
            source=source,
        )

    @classmethod
    def from_failure(cls, event: EventEnvelope, failure: HandlerFailure) -> DeadLetter:
        """The dead letter of a handler that failed in this process."""
        sub = failure.subscription
        return cls.from_exception(
            event,
            failure.handler,
            failure.exception,
            failure.attempts,
            subscription=None if sub is None else sub.event,
            source=sub,
        )


class DeadLetterStore:
    """Keeps the newest ``capacity`` dead letters; counts the ones it had to drop."""

    def __init__(self, capacity: int) -> None:
        self._letters: deque[DeadLetter] = deque(maxlen=capacity)
        self.dropped = 0

    def add(self, letter: DeadLetter) -> None:
        if len(self._letters) == self._letters.maxlen:
            self.dropped += 1
        self._letters.append(letter)

    def take_all(self) -> list[DeadLetter]:
        letters = list(self._letters)
        self._letters.clear()
        return letters

    def __iter__(self) -> Iterator[DeadLetter]:
        return iter(list(self._letters))

    def __len__(self) -> int:
        return len(self._letters)
