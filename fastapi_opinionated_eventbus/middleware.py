"""Pure ASGI middleware: events emitted "after the response" wait for it here."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi_opinionated.shared.logger import ns_logger

from ._core.after_response import ResponseQueue, response_queue
from ._core.correlation import (
    HEADER,
    INCOMING_HEADERS,
    accept_header,
    new_correlation_id,
    request_correlation_id,
)
from ._text import loggable

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, MutableMapping

    from ._core.bus import EventBus

    Scope = MutableMapping[str, Any]
    Message = MutableMapping[str, Any]
    Receive = Callable[[], Awaitable[Message]]
    Send = Callable[[Message], Awaitable[None]]
    ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

__all__ = ["EventBusMiddleware"]

logger = ns_logger("EventBus")


class EventBusMiddleware:
    """Per HTTP request: a correlation id and the after-response event queue.

    The correlation id comes from a valid incoming ``X-Correlation-ID`` or
    ``X-Request-ID`` header, or is generated; every event emitted while serving the
    request carries it, and the response echoes it in ``X-Correlation-ID``.

    ``emit_after_response`` events are dispatched in the background once the response
    has been sent, unless the request failed (an unhandled exception or a 5xx status): a
    failed request did not happen, so its events are discarded with a warning naming them.

    The plugin installs it; apps built without the plugin can add it themselves with
    ``app.add_middleware(EventBusMiddleware, bus=bus)``.
    """

    def __init__(self, app: ASGIApp, bus: EventBus) -> None:
        self.app = app
        self.bus = bus

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        queued = ResponseQueue()
        status = 0
        correlation_id = _incoming_correlation_id(scope) or new_correlation_id()
        echoed = (HEADER, correlation_id.encode("ascii"))

        async def send_watching_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", ()))
                if not any(name.lower() == HEADER for name, _ in headers):
                    headers.append(echoed)
                message["headers"] = headers
            await send(message)

        queue_token = response_queue.set(queued)
        correlation_token = request_correlation_id.set(correlation_id)
        try:
            await self.app(scope, receive, send_watching_status)
        except BaseException:
            if queued:
                self._discard(queued, scope, "the request raised an unhandled exception")
            raise
        finally:
            queued.closed = True
            request_correlation_id.reset(correlation_token)
            response_queue.reset(queue_token)
        if not queued:
            return
        if status >= 500 or status == 0:
            reason = f"the response status was {status}" if status else "no response was sent"
            self._discard(queued, scope, reason)
            return
        self.bus.dispatch_after_response(queued)

    @staticmethod
    def _discard(queued: ResponseQueue, scope: Scope, reason: str) -> None:
        names = ", ".join(envelope.describe() for envelope, _, _ in queued)
        # The client wrote the method and the (percent-decoded) path: a %0A would forge a line.
        request = f"{loggable(scope.get('method'))} {loggable(scope.get('path'), 500)}"
        logger.warning(
            f"Discarded {len(queued)} after-response event(s) of {request} because {reason}: "
            f"{names}"
        )


def _incoming_correlation_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name in INCOMING_HEADERS:
            accepted = accept_header(value)
            if accepted is not None:
                return accepted
    return None
