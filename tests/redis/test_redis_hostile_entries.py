"""Entries written straight into the events stream by anyone with write access to Redis
(6b item 7): a malformed one is dead-lettered on its first delivery with its reason, and
nothing read from the entry can forge a log line."""

from __future__ import annotations

import asyncio
import logging
from typing import cast

import pytest
import redis.asyncio as aioredis
from redis.typing import EncodableT, FieldT
from redis_support import Entries, Make, eventually
from support import HOSTILE_IDENTITIES, assert_nothing_forged, hostile_body


def stream(prefix: str) -> str:
    return f"{{{prefix}}}:events"


def dead(prefix: str) -> str:
    return f"{{{prefix}}}:dead"


def entry(name: str, event_id: str, cid: str | None) -> dict[str, bytes]:
    return {"id": event_id.encode(), "name": name.encode(), "body": hostile_body(cid)}


HOSTILE = {case: entry(*identity) for case, identity in HOSTILE_IDENTITIES.items()}


@pytest.mark.parametrize("fields", HOSTILE.values(), ids=HOSTILE.keys())
async def test_a_hostile_entry_is_dead_lettered_at_once_and_forges_no_log_line(
    make_bus: Make,
    redis: aioredis.Redis,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
    fields: dict[FieldT, EncodableT],
) -> None:
    done = asyncio.Event()

    async def handler() -> None:
        done.set()

    # max_deliveries x visibility_timeout is far beyond the test's patience: only a
    # dead letter on the first delivery passes.
    bus = make_bus(visibility_timeout=60, max_deliveries=5)
    bus.subscribe("note", handler)
    bus.subscribe("note*", handler)  # every hostile name would match a pattern
    caplog.set_level(logging.INFO)
    await bus.start()
    await redis.xadd(stream(prefix), fields)
    await bus.emit("note")  # the consumer carries on after the hostile entry
    await asyncio.wait_for(done.wait(), 20)

    async def dead_lettered() -> bool:
        return int(await redis.xlen(dead(prefix))) == 1

    await eventually(dead_lettered, timeout=10, what="the hostile entry dead-lettered")
    [(_, letter)] = cast(Entries, await redis.xrange(dead(prefix)))
    assert letter[b"reason"].startswith(b"malformed entry: ")
    assert letter[b"deliveries"] == b"1"
    assert_nothing_forged(caplog)
