"""Forwarding with the Redis backend: a forwarder runs in whichever process consumes the
event, once per event for the app, and the entry is acknowledged only once its batch was
accepted (or dead-lettered)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import pytest
import redis.asyncio as aioredis
from forwarding_support import RecordingForwarder, dead_letter_of_a_failing_forward, until

from fastapi_opinionated_eventbus import EventBus

Make = Callable[..., EventBus]


@pytest.fixture
async def make_bus(redis_url: str) -> AsyncIterator[Make]:
    prefix = f"fwd-{uuid.uuid4().hex[:10]}"
    buses: list[EventBus] = []

    def make(**options: Any) -> EventBus:
        bus = EventBus(
            backend="redis",
            redis_url=redis_url,
            redis_prefix=prefix,
            shutdown_timeout=2.0,
            **options,
        )
        buses.append(bus)
        return bus

    yield make
    for bus in buses:
        await bus.aclose()
    client = aioredis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{{{prefix}}}:*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def test_the_consuming_process_forwards_each_event_once(make_bus: Make) -> None:
    producer = make_bus()  # no handler, no forwarder: it consumes nothing
    forwarder = RecordingForwarder()
    consumers = [make_bus(redis_consumer=f"worker-{n}") for n in range(2)]  # one app's two
    for consumer in consumers:
        consumer.forward("order.*", forwarder, max_wait=0.05)
    for bus in (producer, *consumers):
        await bus.start()
    # A started bus: each emit has an event, never None.
    sent = cast(
        "list[str]", [(await producer.emit("order.paid", {"n": n})).event_id for n in range(20)]
    )
    await until(lambda: len(forwarder.events) >= 20)
    await asyncio.sleep(0.3)  # nothing arrives twice
    assert sorted(e.id for e in forwarder.events) == sorted(sent)
    for consumer in consumers:
        await until(lambda c=consumer: c.backend.pending_entries == 0)  # type: ignore[misc]


async def test_an_event_whose_batch_keeps_failing_goes_to_the_dead_letter_stream(
    make_bus: Make,
) -> None:
    consumer = make_bus()
    await dead_letter_of_a_failing_forward(consumer)
    await until(lambda: consumer.backend.pending_entries == 0)  # acknowledged after that
