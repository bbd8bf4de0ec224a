"""emit_nowait(): background dispatch that returns at once, works from sync routes (worker
threads), isolates failing handlers, and refuses (never drops) events beyond max_pending."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from support import AppDir, Factory, domain, strip_ansi

from fastapi_opinionated_eventbus import (
    EventBus,
    EventBusOverloaded,
    EventEnvelope,
    current_event,
    eventbus_api,
)
from fastapi_opinionated_eventbus.testing import running, started_bus


def client_for(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


# ---------------------------------------------------------------- returns at once


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_emit_nowait_returns_the_envelope_before_the_handler_runs(kind: str) -> None:
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    async def async_handler(*args: Any, **kwargs: Any) -> None:
        calls.append((current_event().id, args, kwargs))

    def sync_handler(*args: Any, **kwargs: Any) -> None:
        calls.append((current_event().id, args, kwargs))

    async with started_bus() as bus:
        bus.subscribe("mail.queued", async_handler if kind == "async" else sync_handler)
        envelope = bus.emit_nowait("mail.queued", "to@x", subject="hi")

        assert isinstance(envelope, EventEnvelope)
        assert envelope.name == "mail.queued"
        assert envelope.args == ("to@x",)
        assert envelope.kwargs == {"subject": "hi"}
        assert calls == []  # not run yet: emit_nowait did not dispatch inline
        assert bus.pending == 1

        assert await bus.drain(5) == 0
        assert bus.pending == 0

    assert calls == [(envelope.id, ("to@x",), {"subject": "hi"})]


async def test_emit_nowait_without_handlers_returns_an_envelope_and_queues_nothing() -> None:
    async with started_bus() as bus:
        envelope = bus.emit_nowait("nobody.listens", 1)
        assert envelope.name == "nobody.listens"
        assert bus.pending == 0


# ---------------------------------------------------------------- from a sync route

SYNC_ROUTE_SRC = """
    import threading

    from fastapi_opinionated.decorators.routing import Post

    from fastapi_opinionated_eventbus import (
        EventBusOverloaded,
        OnInternalEvent,
        current_event,
        eventbus_api,
    )

    handled = []
    route_threads = []


    @OnInternalEvent("signup.completed")
    async def send_welcome(user_id):
        handled.append(("send_welcome", user_id, current_event().id, threading.get_ident()))


    @OnInternalEvent("signup.completed")
    def crm_sync(user_id):
        handled.append(("crm_sync", user_id, current_event().id, threading.get_ident()))


    @Post("/signup/{user_id}")
    def signup(user_id: int):  # a sync route: FastAPI runs it in a worker thread
        route_threads.append(threading.get_ident())
        envelope = eventbus_api().emit_nowait("signup.completed", user_id)
        return {"event_id": envelope.id}
"""


async def test_emit_nowait_from_a_sync_route_in_a_worker_thread_runs_the_handlers(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    app = eventbus_app_factory(app_dir({"signup/handlers.py": SYNC_ROUTE_SRC}))
    handlers = domain("signup.handlers")
    loop_thread = threading.get_ident()
    async with running(app), client_for(app) as client:
        responses = [await client.post(f"/signup/{n}") for n in range(3)]
        assert await eventbus_api().drain(5) == 0

    assert [r.status_code for r in responses] == [200, 200, 200]
    assert all(thread != loop_thread for thread in handlers.route_threads)
    ids = [r.json()["event_id"] for r in responses]
    async_calls = [(u, i) for name, u, i, _ in handlers.handled if name == "send_welcome"]
    sync_calls = [(u, i) for name, u, i, _ in handlers.handled if name == "crm_sync"]
    assert sorted(async_calls) == sorted(zip(range(3), ids, strict=True))
    assert sorted(sync_calls) == sorted(zip(range(3), ids, strict=True))
    # The async handler ran on the app's loop, not in the route's worker thread.
    assert {t for name, _, _, t in handlers.handled if name == "send_welcome"} == {loop_thread}


# ---------------------------------------------------------------- isolation

ISOLATION_SRC = """
    from fastapi_opinionated_eventbus import OnInternalEvent

    calls = []


    @OnInternalEvent("upload.finished")
    async def make_thumbnail(path):
        raise OSError(f"cannot read {path}")


    @OnInternalEvent("upload.finished")
    async def index_file(path):
        calls.append(("index_file", path))


    @OnInternalEvent("upload.finished")
    def virus_scan(path):
        calls.append(("virus_scan", path))


    @OnInternalEvent("upload.deleted")
    async def cleanup(path):
        calls.append(("cleanup", path))
