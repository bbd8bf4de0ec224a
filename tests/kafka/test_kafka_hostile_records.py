"""Records written straight into the events topic by anyone allowed to produce to it
(6b item 7): a hostile one is dead-lettered on its first delivery with its reason, and
nothing read from its headers or body can forge a log line."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaProducer
from kafka_support import eventually
from support import FORGED, HOSTILE_IDENTITIES, assert_nothing_forged, hostile_body

from fastapi_opinionated_eventbus import EventBus

Make = Callable[..., EventBus]

Headers = list[tuple[str, bytes]]


def record(name: str, event_id: str, cid: str | None) -> tuple[bytes, Headers]:
    """The value and headers of a record as a foreign producer could write it."""
    headers = [("eventbus-name", name.encode()), ("eventbus-id", event_id.encode())]
    return hostile_body(cid), headers


HOSTILE = {case: record(*identity) for case, identity in HOSTILE_IDENTITIES.items()}


async def test_hostile_records_are_dead_lettered_at_once_and_forge_no_log_line(
    make_bus: Make, kafka_servers: str, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    done = asyncio.Event()

    async def handler() -> None:
        done.set()

    # One partition: the valid event comes after the hostile ones, so once it ran they
    # were all handled (each on its first and only delivery).
    bus = make_bus(kafka_partitions=1)
    bus.subscribe("note", handler)
    bus.subscribe("note*", handler)  # every hostile name would match a pattern
    caplog.set_level(logging.INFO)
    await bus.start()
    raw = AIOKafkaProducer(bootstrap_servers=kafka_servers)
    await raw.start()
    try:
        for value, headers in HOSTILE.values():
            await raw.send_and_wait(topic, value, headers=headers)
    finally:
        await raw.stop()
    await bus.emit("note")  # the consumer carries on after the hostile records
    await asyncio.wait_for(done.wait(), 30)

    async def dead_lettered() -> bool:
        return len(await bus.dead_letters()) == len(HOSTILE)

    await eventually(dead_lettered, timeout=20, what="the hostile records dead-lettered")
    letters = await bus.dead_letters()
    assert all(letter.reason.startswith("malformed record: ") for letter in letters)
    reasons = " ".join(letter.reason for letter in letters)
    for why in ("event name", "event id", "correlation id"):
        assert why in reasons, reasons
    # Listed sanitised: a letter's name and id came from outside.
    for letter in letters:
        assert letter.event.name.isprintable() and letter.event.id.isprintable()
    assert_nothing_forged(caplog)


async def test_forged_dead_letters_forge_no_log_line_when_replayed(
    make_bus: Make, kafka_servers: str, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A letter written into the dead-letter topic by someone else: its reason and handler
    headers reached the replay's log lines as they were."""
    bus = make_bus()  # no handler: it joins no group, and replays nothing
    caplog.set_level(logging.INFO)
    await bus.start()
    letter = [("eventbus-name", b"job"), ("dead-letter-handler", b"app:job\n" + FORGED.encode())]
    raw = AIOKafkaProducer(bootstrap_servers=kafka_servers)
    await raw.start()
    try:
        # One that does not decode (its reason is logged), one whose handler is not here.
        reason = ("dead-letter-reason", b"bad\n" + FORGED.encode() + b" by a reason")
        await raw.send_and_wait(
            f"{topic}.dlq", b"{not json", headers=[*letter, ("eventbus-id", b"x-1"), reason]
        )
        await raw.send_and_wait(
            f"{topic}.dlq", hostile_body(None), headers=[*letter, ("eventbus-id", b"x-2")]
        )
    finally:
        await raw.stop()

    result = await bus.replay_dead_letters()

    assert result.handled == 0
    assert len(await bus.dead_letters()) == 2  # kept, written again
    assert sum("not replayed" in r.getMessage() for r in caplog.records) == 2
    assert_nothing_forged(caplog)
