"""Kafka shutdown under attack (6b items 1 and 5): every stage is bounded, and events in
flight are reported for what they are: lost when the producer never took them,
unconfirmed once it did (it may still deliver them)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from kafka_support import KafkaBroker
from support import close_while_a_handler_ignores_cancellation

from fastapi_opinionated_eventbus import BackendUnavailable, EventBus

Make = Callable[..., EventBus]


async def test_shutdown_is_bounded_when_a_handler_ignores_cancellation(make_bus: Make) -> None:
    """aclose() waited forever for a cancelled handler that swallows CancelledError."""
    # The first record arrives after the group's first assignment: seconds.
    bus = make_bus(shutdown_timeout=0.3)
    await close_while_a_handler_ignores_cancellation(bus, started_within=30)


def producer_only(broker: KafkaBroker, topic: str) -> EventBus:
    """A bus with no handlers: it only publishes (no consumer keeps the broker busy)."""
    return EventBus(
        backend="kafka",
        kafka_bootstrap_servers=broker.servers,
        kafka_topic=topic,
        kafka_partitions=1,
        publish_timeout=2.0,
        shutdown_timeout=1.0,
    )


async def emit_in_background_and_close(bus: EventBus) -> dict[str, int]:
    for n in range(5):
        bus.emit_nowait("order.paid", n)
    await asyncio.sleep(0.2)  # each has taken its first step: it waits for the broker
    lost = await asyncio.wait_for(bus.aclose(timeout=0.3), 20)
    report: dict[str, int] = (await bus.health())["background"]
    assert report["lost"] == lost
    assert report["emitted"] == 5 and report["handled"] == 0 and report["abandoned"] == 0
    return report


async def test_records_the_producer_never_took_are_lost(
    private_broker: KafkaBroker, topic: str
) -> None:
    """The broker stops before this producer learnt where the topic lives: no record is
    ever handed to it, so none can be stored."""
    bus = producer_only(private_broker, topic)
    await bus.start()  # creates the topic; the producer has no metadata of it yet
    private_broker.stop()
    with pytest.raises(BackendUnavailable) as refused:
        await bus.emit("order.paid", 0)
    assert refused.value.may_be_stored is False
    assert "may be stored" not in str(refused.value)

    report = await emit_in_background_and_close(bus)
    assert (report["lost"], report["unconfirmed"]) == (5, 0)


async def test_records_handed_to_the_producer_are_unconfirmed_not_lost(
    private_broker: KafkaBroker, topic: str
) -> None:
    """They were counted lost although the producer still holds them and sends them
    whenever it reaches a broker: their fate is unknown."""
    bus = producer_only(private_broker, topic)
    await bus.start()
    assert (await bus.emit("order.paid", 0)).published  # the producer knows the topic now
    private_broker.stop()
    with pytest.raises(BackendUnavailable, match="it may be stored") as unconfirmed:
        await bus.emit("order.paid", 1)
    assert unconfirmed.value.may_be_stored is True

    report = await emit_in_background_and_close(bus)
    assert (report["lost"], report["unconfirmed"]) == (0, 5)
