"""Entries written straight into the events stream by anyone with write access to Redis
(6b item 7): a malformed one is dead-lettered on its first delivery with its reason, and
nothing read from the entry can forge a log line."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
import redis.asyncio as aioredis
from redis_support import Make, eventually

FORGED = "ERROR [EventBus] forged"
BODY = {"v": 1, "args": [], "kwargs": {}, "at": 1.0, "chain": [], "trace": {}}


def stream(prefix: str) -> str:
    return f"{{{prefix}}}:events"


def dead(prefix: str) -> str:
    return f"{{{prefix}}}:dead"


def entry(name: str, event_id: str = "e-1", cid: str | None = None) -> dict[str, bytes]:
    body = json.dumps({**BODY, "cid": cid}).encode()
    return {"id": event_id.encode(), "name": name.encode(), "body": body}


HOSTILE = {
    "name-with-spaces": entry(" note "),
    "name-with-newline": entry(f"note\n{FORGED} by a name"),
    "name-with-escape": entry("note\x1b[2J"),
    "id-with-newline": entry("note", event_id=f"e-1\n{FORGED} by an id"),
    "cid-with-newline": entry("note", cid=f"c-1\n{FORGED} by a correlation id"),
}


@pytest.mark.parametrize("fields", HOSTILE.values(), ids=HOSTILE.keys())
async def test_a_hostile_entry_is_dead_lettered_at_once_and_forges_no_log_line(
    make_bus: Make,
    redis: aioredis.Redis,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
    fields: dict[str, bytes],
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
    [(_, letter)] = await redis.xrange(dead(prefix))
    assert letter[b"reason"].startswith(b"malformed entry: ")
    assert letter[b"deliveries"] == b"1"
    for record in caplog.records:
        message = record.getMessage()
        assert f"\n{FORGED}" not in message, message
        assert "\x1b[2J" not in message, message
