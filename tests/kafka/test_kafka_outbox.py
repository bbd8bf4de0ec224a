"""The outbox with the Kafka backend: committed events are published to the topic and
handled by a consumer in another process; rolled-back ones never leave the database."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Callable

from kafka_support import Worker, eventually
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from support import Postgres, commit_three_and_roll_one_back

from fastapi_opinionated_eventbus import EventBus


async def test_committed_events_reach_a_consumer_in_another_process(
    postgres: Postgres, workers: Callable[..., Worker], kafka_servers: str, topic: str
) -> None:
    consumer = workers("consumer")
    await consumer.ready()
    table = f"outbox_{uuid.uuid4().hex[:10]}"
    bus = EventBus(
        backend="kafka",
        kafka_bootstrap_servers=kafka_servers,
        kafka_topic=topic,
        kafka_partitions=4,  # as the worker's
        outbox_url=postgres.async_url,
        outbox_table=table,
        outbox_poll_interval=0.1,
    )
    await bus.start()  # publishes only: no handler in this process
    engine = create_async_engine(postgres.async_url)
    try:
        committed, rolled_back = await commit_three_and_roll_one_back(bus, engine)

        def ended() -> Counter[str]:
            return Counter(r["id"] for r in consumer.records() if r["e"] == "end")

        ids = {e.id for e in committed}

        async def all_handled() -> bool:
            return ids <= set(ended())

        await eventually(all_handled, timeout=60, what="the committed events handled")
        await asyncio.sleep(0.5)
        assert ended() == Counter(ids)  # once each, nothing else
        assert rolled_back.id not in ended()
        async with engine.connect() as conn:
            assert (await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar() == 0
    finally:
        await bus.aclose()
        async with engine.begin() as conn:
            await conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
        await engine.dispose()