"""


async def test_a_failing_background_handler_is_logged_and_the_others_run(
    app_dir: AppDir, eventbus_app_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    app = eventbus_app_factory(app_dir({"uploads/handlers.py": ISOLATION_SRC}))
    handlers = domain("uploads.handlers")
    async with running(app):
        bus = eventbus_api()
        envelope = bus.emit_nowait("upload.finished", "/tmp/a.png")
        bus.emit_nowait("upload.deleted", "/tmp/b.png")
        assert await bus.drain(5) == 0

    assert sorted(handlers.calls) == [
        ("cleanup", "/tmp/b.png"),
        ("index_file", "/tmp/a.png"),
        ("virus_scan", "/tmp/a.png"),
    ]
    log = strip_ansi(caplog.text)
    assert (
        "Handler app.domains.uploads.handlers:make_thumbnail failed on event 'upload.finished'"
        in log
    )
    assert f"id={envelope.id}" in log
    assert "OSError: cannot read /tmp/a.png" in log
    assert "Traceback (most recent call last)" in log


# ---------------------------------------------------------------- overload


async def test_the_event_beyond_max_pending_raises_overloaded_and_none_is_dropped() -> None:
    gate = asyncio.Event()
    ran: list[int] = []

    async def slow(n: int) -> None:
        await gate.wait()
        ran.append(n)

    async with started_bus(max_pending=5) as bus:
        bus.subscribe("export.requested", slow)
        accepted = [bus.emit_nowait("export.requested", n) for n in range(5)]
        assert bus.pending == 5
        with pytest.raises(EventBusOverloaded) as info:
            bus.emit_nowait("export.requested", 5)
        message = str(info.value)
        assert "'export.requested'" in message
        assert "max_pending=5" in message
        assert "5 background events are in flight" in message
        assert bus.pending == 5

        gate.set()
        assert await bus.drain(5) == 0
        # Room again once the in-flight events finished.
        bus.emit_nowait("export.requested", 6)
        assert await bus.drain(5) == 0

    assert len(accepted) == 5
    assert sorted(ran) == [0, 1, 2, 3, 4, 6]


OVERLOAD_SRC = """
    import asyncio

    from fastapi_opinionated.decorators.routing import Post

    from fastapi_opinionated_eventbus import EventBusOverloaded, OnInternalEvent, eventbus_api

    gate = asyncio.Event()
    ran = []


    @OnInternalEvent("report.build")
    async def build(n):
        await gate.wait()
        ran.append(n)


    @Post("/reports/{count}")
    def request_reports(count: int):  # sync route: emits from a worker thread
        outcome = []
        for n in range(count):
            try:
                eventbus_api().emit_nowait("report.build", n)
                outcome.append("accepted")
            except EventBusOverloaded as exc:
                outcome.append(f"overloaded: {exc}")
        return outcome


    @Post("/async-reports/{count}")
    async def request_reports_async(count: int):
        outcome = []
        for n in range(count):
            try:
                eventbus_api().emit_nowait("report.build", n)
                outcome.append("accepted")
            except EventBusOverloaded as exc:
                outcome.append(f"overloaded: {exc}")
        return outcome
