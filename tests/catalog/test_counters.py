"""The live counters behind the catalog page: per event name and per handler, in flight,
the recent failures; bounded however many names are emitted."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi_opinionated_eventbus import EventBus, RetryPolicy
from fastapi_opinionated_eventbus._core.correlation import request_correlation_id
from fastapi_opinionated_eventbus.metrics import CountingCollector

NO_WAIT = RetryPolicy(max_attempts=2, initial_delay=0, jitter=0)


def _handler_row(snapshot: dict[str, Any], handler_suffix: str) -> dict[str, Any]:
    row: dict[str, Any]
    [row] = [h for h in snapshot["handlers"] if h["handler"].endswith(handler_suffix)]
    return row


async def test_counts_by_event_and_by_handler_with_retries_and_failures() -> None:
    bus = EventBus(introspection_path="/_eventbus")
    await bus.start()
    calls = {"flaky": 0}

    async def welcome(user: dict[str, Any]) -> None:
        pass

    async def flaky(user: dict[str, Any]) -> None:
        calls["flaky"] += 1
        if calls["flaky"] == 1:
            raise ValueError(f"first time fails for {user['email']}")

    def doomed(order: dict[str, Any]) -> None:
        raise KeyError(order["secret"])

    async def audit(payload: Any) -> None:
        pass

    bus.subscribe("user.created", welcome)
    bus.subscribe("user.created", flaky, retry=NO_WAIT)
    bus.subscribe("order.placed", doomed)
    bus.subscribe("*", audit)
    await bus.emit("user.created", {"email": "jane@example.com"})
    await bus.emit("user.created", {"email": "joe@example.com"})
    token = request_correlation_id.set("req-42")
    try:
        failed = await bus.emit("order.placed", {"secret": "s3cr3t-card"})
    finally:
        request_correlation_id.reset(token)
    await bus.aclose()
    assert bus.counters is not None
    snapshot = bus.counters.snapshot()

    assert snapshot["events"]["user.created"] == {
        "emitted": 2,
        "handled": 6,  # welcome twice, flaky twice (once after a retry), audit twice
        "failed": 1,
        "retried": 1,
        "dead_lettered": 0,
        "lost": 0,
        "in_flight": 0,
    }
    assert snapshot["events"]["order.placed"] == {
        "emitted": 1,
        "handled": 1,  # audit
        "failed": 1,
        "retried": 0,
        "dead_lettered": 1,
        "lost": 0,
        "in_flight": 0,
    }
    # The pattern handler is one row under its pattern, whatever names it saw.
    assert _handler_row(snapshot, "audit") == {
        "subscription": "*",
        "handler": _handler_row(snapshot, "audit")["handler"],
        "handled": 3,
        "failed": 0,
        "retried": 0,
        "dead_lettered": 0,
        "in_flight": 0,
    }
    flaky_row = _handler_row(snapshot, "flaky")
    assert (flaky_row["handled"], flaky_row["failed"], flaky_row["retried"]) == (2, 1, 1)
    assert _handler_row(snapshot, "doomed")["dead_lettered"] == 1
    assert (snapshot["emitted"], snapshot["failed"], snapshot["dead_lettered"]) == (3, 2, 1)

    newest, older = bus.counters.recent_failures()
    [letter] = failed.failures
    assert newest == {
        "at": newest["at"],
        "event": "order.placed",
        "event_id": failed.event_id,
        "correlation_id": "req-42",
        "subscription": "order.placed",
        "handler": letter.handler,
        "exception_type": "KeyError",
        "attempt": 1,
        "final": True,
    }
    assert older["event"] == "user.created"
    assert older["exception_type"] == "ValueError"
    assert (older["attempt"], older["final"]) == (1, False)  # retried, then it worked
    # Never the exception's message, which quotes the payload.
    text = repr(bus.counters.recent_failures())
    assert "s3cr3t-card" not in text and "jane@example.com" not in text


async def test_runs_in_flight_per_event_and_handler() -> None:
    bus = EventBus(introspection_path="/_eventbus")
    await bus.start()
    release = asyncio.Event()
    started = asyncio.Event()

    async def slow(job: int) -> None:
        started.set()
        await release.wait()

    bus.subscribe("report.requested", slow, timeout=5)
    emitting = asyncio.create_task(bus.emit("report.requested", 1))
    await asyncio.wait_for(started.wait(), 5)
    assert bus.counters is not None
    during = bus.counters.snapshot()
    release.set()
    await asyncio.wait_for(emitting, 5)
    after = bus.counters.snapshot()
    await bus.aclose()

    assert during["events"]["report.requested"]["in_flight"] == 1
    assert _handler_row(during, "slow")["in_flight"] == 1
    assert during["in_flight"] == 1
    assert after["events"]["report.requested"]["in_flight"] == 0
    assert _handler_row(after, "slow")["in_flight"] == 0
    assert after["events"]["report.requested"]["handled"] == 1


async def test_event_names_beyond_the_limit_share_one_row() -> None:
    counters = CountingCollector(max_event_names=3, recent_failures=2)
    bus = EventBus(metrics=counters)  # a CountingCollector given as metrics is the bus's own
    await bus.start()

    async def broken(n: int) -> None:
        raise RuntimeError("no")

    bus.subscribe("job.*", broken)
    for n in range(50):
        await bus.emit(f"job.{n}", n)
    await bus.aclose()
    snapshot = counters.snapshot()

    assert bus.counters is counters
    assert list(snapshot["events"]) == ["job.0", "job.1", "job.2", "(other)"]
    assert snapshot["events"]["(other)"]["emitted"] == 47
    assert snapshot["events"]["(other)"]["dead_lettered"] == 47
    assert len(snapshot["handlers"]) == 1  # job.* and its handler
    assert [f["event"] for f in counters.recent_failures()] == ["job.49", "job.48"]
    assert snapshot["limits"] == {"event_names": 3, "handlers": 500, "overflow": "(other)"}


async def test_no_counters_without_introspection() -> None:
    bus = EventBus()
    assert bus.counters is None
    assert bus.metrics is None
