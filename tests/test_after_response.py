"""emit_after_response(): inside a request the event is dispatched only once the response
has been sent, and only when the request succeeded; outside a request it is emit_nowait.

The apps get an outermost ASGI middleware that records, per path, the moment the last body
chunk of the response went to the server. A handler of an after-response event checks that
record: it can only be there if the bus waited for the response. The routes pause after
emitting, so a bus that dispatched at once would run the handler before the response left.
"""

from __future__ import annotations

from types import ModuleType

import httpx
import pytest
from fastapi import FastAPI
from support import AppDir, Factory, domain, strip_ansi

from fastapi_opinionated_eventbus import EventEnvelope, eventbus_api
from fastapi_opinionated_eventbus.testing import EventRecorder, running


def client_for(app: FastAPI) -> httpx.AsyncClient:
    # raise_app_exceptions=False: an unhandled exception becomes the 500 a server would send.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://t")


AFTER_SRC = """
    import asyncio
    import time

    from fastapi import HTTPException
    from fastapi.responses import JSONResponse
    from fastapi_opinionated.decorators.routing import Get, Post

    from fastapi_opinionated_eventbus import OnInternalEvent, current_event, eventbus_api

    # Paths whose response has been completely sent (filled by ResponseSentMarker).
    responses_sent = []
    handled = []


    class ResponseSentMarker:
        \"\"\"Outermost ASGI middleware: notes when the last body chunk reached the server.\"\"\"

        def __init__(self, app):
            self.app = app

        async def __call__(self, scope, receive, send):
            if scope["type"] != "http":
                await self.app(scope, receive, send)
                return

            async def marking_send(message):
                await send(message)
                if message["type"] == "http.response.body" and not message.get("more_body"):
                    responses_sent.append(scope["path"])

            await self.app(scope, receive, marking_send)


    @OnInternalEvent("order.confirmed")
    async def send_confirmation(order_id, *, channel):
        # What the marker had seen complete when this handler ran.
        handled.append(
            ("send_confirmation", order_id, channel, current_event().id, tuple(responses_sent))
        )


    @OnInternalEvent("order.confirmed")
    def bill_in_thread(order_id, *, channel):
        handled.append(
            ("bill_in_thread", order_id, channel, current_event().id, tuple(responses_sent))
        )


    @OnInternalEvent("order.failed")
    async def never_for_a_failed_request(order_id):
        handled.append(("never_for_a_failed_request", order_id))


    @Post("/orders/{order_id}")
    async def confirm(order_id: str):
        envelope = eventbus_api().emit_after_response("order.confirmed", order_id, channel="email")
        # An immediately dispatched event would run during this pause, before the response.
        await asyncio.sleep(0.02)
        return {"event_id": envelope.id, "name": envelope.name}


    @Post("/sync-orders/{order_id}")
    def confirm_sync(order_id: str):  # sync route: emits from a worker thread
        envelope = eventbus_api().emit_after_response(
            "order.confirmed", order_id, channel="sms"
        )
        time.sleep(0.02)
        return {"event_id": envelope.id}


    @Post("/chained/{order_id}")
    async def confirm_through_a_handler(order_id: str):
        await eventbus_api().emit("order.validated", order_id)
        await asyncio.sleep(0.02)
        return {"ok": True}


    @OnInternalEvent("order.validated")
    async def after_validation(order_id):
        # Emitted by a handler running inside the request: still waits for the response.
        eventbus_api().emit_after_response("order.confirmed", order_id, channel="push")


    @Post("/broken/{order_id}")
    async def returns_500(order_id: str):
        eventbus_api().emit_after_response("order.failed", order_id)
        return JSONResponse({"error": "database down"}, status_code=500)


    @Post("/unavailable/{order_id}")
    async def raises_http_503(order_id: str):
        eventbus_api().emit_after_response("order.failed", order_id)
        raise HTTPException(status_code=503, detail="try later")


    @Post("/crash/{order_id}")
    async def raises(order_id: str):
        eventbus_api().emit_after_response("order.failed", order_id)
        raise RuntimeError("bug in the route")


    @Get("/missing/{order_id}")
    async def not_found(order_id: str):
        eventbus_api().emit_after_response("order.confirmed", order_id, channel="web")
        raise HTTPException(status_code=404, detail="no such order")
"""


def _make_app(app_dir: AppDir, eventbus_app_factory: Factory) -> tuple[FastAPI, ModuleType]:
    app = eventbus_app_factory(app_dir({"orders/handlers.py": AFTER_SRC}))
    handlers = domain("orders.handlers")
    app.add_middleware(handlers.ResponseSentMarker)  # outermost: added after the plugin's
    return app, handlers


