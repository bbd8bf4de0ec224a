"""What an emit reports back: how many handlers ran and which of them failed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .envelope import EventEnvelope

if TYPE_CHECKING:
    from .registry import Subscription

__all__ = ["EmitResult", "HandlerFailure", "handled_once"]


@dataclass(frozen=True, slots=True)
class HandlerFailure:
    """One handler that failed on its last attempt."""

    handler: str
    """The handler's ``module:qualname``."""
    exception: Exception
    attempts: int = 1
    subscription: Subscription | None = field(default=None, repr=False, compare=False)
    """The subscription that failed, when it ran in this process (for its dead letter)."""


class EmitResult:
    """The outcome of one awaited emit.

    ``handled`` counts the handlers that ran (succeeded or failed); ``failures`` holds the
    failed ones with their exceptions. With the Redis backend the handlers run in another
    process: ``published`` is then true and ``handled`` is 0.
    """

    __slots__ = ("event", "failures", "handled", "published")

    def __init__(
        self,
        event: EventEnvelope | None,
        handled: int,
        failures: tuple[HandlerFailure, ...] = (),
        *,
        published: bool = False,
    ) -> None:
        self.event = event
        self.handled = handled
        self.failures = failures
        self.published = published

    @property
    def ok(self) -> bool:
        """True when no handler failed."""
        return not self.failures

    @property
    def event_id(self) -> str | None:
        return None if self.event is None else self.event.id

    def __repr__(self) -> str:
        name = None if self.event is None else self.event.name
        return (
            f"<EmitResult event={name!r} handled={self.handled} "
            f"failed={len(self.failures)} published={self.published}>"
        )


_new_instance = object.__new__


def handled_once(event: EventEnvelope) -> EmitResult:
    """``EmitResult(event, 1)``, the result of emit's hot path, without a call to
    ``__init__``."""
    result = _new_instance(EmitResult)
    result.event = event
    result.handled = 1
    result.failures = ()
    result.published = False
    return result
