"""The consumer's Acker on its own, against the session's real Redis: acknowledgements in
bulk, what stop() still sends, and what it reports when it cannot.

(Capacity, the other half of flow control, needs no server: tests/unit/test_flow.py.)
"""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from redis_support import eventually
from support import free_port

from fastapi_opinionated_eventbus.backends.redis.flow import Acker

GROUP = "g"
# Only used in the Acker's log lines: the password must never reach them.
LOGGED_URL = "redis://:acker-s3cret@redis.internal:6379/0"


async def pending_entries(
    redis: aioredis.Redis, prefix: str, count: int
) -> tuple[str, list[bytes]]:
    """A stream with ``count`` entries delivered to a consumer and not acknowledged."""
    stream = f"{{{prefix}}}:flow"
    await redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
    ids: list[bytes] = []
    for n in range(count):
        entry_id = await redis.xadd(stream, {"n": str(n)})
        assert isinstance(entry_id, bytes)
        ids.append(entry_id)
    await redis.xreadgroup(GROUP, "consumer", {stream: ">"})
    assert await unacknowledged(redis, stream) == count
    return stream, ids


async def unacknowledged(redis: aioredis.Redis, stream: str) -> int:
    summary = await redis.xpending(stream, GROUP)
    count: int = summary["pending"]
    return count


async def xack_calls(redis: aioredis.Redis) -> int:
    stats = await redis.info("commandstats")
    calls: int = stats.get("cmdstat_xack", {}).get("calls", 0)
    return calls


async def test_entries_finished_meanwhile_are_acknowledged_in_one_command(
    redis: aioredis.Redis, prefix: str
) -> None:
    stream, ids = await pending_entries(redis, prefix, 5)
    acker = Acker(redis, LOGGED_URL, stream, GROUP)
    acker.start()
    try:
        before = await xack_calls(redis)
        for entry_id in ids[:3]:
            acker.add(entry_id)
        assert ids[0] in acker and len(acker) == 3  # kept until Redis has them

        async def two_left() -> bool:
            return await unacknowledged(redis, stream) == 2

        await eventually(two_left, timeout=5, what="three entries acknowledged")

        assert await xack_calls(redis) - before == 1
        assert len(acker) == 0 and ids[0] not in acker
        still_pending = await redis.xpending_range(stream, GROUP, "-", "+", 10)
        assert [entry["message_id"] for entry in still_pending] == ids[3:]
    finally:
        assert await acker.stop(5) == 0


async def test_stop_sends_what_is_still_pending(redis: aioredis.Redis, prefix: str) -> None:
    stream, ids = await pending_entries(redis, prefix, 4)
    acker = Acker(redis, LOGGED_URL, stream, GROUP)  # never started: nothing sent yet
    for entry_id in ids:
        acker.add(entry_id)

    assert await acker.stop(5) == 0

    assert await unacknowledged(redis, stream) == 0
    assert len(acker) == 0


async def test_stop_reports_what_it_could_not_acknowledge(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"redis://:acker-s3cret@127.0.0.1:{free_port()}/0"  # nothing listens there
    client = aioredis.from_url(url, socket_connect_timeout=1)
    try:
        acker = Acker(client, url, "{t}:flow", GROUP)
        acker.add(b"1-0")
        acker.add(b"2-0")

        assert await acker.stop(2) == 2
    finally:
        await client.aclose()

    assert "2 handled event(s) could not be acknowledged at shutdown" in caplog.text
    assert "they will be delivered again" in caplog.text
    assert "acker-s3cret" not in caplog.text


async def test_an_error_waiting_cannot_fix_drops_the_acks_and_says_so(
    redis: aioredis.Redis, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    stream = f"{{{prefix}}}:flow"
    await redis.set(stream, "not a stream")  # XACK: WRONGTYPE, not a lost connection
    acker = Acker(redis, LOGGED_URL, stream, GROUP)
    acker.start()
    try:
        acker.add(b"1-0")
        acker.add(b"2-0")

        async def all_dropped() -> bool:
            return len(acker) == 0

        await eventually(all_dropped, timeout=5, what="the acks to be given up")

        assert f"XACK of 2 entries on {stream} at" in caplog.text
        assert "failed and was given up" in caplog.text
        assert "WRONGTYPE" in caplog.text
        assert "acker-s3cret" not in caplog.text
    finally:
        assert await acker.stop(5) == 0
