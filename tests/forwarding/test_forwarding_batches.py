"""Forwarding's semantics on a bus, with a custom forwarder (as a user writes one): batches,
retries, dead letters, timeouts, concurrency, priorities, and shutdown."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from forwarding_support import RecordingForwarder, until
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from support import strip_ansi

from fastapi_opinionated_eventbus import EventBus, RetryPolicy, TypedEvent
from fastapi_opinionated_eventbus.forwarding import Forward, ForwardingFailed
from fastapi_opinionated_eventbus.metrics import CountingCollector

ONCE = RetryPolicy(max_attempts=1)
TWICE = RetryPolicy(max_attempts=2, initial_delay=0.01, jitter=0)


@pytest.fixture
async def bus() -> AsyncIterator[EventBus]:
    bus = EventBus()
    await bus.start()
    try:
        yield bus
    finally:
        await bus.aclose(timeout=2)


@pytest.fixture
def forwarder() -> RecordingForwarder:
    return RecordingForwarder()


def ids(events: Any) -> list[str]:
    return [event.id for event in events]


async def test_events_go_in_batches_of_batch_size_then_the_rest_after_max_wait(
    bus: EventBus, forwarder: RecordingForwarder
) -> None:
    bus.forward("order.*", forwarder, batch_size=5, max_wait=1.0, concurrency=1)
    sent = [bus.emit_nowait("order.paid", n) for n in range(12)]
    await until(lambda: len(forwarder.batches) == 2)
    await asyncio.sleep(0.1)
    assert [len(batch) for batch in forwarder.batches] == [5, 5]  # the last 2 wait
    assert await bus.drain(5) == 0
    assert [len(batch) for batch in forwarder.batches] == [5, 5, 2]
    assert ids(forwarder.events) == ids(sent)  # in order, each once
    assert [event.args for event in forwarder.events] == [(n,) for n in range(12)]


async def test_a_lone_event_waits_max_wait_and_an_awaited_emit_waits_for_its_batch(
    bus: EventBus, forwarder: RecordingForwarder
) -> None:
    bus.forward("order.paid", forwarder, max_wait=1.0)
    emitting = asyncio.create_task(bus.emit("order.paid", {"id": 1}))
    await asyncio.sleep(0.2)
    assert forwarder.calls == 0 and not emitting.done()
    result = await asyncio.wait_for(emitting, 5)
    assert result.ok and result.handled == 1
    assert ids(forwarder.events) == [result.event_id]


async def test_an_event_is_handled_only_once_its_batch_was_accepted(
    bus: EventBus, forwarder: RecordingForwarder
) -> None:
    forwarder.block = asyncio.Event()
    bus.forward("order.paid", forwarder, max_wait=0)
    emitting = asyncio.create_task(bus.emit("order.paid", 1))
    await until(lambda: forwarder.calls == 1)
    await asyncio.sleep(0.05)
    assert not emitting.done()  # sent, not yet accepted
    forwarder.block.set()
    assert (await asyncio.wait_for(emitting, 5)).ok


async def test_a_failed_batch_is_retried_event_by_event_in_a_later_batch(
    bus: EventBus, forwarder: RecordingForwarder
) -> None:
    forwarder.fail_batches = 1
    bus.forward("order.*", forwarder, retry=TWICE, max_wait=0.01)
    sent = [bus.emit_nowait("order.paid", n) for n in range(3)]
    assert await bus.drain(5) == 0
    assert sorted(ids(forwarder.events)) == sorted(ids(sent))  # each accepted once
    assert forwarder.calls == 2
    assert await bus.dead_letters() == []


async def test_after_the_last_attempt_each_event_of_the_batch_is_dead_lettered_with_the_reason(
    bus: EventBus, forwarder: RecordingForwarder
) -> None:
    forwarder.fail_batches = 100
    bus.forward("order.*", forwarder, retry=TWICE, max_wait=0.01)
    sent = [bus.emit_nowait("order.paid", n) for n in range(3)]
    assert await bus.drain(5) == 0
    letters = await bus.dead_letters()
    assert sorted(ids(letter.event for letter in letters)) == sorted(ids(sent))
    for letter in letters:
        assert letter.handler == "forward:Recording"
        assert letter.subscription == "order.*"
        assert letter.attempts == 2
        assert letter.exception_type == "ForwardingFailed"
        assert "ConnectionError: the partner's API is down" in letter.message
        assert letter.event.id in letter.message
    assert forwarder.events == []


async def test_a_dead_letter_replayed_is_forwarded(
    bus: EventBus, forwarder: RecordingForwarder
) -> None:
    forwarder.fail_batches = 1
    bus.forward("order.paid", forwarder, retry=ONCE, max_wait=0)
    result = await bus.emit("order.paid", 7)
    assert [type(f.exception) for f in result.failures] == [ForwardingFailed]
    replayed = await bus.replay_dead_letters()
    assert replayed.handled == 1 and replayed.ok
    assert ids(forwarder.events) == [result.event_id]
    assert await bus.dead_letters() == []


async def test_a_partial_failure_fails_only_the_events_the_forwarder_refused(
    bus: EventBus, forwarder: RecordingForwarder
) -> None:
    bus.forward("order.*", forwarder, retry=ONCE, max_wait=0.2)
    sent = [bus.emit_nowait("order.paid", n) for n in range(3)]
    forwarder.refuse = {sent[1].id}  # before the batch leaves
    assert await bus.drain(5) == 0
    assert ids(forwarder.events) == [sent[0].id, sent[2].id]
    (letter,) = await bus.dead_letters()
    assert letter.event.id == sent[1].id
    assert "not accepted: refused by the partner" in letter.message


async def test_a_timed_out_event_leaves_the_batch_it_was_waiting_for(
    bus: EventBus, forwarder: RecordingForwarder
) -> None:
    bus.forward("order.paid", forwarder, retry=ONCE, timeout=0.1, max_wait=0.5)
    result = await bus.emit("order.paid", 1)
    (failure,) = result.failures
    assert type(failure.exception).__name__ == "HandlerTimeout"
    await asyncio.sleep(0.6)
    assert forwarder.calls == 0  # never sent: nobody waits for it any more


async def test_concurrency_bounds_the_batches_in_flight(
    bus: EventBus, forwarder: RecordingForwarder
) -> None:
    forwarder.block = asyncio.Event()
    bus.forward("order.*", forwarder, batch_size=1, max_wait=0, concurrency=2)
    for n in range(5):
        bus.emit_nowait("order.paid", n)
    await until(lambda: forwarder.calls == 2)
    await asyncio.sleep(0.1)
    assert forwarder.calls == 2
    forwarder.block.set()
    assert await bus.drain(5) == 0
    assert forwarder.calls == 5


async def test_an_ordered_forwarder_sends_one_batch_at_a_time(
    bus: EventBus, forwarder: RecordingForwarder
) -> None:
    forwarder.ordered = True  # type: ignore[attr-defined]
    forwarder.block = asyncio.Event()
    sub = bus.forward("order.*", forwarder, batch_size=1, max_wait=0)
    assert Forward("order.*", forwarder).batches_in_flight == 1
    assert Forward("order.*", RecordingForwarder()).batches_in_flight == 4
    for n in range(3):
        bus.emit_nowait("order.paid", n)
    await until(lambda: forwarder.calls == 1)
    await asyncio.sleep(0.1)
    assert forwarder.calls == 1
    forwarder.block.set()
    assert await bus.drain(5) == 0
    assert sub.plain is False


async def test_priority_orders_the_forwarder_among_handlers(
    bus: EventBus, forwarder: RecordingForwarder
) -> None:
    seen_by_handler: list[int] = []

    async def after_forwarding(n: int) -> None:
        seen_by_handler.append(len(forwarder.events))

    bus.subscribe("order.paid", after_forwarding, priority=0)
    bus.forward("order.paid", forwarder, priority=10, max_wait=0)
    result = await bus.emit("order.paid", 1)
    assert result.handled == 2 and result.ok
    assert seen_by_handler == [1]  # the forwarder's batch was accepted first


async def test_a_forward_subscription_never_takes_the_plain_fast_path(
    bus: EventBus, forwarder: RecordingForwarder
) -> None:
    sub = bus.forward("order.paid", forwarder, retry=ONCE)
    assert sub.plain is False and sub.name == "forward:Recording"
    # Alone on its event, awaited and in the background: both go through the general path.
    assert (await bus.emit("order.paid", 1)).ok
    bus.emit_nowait("order.paid", 2)
    assert await bus.drain(5) == 0
    assert [e.args for e in forwarder.events] == [(1,), (2,)]


async def test_unforward_stops_forwarding(bus: EventBus, forwarder: RecordingForwarder) -> None:
    bus.forward("order.*", forwarder, max_wait=0)
    assert bus.unforward("order.*", forwarder) is True
    assert bus.unforward("order.*", forwarder) is False
    assert (await bus.emit("order.paid", 1)).handled == 0
    assert forwarder.calls == 0


async def test_shutdown_sends_pending_batches_at_once(forwarder: RecordingForwarder) -> None:
    bus = EventBus()
    bus.forward("order.*", forwarder, batch_size=100, max_wait=3600)
    await bus.start()
    sent = [bus.emit_nowait("order.paid", n) for n in range(3)]
    assert await bus.aclose(timeout=5) == 0
    assert ids(forwarder.events) == ids(sent)
    assert bus.lost_events == 0
    assert forwarder.closed == 1


async def test_shutdown_reports_events_not_accepted_in_time_as_lost_by_name_and_id(
    forwarder: RecordingForwarder, caplog: pytest.LogCaptureFixture
) -> None:
    forwarder.block = asyncio.Event()  # never set: the other side never answers
    bus = EventBus()
    bus.forward("order.*", forwarder, retry=ONCE, max_wait=0)
    await bus.start()
    background = [bus.emit_nowait("order.paid", n) for n in range(2)]
    awaited = asyncio.create_task(bus.emit("order.shipped", 3))  # not tracked by drain
    await asyncio.sleep(0.05)
    with caplog.at_level(logging.ERROR):
        lost = await bus.aclose(timeout=0.5)
    assert lost == 3 and bus.lost_events == 3
    log = strip_ansi(caplog.text)
    for envelope in background:
        assert envelope.id in log
    result = await asyncio.wait_for(awaited, 5)  # released, not left hanging
    assert f"'order.shipped' (id={result.event_id}" in log
    (failure,) = result.failures
    assert isinstance(failure.exception, ForwardingFailed)
    assert "shut down" in str(failure.exception)
    assert forwarder.closed == 1


async def test_bad_forward_options_are_refused_with_the_reason() -> None:
    forwarder = RecordingForwarder()
    bus = EventBus()
    # Options of several types, some deliberately wrong: checked by the bus, not by mypy.
    cases: list[tuple[dict[str, Any], str]] = [
        ({"batch_size": 0}, "batch_size must be between 1 and 10000"),
        ({"batch_size": True}, "batch_size must be an int"),
        ({"max_wait": -1}, "max_wait must be >= 0"),
        ({"send_timeout": 0}, "send_timeout must be > 0"),
        ({"concurrency": 0}, "concurrency must be between 1"),
        ({"timeout": -1}, "timeout must be > 0"),
    ]
    for options, message in cases:
        with pytest.raises((TypeError, ValueError), match=message):
            bus.forward("order.*", forwarder, **options)

    class Sync:
        def send_many(self, envelopes: Any) -> None: ...

    with pytest.raises(TypeError, match="must be an async def"):
        bus.forward("order.*", Sync())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="needs an `async def send_many"):
        bus.forward("order.*", object())  # type: ignore[arg-type]
    assert bus.subscriptions() == []


async def test_metrics_and_tracing_see_each_attempt_of_a_forward_subscription(
    spans: InMemorySpanExporter,
) -> None:
    counters = CountingCollector()
    bus = EventBus(metrics=counters, tracing=True)
    forwarder = RecordingForwarder()
    forwarder.fail_batches = 1
    bus.forward("order.*", forwarder, retry=TWICE, max_wait=0)
    await bus.start()
    result = await bus.emit("order.paid", 1)
    await bus.aclose()
    assert result.ok
    assert (counters.counts["failed"], counters.counts["retried"]) == (1, 1)
    assert counters.counts["handled"] == 1
    handled = [
        span.attributes
        for span in spans.get_finished_spans()
        if span.name == "eventbus handle order.paid" and span.attributes
    ]
    assert [(a["eventbus.handler"], a["eventbus.attempt"]) for a in handled] == [
        ("forward:Recording", 1),
        ("forward:Recording", 2),
    ]
    assert [a["eventbus.outcome"] for a in handled] == ["error", "ok"]


async def test_a_typed_event_class_subscribes_by_its_name_and_validates_payloads(
    bus: EventBus, forwarder: RecordingForwarder
) -> None:
    class OrderPaid(TypedEvent):
        __event_name__ = "order.paid"
        order_id: int

    sub = bus.forward(OrderPaid, forwarder, max_wait=0)
    assert sub.event == "order.paid"
    assert (await bus.emit("order.paid", {"order_id": "7"})).ok
    (event,) = forwarder.events
    assert event.args == (OrderPaid(order_id=7),)
