"""Events emitted "after the response": queued per HTTP request, released by the middleware."""

from __future__ import annotations

import contextvars

from .background import QueueItem

__all__ = ["ResponseQueue", "response_queue"]


class ResponseQueue(list[QueueItem]):
    """The after-response events of one HTTP request. ``closed`` once the middleware has
    dispatched or discarded them: a task the request started that outlives it (copying
    this context) then emits in the background instead of into a queue nobody reads."""

    __slots__ = ("closed",)

    def __init__(self) -> None:
        super().__init__()
        self.closed = False


response_queue: contextvars.ContextVar[ResponseQueue | None] = contextvars.ContextVar(
    "eventbus_response_queue", default=None
)
"""Set by the middleware for the duration of one HTTP request."""
