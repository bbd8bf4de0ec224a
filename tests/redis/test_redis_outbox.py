"""The outbox with the Redis backend: committed events are published to the stream and
handled by a consumer in another process; rolled-back ones never leave the database."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import cast

import redis.asyncio as aioredis
from redis_support import Hash, Make, Worker, eventually
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from support import Postgres, commit_three_and_roll_one_back


async def test_committed_events_reach_a_consumer_in_another_process(
    postgres: Postgres,
    make_bus: Make,
    workers: Callable[..., Worker],
    redis: aioredis.Redis,
    prefix: str,
) -> None:
    consumer = workers("consumer")
    await consumer.ready(redis)
    table = f"outbox_{uuid.uuid4().hex[:10]}"
    bus = make_bus(outbox_url=postgres.async_url, outbox_table=table, outbox_poll_interval=0.1)
    await bus.start()  # publishes only: no handler in this process
    engine = create_async_engine(postgres.async_url)
    try:
        committed, rolled_back = await commit_three_and_roll_one_back(bus, engine)

        async def handled() -> dict[bytes, bytes]:
            return cast(Hash, await redis.hgetall(f"{prefix}:handled"))

        async def all_handled() -> bool:
            return ids <= set(await handled())

        ids = {e.id.encode() for e in committed}
        await eventually(all_handled, what="the committed events handled")
        await asyncio.sleep(0.5)
        counts = await handled()
        assert counts == {event_id: b"1" for event_id in ids}  # once each, nothing else
        assert rolled_back.id.encode() not in counts
        async with engine.connect() as conn:
            assert (await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar() == 0
    finally:
        async with engine.begin() as conn:
            await conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
        await engine.dispose()