"""


@pytest.mark.parametrize("route", ["async-reports", "reports"], ids=["async-route", "sync-route"])
async def test_max_pending_is_enforced_through_a_real_app(
    app_dir: AppDir, eventbus_app_factory: Factory, route: str
) -> None:
    app = eventbus_app_factory(app_dir({"reports/handlers.py": OVERLOAD_SRC}), max_pending=5)
    handlers = domain("reports.handlers")
    async with running(app), client_for(app) as client:
        bus = eventbus_api()
        response = await client.post(f"/{route}/6")
        pending_at_peak = bus.pending
        handlers.gate.set()
        assert await bus.drain(5) == 0

    outcome = response.json()
    assert outcome[:5] == ["accepted"] * 5
    assert outcome[5].startswith("overloaded: ")
    assert "max_pending=5" in outcome[5]
    assert pending_at_peak == 5
    assert sorted(handlers.ran) == [0, 1, 2, 3, 4]


async def test_max_pending_holds_for_several_threads_emitting_at_once() -> None:
    gate = asyncio.Event()
    ran: list[int] = []
    outcomes: list[str] = []
    lock = threading.Lock()

    async def slow(n: int) -> None:
        await gate.wait()
        ran.append(n)

    def emit_from_thread(bus: EventBus, start: threading.Barrier, first: int) -> None:
        start.wait(5)
        for n in range(first, first + 3):
            try:
                bus.emit_nowait("evt", n)
                outcome = "accepted"
            except EventBusOverloaded:
                outcome = "overloaded"
            with lock:
                outcomes.append(outcome)

    async with started_bus(max_pending=5) as bus:
        bus.subscribe("evt", slow)
        start = threading.Barrier(8)
        threads = [
            threading.Thread(target=emit_from_thread, args=(bus, start, 3 * i)) for i in range(8)
        ]
        for thread in threads:
            thread.start()
        async with asyncio.timeout(5):
            while True:
                if not any(thread.is_alive() for thread in threads):
                    break
                await asyncio.sleep(0.005)
        # Let the loop take whatever the threads handed over.
        for _ in range(10):
            await asyncio.sleep(0)
        pending_at_peak = bus.pending
        gate.set()
        assert await bus.drain(5) == 0

    assert len(outcomes) == 24
    assert outcomes.count("accepted") == 5
    assert pending_at_peak == 5
    assert len(ran) == 5


async def test_drain_with_a_timeout_reports_what_is_still_in_flight_and_cancels_nothing() -> None:
    gate = asyncio.Event()
    ran: list[int] = []

    async def slow(n: int) -> None:
        await gate.wait()
        ran.append(n)

    async with started_bus() as bus:
        bus.subscribe("evt", slow)
        for n in range(3):
            bus.emit_nowait("evt", n)
        assert await bus.drain(0.05) == 3
        assert bus.pending == 3
        gate.set()
        assert await bus.drain(5) == 0

    assert sorted(ran) == [0, 1, 2]


async def test_concurrent_drains_all_return_once_the_bus_is_idle() -> None:
    gate = asyncio.Event()

    async def slow() -> None:
        await gate.wait()

    async with started_bus() as bus:
        bus.subscribe("evt", slow)
        bus.emit_nowait("evt")
        first = asyncio.create_task(bus.drain())  # no timeout: waits until idle
        await asyncio.sleep(0)
        second = asyncio.create_task(bus.drain())
        await asyncio.sleep(0)
        gate.set()
        assert await asyncio.wait_for(second, 2) == 0
        # The first waiter must be woken too, not left waiting forever.
        assert await asyncio.wait_for(first, 2) == 0


DRAIN_SRC = """
    import asyncio

    from fastapi_opinionated_eventbus import OnInternalEvent, eventbus_api

    done = []


    @OnInternalEvent("index.rebuild")
    async def rebuild():
        # Finishes only once the app's shutdown is draining (bounded wait).
        async with asyncio.timeout(5):
            while (await eventbus_api().health())["state"] != "draining":
                await asyncio.sleep(0.005)
        done.append("rebuild")
"""


async def test_a_drain_waiting_when_the_app_shuts_down_returns_with_the_shutdown(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    app = eventbus_app_factory(app_dir({"search/handlers.py": DRAIN_SRC}), shutdown_timeout=5)
    handlers = domain("search.handlers")
    async with running(app):
        bus = eventbus_api()
        bus.emit_nowait("index.rebuild")
        waiter = asyncio.create_task(bus.drain())  # e.g. a health check waiting for quiet
        await asyncio.sleep(0)

    assert handlers.done == ["rebuild"]
    assert bus.lost_events == 0
    assert await asyncio.wait_for(waiter, 2) == 0
