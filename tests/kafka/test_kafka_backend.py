"""The Kafka backend in one process against a real broker (tansu): order per key,
commits that never pass unfinished work, dead letters, malformed records, failures."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any, ClassVar

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from kafka_support import FAST_GROUP, KafkaBroker, eventually
from pydantic import BaseModel

from fastapi_opinionated_eventbus import (
    BackendUnavailable,
    EventBus,
    EventSerializationError,
    RetryPolicy,
    TypedEvent,
    current_event,
)

Make = Callable[..., EventBus]


class OrderStep(TypedEvent):
    __event_name__ = "order.step"
    __event_key__: ClassVar[str] = "order_id"
    order_id: str
    seq: int


async def test_records_of_one_key_run_in_order_while_keys_overlap(make_bus: Make) -> None:
    consumer = make_bus(kafka_partitions=3)
    seen: dict[str, list[int]] = {}
    running: set[str] = set()
    overlaps = 0
    rng = random.Random(3)

    async def step(event: OrderStep) -> None:
        nonlocal overlaps
        assert event.order_id not in running, "two records of one key ran at once"
        running.add(event.order_id)
        overlaps = max(overlaps, len(running))
        await asyncio.sleep(rng.uniform(0, 0.02))
        seen.setdefault(event.order_id, []).append(event.seq)
        running.discard(event.order_id)

    consumer.subscribe(OrderStep, step)
    await consumer.start()
    producer = make_bus()
    await producer.start()
    keys = [f"order-{k}" for k in range(10)]
    steps = [OrderStep(order_id=keys[n % 10], seq=n) for n in range(200)]
    await producer.emit_many(steps[:100])
    for event in steps[100:]:
        await producer.emit(event)

    async def all_seen() -> bool:
        return sum(map(len, seen.values())) >= 200

    await eventually(all_seen, what="200 steps handled")
    for key in keys:
        assert seen[key] == [n for n in range(200) if n % 10 == keys.index(key)], key
    assert overlaps > 1, "records of different keys never ran concurrently"


async def test_a_slow_record_holds_its_partitions_commit_while_later_ones_finish(
    make_bus: Make,
) -> None:
    consumer = make_bus(kafka_partitions=1)
    release = asyncio.Event()
    done: list[int] = []

    async def job(n: int, slow: bool) -> None:
        if slow:
            await release.wait()
        done.append(n)

    consumer.subscribe("job", job)
    await consumer.start()
    producer = make_bus()
    await producer.start()

    async def committed() -> int | None:
        health: dict[str, Any] = await consumer.health()
        offset: int | None = health["committed_offsets"].get("0")
        return offset

    await producer.emit_many([("job", n, False) for n in range(5)])  # offsets 0-4

    async def first_committed() -> bool:
        return await committed() == 5

    await eventually(first_committed, what="the first five records committed")
    await producer.emit("job", 5, True)  # offset 5: waits for release
    await producer.emit_many([("job", n, False) for n in range(6, 26)])  # offsets 6-25

    async def later_ones_done() -> bool:
        return len(done) == 25

    await eventually(later_ones_done, what="the twenty later records handled")
    health = await consumer.health()
    assert health["in_flight"] == 1 and health["held"] == 21
    # Commits would have gone to 26 by now if they could pass the slow record.
    for _ in range(10):
        assert await committed() == 5
        await asyncio.sleep(0.1)
    release.set()

    async def all_committed() -> bool:
        return await committed() == 26

    await eventually(all_committed, what="everything committed once the slow one finished")


async def test_commits_are_coalesced_to_one_request_per_commit_interval(
    make_bus: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiokafka import AIOKafkaConsumer

    from fastapi_opinionated_eventbus.backends.kafka import consumer as group

    requests: list[float] = []
    commit = AIOKafkaConsumer.commit

    async def counted(self: AIOKafkaConsumer, *args: Any, **kwargs: Any) -> None:
        requests.append(time.monotonic())
        await commit(self, *args, **kwargs)

    monkeypatch.setattr(AIOKafkaConsumer, "commit", counted)
    # The broker answers fetches within 10 ms (tansu holds an empty one for half of
    # aiokafka's default 500 ms): records arrive as they are emitted, a few at a time.
    fetch_at_once = FAST_GROUP | {"fetch_max_wait_ms": 10}
    consumer = make_bus(kafka_partitions=1, kafka_consumer_options=fetch_at_once)
    handled: list[float] = []

    async def job(n: int) -> None:
        handled.append(time.monotonic())

    consumer.subscribe("job", job)
    await consumer.start()
    producer = make_bus()
    await producer.start()

    async def assigned() -> bool:
        return bool(getattr(consumer.backend, "assigned_partitions", None))

    await eventually(assigned, what="the consumer's partition")
    for wave in range(30):  # records finishing all the time, for about half a second
        await producer.emit_many([("job", wave * 5 + n) for n in range(5)])
        await asyncio.sleep(0.015)

    async def all_committed() -> bool:
        health: dict[str, Any] = await consumer.health()
        return bool(health["committed_offsets"].get("0") == 150)

    await eventually(all_committed, what="the 150 records committed")
    busy = [t for t in requests if t >= handled[0]]
    span = handled[-1] - handled[0]
    # One request when the first record finished, then at most one per interval; without
    # the interval, one followed each answer: dozens here.
    assert len(busy) <= span / group.COMMIT_INTERVAL + 2, (len(busy), span)
    assert len(handled) == 150


async def test_a_poison_event_ends_in_the_dead_letter_topic_and_replays_once_fixed(
    make_bus: Make,
) -> None:
    consumer = make_bus()
    fixed = False
    handled: list[str] = []

    async def job(n: int) -> None:
        if not fixed:
            raise RuntimeError(f"job {n} failed on purpose")
        handled.append(current_event().id)

    policy = RetryPolicy(max_attempts=2, initial_delay=0.01, jitter=0)
    consumer.subscribe("job", job, retry=policy)
    await consumer.start()
    producer = make_bus()
    await producer.start()
    poison = await producer.emit("job", 7)

    async def dead() -> list[Any]:
        return await consumer.dead_letters()

    (letter,) = await eventually(dead, what="the dead letter")
    assert letter.event.id == poison.event_id and letter.event.args == (7,)
    assert letter.handler.endswith(
        ":test_a_poison_event_ends_in_the_dead_letter_topic_and_replays_once_fixed.<locals>.job"
    )
    assert (letter.exception_type, letter.message, letter.attempts) == (
        "RuntimeError",
        "job 7 failed on purpose",
        2,
    )
    assert "raise RuntimeError" in letter.traceback
    assert letter.reason == "handler failed"
    assert (await consumer.health())["dead_letters"] == 1
    assert handled == []

    fixed = True
    result = await consumer.replay_dead_letters()
    assert (result.handled, len(result.failures)) == (1, 0)
    assert handled == [poison.event_id]
    assert await consumer.dead_letters() == []
    # Another process sees the same topic: nothing left there either.
    assert await producer.dead_letters() == []


async def test_a_letter_failing_again_on_replay_stays_and_purge_empties_the_topic(
    make_bus: Make,
) -> None:
    consumer = make_bus()

    async def job(n: int) -> None:
        raise ValueError(f"bad {n}")

    consumer.subscribe("job", job)
    await consumer.start()
    producer = make_bus()
    await producer.start()
    await producer.emit_many([("job", 1), ("job", 2)])

    async def two() -> bool:
        return len(await consumer.dead_letters()) == 2

    await eventually(two, what="two dead letters")
    result = await consumer.replay_dead_letters()
    assert (result.handled, len(result.failures)) == (2, 2)
    letters = await consumer.dead_letters()
    assert sorted(x.event.args for x in letters) == [(1,), (2,)]
    assert {x.reason for x in letters} == {"handler failed again on replay"}
    assert await producer.purge_dead_letters() == 2
    assert await consumer.dead_letters() == []


async def test_garbage_records_are_dead_lettered_and_the_consumer_carries_on(
    make_bus: Make, kafka_servers: str, topic: str
) -> None:
    consumer = make_bus(kafka_partitions=1)
    handled: list[int] = []

    async def job(n: int) -> None:
        handled.append(n)

    consumer.subscribe("job", job)
    await consumer.start()
    raw = AIOKafkaProducer(bootstrap_servers=kafka_servers)
    await raw.start()
    try:
        await raw.send_and_wait(topic, b"\xffgarbage\n\x1b[31m")  # no headers at all
        headers = [("eventbus-name", b"job"), ("eventbus-id", b"x-1")]
        await raw.send_and_wait(topic, b"{not json", headers=headers)
    finally:
        await raw.stop()
    producer = make_bus()
    await producer.start()
    await producer.emit("job", 1)

    async def carried_on() -> bool:
        return handled == [1]

    await eventually(carried_on, what="the valid event after the garbage")
    letters = await consumer.dead_letters()
    reasons = [x.reason for x in letters]
    assert reasons[0] == "malformed record: missing header 'eventbus-name'"
    assert reasons[1].startswith("malformed record: bad body: JSONDecodeError")
    assert letters[1].event.id == "x-1" and letters[1].event.name == "job"

    async def all_committed() -> bool:
        offsets: dict[str, int] = (await consumer.health())["committed_offsets"]
        return offsets == {"0": 3}

    await eventually(all_committed, what="the garbage records committed")
    # Not replayable: they stay.
    assert (await consumer.replay_dead_letters()).handled == 0
    assert len(await consumer.dead_letters()) == 2


async def test_emit_many_publishes_in_order_and_names_a_bad_item(make_bus: Make) -> None:
    consumer = make_bus(kafka_partitions=1)
    seen: list[int] = []

    async def job(n: int) -> None:
        seen.append(n)

    consumer.subscribe("job", job)
    await consumer.start()
    producer = make_bus()
    await producer.start()
    results = await producer.emit_many([("job", n) for n in range(50)])
    assert [r.published for r in results] == [True] * 50
    assert len({r.event_id for r in results}) == 50

    with pytest.raises(EventSerializationError, match=r"event 2 of the batch.*args\[0\]"):
        await producer.emit_many([("job", 100), ("job", 101), ("job", object())])

    async def fifty() -> bool:
        return len(seen) == 50

    await eventually(fifty, what="the batch handled")
    await asyncio.sleep(0.5)
    assert seen == list(range(50)), "a refused batch sent something, or order was lost"


class BadKey(BaseModel):
    __event_name__: ClassVar[str] = "bad.key"
    __event_key__: ClassVar[str] = "missing"
    order_id: int


async def test_an_event_key_naming_no_field_is_refused_before_sending(make_bus: Make) -> None:
    bus = make_bus()
    await bus.start()
    with pytest.raises(EventSerializationError, match=r"BadKey.__event_key__ = 'missing'"):
        await bus.emit(BadKey(order_id=1))
    with pytest.raises(EventSerializationError, match="object"):
        bus.emit_nowait("job", object())


async def test_emit_while_the_broker_is_down_raises_backend_unavailable(
    private_broker: KafkaBroker, topic: str
) -> None:
    bus = EventBus(
        backend="kafka",
        kafka_bootstrap_servers=private_broker.servers,
        kafka_topic=topic,
        publish_timeout=1.5,
    )
    await bus.start()
    try:
        assert (await bus.emit("job", 1)).published
        private_broker.stop()
        started = time.monotonic()
        with pytest.raises(BackendUnavailable, match=rf"Kafka at {private_broker.servers}"):
            await bus.emit("job", 2)
        assert time.monotonic() - started < 10
        with pytest.raises(BackendUnavailable, match=r"event 0 of the batch \('job'\)"):
            await bus.emit_many([("job", 3), ("job", 4)])
    finally:
        await bus.aclose()


async def test_consumers_reconnect_after_a_broker_restart(
    private_broker: KafkaBroker, topic: str
) -> None:
    options: dict[str, Any] = {
        "backend": "kafka",
        "kafka_bootstrap_servers": private_broker.servers,
        "kafka_topic": topic,
        "kafka_partitions": 4,
        "kafka_consumer_options": {"session_timeout_ms": 6000, "heartbeat_interval_ms": 500},
        "publish_timeout": 20.0,
    }
    consumer, producer = EventBus(**options), EventBus(**options)
    handled: list[int] = []

    async def job(n: int) -> None:
        handled.append(n)

    consumer.subscribe("job", job)
    try:
        await consumer.start()
        await producer.start()
        await producer.emit("job", 1)

        async def first() -> bool:
            return handled == [1]

        await eventually(first, what="the event before the restart")
        private_broker.stop()
        private_broker.start()
        # This broker keeps nothing across a restart (memory storage), and acknowledges
        # records sent to a topic it no longer has: re-create it as a real broker would
        # have kept it. Offsets are gone too (the group starts over from the beginning).
        admin = AIOKafkaAdminClient(bootstrap_servers=private_broker.servers)
        await admin.start()
        await admin.create_topics([NewTopic(topic, 4, 1), NewTopic(f"{topic}.dlq", 1, 1)])
        await admin.close()
        # The first emit may wait for the producer to reconnect, within publish_timeout.
        await producer.emit("job", 2)
        await producer.emit("job", 3)

        async def after() -> bool:
            return {2, 3} <= set(handled)

        await eventually(after, timeout=60, what="events emitted after the restart")
    finally:
        await producer.aclose()
        await consumer.aclose()


async def test_an_unreachable_broker_fails_startup_naming_the_servers(topic: str) -> None:
    from support import free_port

    servers = f"127.0.0.1:{free_port()}"
    bus = EventBus(
        backend="kafka", kafka_bootstrap_servers=servers, kafka_topic=topic, connect_timeout=1.0
    )
    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as caught:
        await bus.start()
    assert f"Cannot reach Kafka at {servers}: gave up after connect_timeout=1.0s" in str(
        caught.value
    )
    assert time.monotonic() - started < 8
    await bus.aclose()
