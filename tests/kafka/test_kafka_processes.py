"""Several processes on one broker: emitted here, handled in worker processes.

Workers are tests/kafka/worker.py; they journal what their handlers did (see its
docstring). Every wait polls up to a generous deadline: nothing here asserts a timing.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from kafka_support import Worker, eventually

from fastapi_opinionated_eventbus import EventBus

Workers = Callable[..., Worker]
PARTITIONS = 4  # the workers' kafka_partitions


@pytest.fixture
async def emitter(kafka_servers: str, topic: str) -> AsyncIterator[EventBus]:
    """A started bus with no handlers: it publishes and joins no group."""
    bus = EventBus(
        backend="kafka",
        kafka_bootstrap_servers=kafka_servers,
        kafka_topic=topic,
        kafka_partitions=PARTITIONS,
    )
    await bus.start()
    yield bus
    await bus.aclose()


def ended(*workers: Worker) -> Counter[str]:
    """How often each event id's handler finished, over all workers."""
    return Counter(r["id"] for w in workers for r in w.records() if r["e"] == "end")


async def wait_ended(expected: set[str], *workers: Worker, timeout: float = 90.0) -> Counter[str]:
    async def all_there() -> Counter[str] | None:
        counts = ended(*workers)
        return counts if expected <= set(counts) else None

    result: Counter[str] = await eventually(
        all_there, timeout=timeout, what=f"{len(expected)} events to be handled"
    )
    return result


def partitions_of(worker: Worker) -> list[int]:
    """The partitions a worker reported last."""
    assigned = [r["partitions"] for r in worker.records() if r["e"] == "assigned"]
    return assigned[-1] if assigned else []


async def wait_shared(*workers: Worker) -> None:
    """Until the workers own every partition between them, each some."""

    async def shared() -> bool:
        owned = [partitions_of(w) for w in workers]
        return all(owned) and sorted(p for o in owned for p in o) == list(range(PARTITIONS))

    await eventually(shared, timeout=60, what="the partitions shared by every worker")


async def emit_jobs(bus: EventBus, payloads: list[dict[str, Any]]) -> list[str]:
    ids: list[str] = []
    for start in range(0, len(payloads), 200):
        batch = [("job", p) for p in payloads[start : start + 200]]
        ids += [r.event_id for r in await bus.emit_many(batch) if r.event_id]
    return ids


async def test_an_event_emitted_here_is_handled_in_another_process(
    workers: Workers, emitter: EventBus
) -> None:
    worker = workers("w1")
    await worker.ready()
    result = await emitter.emit("job", {"n": 1})
    assert result.published and result.handled == 0
    counts = await wait_ended({str(result.event_id)}, worker)
    assert counts == {result.event_id: 1}
    # SIGTERM: the worker's bus shuts down cleanly.
    assert worker.stop() == 0, worker.output()
    assert "Kafka backend stopped" in worker.output()


async def test_two_workers_share_two_thousand_events_and_both_get_broadcasts(
    workers: Workers, emitter: EventBus
) -> None:
    pair = [workers("w1"), workers("w2")]
    for worker in pair:
        await worker.ready()
    await wait_shared(*pair)
    # A broadcast subscription runs in every worker, unlike the others.
    await emitter.emit("news", "hello")

    async def everyone() -> bool:
        return all([r["item"] for r in w.records() if r["e"] == "news"] == ["hello"] for w in pair)

    await eventually(everyone, what="the broadcast in both workers")

    sent = await emit_jobs(emitter, [{"n": n} for n in range(1000)])
    sent += [(await emitter.emit("job", {"n": n})).event_id or "" for n in range(1000, 2000)]
    assert len(set(sent)) == 2000
    counts = await wait_ended(set(sent), *pair)
    assert set(counts) == set(sent)
    assert set(counts.values()) == {1}, "an event was handled twice"
    shares = [sum(ended(w).values()) for w in pair]
    assert all(shares), f"one worker handled nothing: {shares}"


async def committed_offsets(servers: str, group: str, topic: str) -> dict[int, int]:
    inspector = AIOKafkaConsumer(bootstrap_servers=servers, group_id=group)
    await inspector.start()
    try:
        found = {}
        for p in range(PARTITIONS):
            offset = await inspector.committed(TopicPartition(topic, p))
            found[p] = offset if offset is not None else 0
        return found
    finally:
        await inspector.stop()


