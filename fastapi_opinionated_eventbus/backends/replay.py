"""Replaying one stored dead letter, the same way for every broker backend."""

from __future__ import annotations

from fastapi_opinionated.shared.logger import ns_logger

from .._core.dead_letters import DeadLetter
from .._core.results import EmitResult
from .._text import loggable
from .base import BackendPort

__all__ = ["EVENT_LEVEL", "replay_letter"]

logger = ns_logger("EventBus")

EVENT_LEVEL = "*"
"""The ``handler`` of a dead letter that concerns the event as a whole."""


async def replay_letter(
    port: BackendPort, letter: DeadLetter, *, where: str, replayable: bool
) -> EmitResult | None:
    """Run a dead letter again in this process; None when it cannot run here (it does
    not decode, or its handler is not subscribed here), which is logged.

    A letter about the event as a whole (``handler == "*"``: max deliveries) runs all of
    the event's handlers here; any other runs its one handler. A letter's reason and
    handler are read from the broker, where anyone may have written them: they are logged
    through ``loggable``.
    """
    if not replayable:
        reason = loggable(letter.reason, 500)
        logger.warning(f"{where} not replayed: its event does not decode ({reason})")
        return None
    if letter.handler == EVENT_LEVEL:
        result = await port.deliver(letter.event.with_attempt(1), broadcast=False)
        if not result.handled:
            logger.warning(f"{where} not replayed: no handler of it in this process")
            return None
        return result
    replayed = await port.replay(letter)
    if replayed is None:
        handler = loggable(letter.handler)
        logger.warning(f"{where} not replayed: handler {handler} is not subscribed here")
    return replayed
