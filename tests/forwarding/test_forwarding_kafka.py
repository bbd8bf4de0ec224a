"""Forwarding with the Kafka backend: a forwarder runs in the process of the app's group
that owns the record's partition, once per event for the app, and the record's offset is
committed only once its batch was accepted (or the event dead-lettered)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import pytest
from forwarding_support import RecordingForwarder, dead_letter_of_a_failing_forward, until

from fastapi_opinionated_eventbus import EventBus

Make = Callable[..., EventBus]


@pytest.fixture
async def make_bus(kafka_servers: str) -> AsyncIterator[Make]:
    topic = f"fwd-{uuid.uuid4().hex[:10]}"
    buses: list[EventBus] = []

    def make(**options: Any) -> EventBus:
        bus = EventBus(
            backend="kafka",
            kafka_bootstrap_servers=kafka_servers,
            kafka_topic=topic,
            kafka_group_id=f"{topic}.group",
            kafka_partitions=1,
            kafka_consumer_options={"session_timeout_ms": 6000, "heartbeat_interval_ms": 500},
            shutdown_timeout=2.0,
            **options,
        )
        buses.append(bus)
        return bus

    yield make
    for bus in buses:
        await bus.aclose()


async def committed(bus: EventBus) -> int:
    """The group's committed offset of the topic's one partition (0: none yet)."""
    offsets = (await bus.health())["committed_offsets"]
    return int(offsets.get("0") or 0)


async def wait_committed(bus: EventBus, count: int) -> None:
    async def there() -> bool:
        return await committed(bus) == count and bus.backend.pending_entries == 0

    for _ in range(400):
        if await there():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the group did not commit {count} records: {await committed(bus)}")


async def test_the_consuming_process_forwards_each_event_once(make_bus: Make) -> None:
    producer = make_bus()  # no handler, no forwarder: it joins no group
    forwarder = RecordingForwarder()
    consumer = make_bus()
    consumer.forward("order.*", forwarder, max_wait=0.05)
    for bus in (producer, consumer):
        await bus.start()
    # A started bus: each emit has an event, never None.
    sent = cast(
        "list[str]", [(await producer.emit("order.paid", {"n": n})).event_id for n in range(20)]
    )
    await until(lambda: len(forwarder.events) >= 20, timeout=30)  # the group's first assignment
    await asyncio.sleep(0.3)  # nothing arrives twice
    assert sorted(e.id for e in forwarder.events) == sorted(sent)
    await wait_committed(consumer, 20)


async def test_an_event_whose_batch_keeps_failing_goes_to_the_dead_letter_topic(
    make_bus: Make,
) -> None:
    consumer = make_bus()
    # The group's first assignment takes seconds.
    await dead_letter_of_a_failing_forward(consumer, timeout=30)
    await wait_committed(consumer, 1)  # committed after the dead letter was stored