async def record_positions(servers: str, topic: str) -> dict[str, tuple[int, int]]:
    """Event id -> (partition, offset) of every record of the topic, read to its end (the
    high watermark of the fetches: this broker reports end offsets short)."""
    reader = AIOKafkaConsumer(bootstrap_servers=servers)
    await reader.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        reader.assign(tps)
        await reader.seek_to_beginning(*tps)
        found: dict[str, tuple[int, int]] = {}
        for tp in tps:
            while True:
                highwater = reader.highwater(tp)
                if highwater is not None and await reader.position(tp) >= highwater:
                    break
                batch = await reader.getmany(tp, timeout_ms=1000)
                for record in batch.get(tp, []):
                    headers = dict(record.headers)
                    found[headers["eventbus-id"].decode()] = (tp.partition, record.offset)
                if not batch and reader.highwater(tp) is None:
                    break
        return found
    finally:
        await reader.stop()


async def test_kill_9_mid_stream_redelivers_only_uncommitted_records(
    workers: Workers, emitter: EventBus, kafka_servers: str, topic: str
) -> None:
    # Sixteen records at a time, 20-60 ms each: the stream lasts a few seconds, so the
    # kill lands in the middle of it, with records running.
    victim, survivor = workers("w1", kafka_concurrency=16), workers("w2", kafka_concurrency=16)
    for worker in (victim, survivor):
        await worker.ready()
    await wait_shared(victim, survivor)
    rng = random.Random(7)
    payloads = [{"n": n, "sleep": rng.uniform(0.02, 0.06)} for n in range(2000)]
    sent = await emit_jobs(emitter, payloads)

    async def victim_busy() -> bool:
        return sum(ended(victim).values()) >= 300

    await eventually(victim_busy, what="the victim to handle some events")
    victim.kill()  # kill -9, in the middle of the stream
    committed = await committed_offsets(kafka_servers, f"{topic}.group", topic)
    owned = partitions_of(victim)

    counts = await wait_ended(set(sent), victim, survivor, timeout=120)
    assert set(counts) == set(sent)  # every event handled at least once
    positions = await record_positions(kafka_servers, topic)
    started = {r["id"] for r in victim.records() if r["e"] == "start"}
    running = started - set(ended(victim))
    assert running, "no record was running when the victim died: the test proved nothing"
    duplicates = {event_id for event_id, count in counts.items() if count > 1}
    for event_id in duplicates | running:
        partition, offset = positions[event_id]
        # Handled again only if the victim never committed it: it was running, or it
        # had finished behind a record still running.
        assert partition in owned, (event_id, partition, owned)
        assert offset >= committed[partition], (event_id, partition, offset, committed)


async def test_a_rebalance_while_handlers_run_loses_nothing(
    workers: Workers, emitter: EventBus
) -> None:
    # Eight records at a time, 0.1 s each: 600 records keep one worker busy ~7.5 s, longer
    # than the second one takes to join.
    first = workers("w1", kafka_concurrency=8)
    await first.ready()

    async def owns_all() -> bool:
        return len(partitions_of(first)) == PARTITIONS

    await eventually(owns_all, what="the first worker to own every partition")
    sent = await emit_jobs(emitter, [{"n": n, "sleep": 0.1} for n in range(600)])

    async def first_busy() -> bool:
        return sum(ended(first).values()) >= 50

    await eventually(first_busy, what="the first worker to be busy")
    second = workers(
        "w2", kafka_concurrency=8
    )  # joins: the group rebalances while the first one's handlers run
    await wait_shared(first, second)
    counts = await wait_ended(set(sent), first, second)
    assert set(counts) == set(sent)
    # Revoked partitions: running records finished and were committed before the second
    # worker got them; records not started yet were left to it. So no record even
    # started twice (a handler cancelled by the rebalance would have).
    starts = Counter(r["id"] for w in (first, second) for r in w.records() if r["e"] == "start")
    assert set(starts.values()) == {1}, "a record was started twice"
    assert sum(ended(second).values()) > 0