async def test_handlers_run_only_after_the_response_was_sent(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    app, handlers = _make_app(app_dir, eventbus_app_factory)
    async with running(app), client_for(app) as client:
        response = await client.post("/orders/o-1")
        assert await eventbus_api().drain(5) == 0

    assert response.status_code == 200
    event_id = response.json()["event_id"]
    assert response.json()["name"] == "order.confirmed"
    assert sorted(handlers.handled) == [
        ("bill_in_thread", "o-1", "email", event_id, ("/orders/o-1",)),
        ("send_confirmation", "o-1", "email", event_id, ("/orders/o-1",)),
    ]


async def test_sync_route_and_handler_emits_also_wait_for_the_response(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    app, handlers = _make_app(app_dir, eventbus_app_factory)
    async with running(app), client_for(app) as client:
        sync_response = await client.post("/sync-orders/o-2")
        chained_response = await client.post("/chained/o-3")
        assert await eventbus_api().drain(5) == 0

    assert sync_response.status_code == 200 and chained_response.status_code == 200
    sync_calls = [h for h in handlers.handled if h[1] == "o-2"]
    assert sorted(name for name, *_ in sync_calls) == ["bill_in_thread", "send_confirmation"]
    for _, _, channel, event_id, sent in sync_calls:
        assert channel == "sms" and event_id == sync_response.json()["event_id"]
        assert "/sync-orders/o-2" in sent
    chained = [h for h in handlers.handled if h[1] == "o-3"]
    assert sorted(name for name, *_ in chained) == ["bill_in_thread", "send_confirmation"]
    for _, _, channel, _, sent in chained:
        assert channel == "push"
        assert "/chained/o-3" in sent


SYNC_MARK_SRC = """
    import time

    from fastapi_opinionated.decorators.routing import Post

    from fastapi_opinionated_eventbus import OnInternalEvent, eventbus_api

    responses_sent = []
    handled = []


    class ResponseSentMarker:
        def __init__(self, app):
            self.app = app

        async def __call__(self, scope, receive, send):
            if scope["type"] != "http":
                await self.app(scope, receive, send)
                return

            async def marking_send(message):
                await send(message)
                if message["type"] == "http.response.body" and not message.get("more_body"):
                    responses_sent.append(scope["path"])

            await self.app(scope, receive, marking_send)


    @OnInternalEvent("export.ready")
    def notify(path):
        handled.append((path, path in responses_sent))


    @Post("/exports/{name}")
    def export(name: str):  # sync route, worker thread
        eventbus_api().emit_after_response("export.ready", f"/exports/{name}")
        time.sleep(0.02)
        return {"ok": True}
"""


async def test_after_response_event_of_a_sync_route_sees_its_response_sent(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    app = eventbus_app_factory(app_dir({"exports/handlers.py": SYNC_MARK_SRC}))
    handlers = domain("exports.handlers")
    app.add_middleware(handlers.ResponseSentMarker)
    async with running(app), client_for(app) as client:
        response = await client.post("/exports/q3")
        assert await eventbus_api().drain(5) == 0

    assert response.status_code == 200
    assert handlers.handled == [("/exports/q3", True)]


@pytest.mark.parametrize(
    ("path", "status", "reason"),
    [
        ("/broken/o-9", 500, "because the response status was 500"),
        ("/unavailable/o-9", 503, "because the response status was 503"),
        ("/crash/o-9", 500, "because the request raised an unhandled exception"),
    ],
)
async def test_events_of_a_failed_request_are_discarded_with_a_warning_naming_them(
    app_dir: AppDir,
    eventbus_app_factory: Factory,
    caplog: pytest.LogCaptureFixture,
    path: str,
    status: int,
    reason: str,
) -> None:
    app, handlers = _make_app(app_dir, eventbus_app_factory)
    recorder = EventRecorder()
    async with running(app), client_for(app) as client:
        with recorder.recording(eventbus_api()):
            response = await client.post(path)
        assert await eventbus_api().drain(5) == 0
        pending = eventbus_api().pending

    assert response.status_code == status
    assert handlers.handled == []
    assert pending == 0
    [envelope] = recorder.events
    assert envelope.name == "order.failed"
    log = strip_ansi(caplog.text)
    assert f"Discarded 1 after-response event(s) of POST {path} {reason}" in log
    assert f"'order.failed' (id={envelope.id}" in log
    warnings = [r for r in caplog.records if "Discarded" in r.getMessage()]
    assert [r.levelname for r in warnings] == ["WARNING"]


async def test_the_discard_warning_escapes_the_request_path(
    app_dir: AppDir, eventbus_app_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    # The path is the client's, percent-decoded: a %0A in it must not forge a log line.
    app, _ = _make_app(app_dir, eventbus_app_factory)
    async with running(app), client_for(app) as client:
        response = await client.post("/broken/o-9%0AERROR%20[EventBus]%20forged%1B[2J")
        assert await eventbus_api().drain(5) == 0

    assert response.status_code == 500
    [warning] = [r.getMessage() for r in caplog.records if "Discarded" in r.getMessage()]
    assert "POST /broken/o-9\\x0aERROR [EventBus] forged\\x1b[2J because" in warning
    assert "\n" not in warning and "\x1b" not in warning


async def test_a_4xx_response_is_not_a_failed_request_and_its_events_run(
    app_dir: AppDir, eventbus_app_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    app, handlers = _make_app(app_dir, eventbus_app_factory)
    async with running(app), client_for(app) as client:
        response = await client.get("/missing/o-4")
        assert await eventbus_api().drain(5) == 0

    assert response.status_code == 404
    assert sorted(name for name, *_ in handlers.handled) == ["bill_in_thread", "send_confirmation"]
    assert "Discarded" not in strip_ansi(caplog.text)


async def test_outside_a_request_emit_after_response_behaves_like_emit_nowait(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    app, handlers = _make_app(app_dir, eventbus_app_factory)
    async with running(app):
        bus = eventbus_api()
        envelope = bus.emit_after_response("order.confirmed", "o-5", channel="cli")
        assert isinstance(envelope, EventEnvelope)
        assert handlers.handled == []  # queued, not run inline
        assert bus.pending == 1
        assert await bus.drain(5) == 0

    assert sorted(handlers.handled) == [
        ("bill_in_thread", "o-5", "cli", envelope.id, ()),
        ("send_confirmation", "o-5", "cli", envelope.id, ()),
    ]
