"""Several processes on one Redis: emitted here, handled in worker processes.

Workers are tests/redis/worker.py; they record what their handlers did in Redis (see its
docstring). Every wait polls up to a generous deadline: nothing here asserts a timing.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import pytest
import redis.asyncio as aioredis
from redis_support import Hash, Worker, eventually
from support import RedisServer

from fastapi_opinionated_eventbus import EventBus

Workers = Callable[..., Worker]


@pytest.fixture
async def emitter(redis_url: str, prefix: str) -> AsyncIterator[Callable[..., Any]]:
    """``await emitter(url=None)``: a started bus with no handlers (it only publishes)."""
    buses: list[EventBus] = []

    async def make(url: str | None = None, **options: Any) -> EventBus:
        bus = EventBus(
            backend="redis",
            redis_url=url or redis_url,
            redis_prefix=prefix,
            redis_consumer="emitter",
            **options,
        )
        buses.append(bus)
        await bus.start()
        return bus

    yield make
    for bus in buses:
        await bus.aclose()


async def handled(redis: aioredis.Redis, prefix: str) -> dict[str, int]:
    counts = cast(Hash, await redis.hgetall(f"{prefix}:handled"))
    return {key.decode(): int(value) for key, value in counts.items()}


async def wait_handled(
    redis: aioredis.Redis, prefix: str, expected: set[str], *, timeout: float = 45.0
) -> dict[str, int]:
    async def all_there() -> dict[str, int] | None:
        counts = await handled(redis, prefix)
        return counts if expected <= set(counts) else None

    result: dict[str, int] = await eventually(
        all_there, timeout=timeout, what=f"{len(expected)} events to be handled"
    )
    return result


async def test_an_event_emitted_here_is_handled_in_another_process(
    workers: Workers, emitter: Callable[..., Any], redis: aioredis.Redis, prefix: str
) -> None:
    worker = workers("w1")
    await worker.ready(redis)
    bus = await emitter()
    result = await bus.emit("job", {"n": 1})
    counts = await wait_handled(redis, prefix, {result.event_id})
    assert counts == {result.event_id: 1}
    assert await redis.lrange(f"{prefix}:by:w1", 0, -1) == [result.event_id.encode()]
    # SIGTERM: the worker's bus shuts down cleanly.
    assert worker.stop() == 0, worker.output()
    assert "Redis Streams backend stopped" in worker.output()


async def test_two_workers_share_a_thousand_events_and_both_get_broadcasts(
    workers: Workers, emitter: Callable[..., Any], redis: aioredis.Redis, prefix: str
) -> None:
    pair = [workers("w1"), workers("w2")]
    for worker in pair:
        await worker.ready(redis)
    bus = await emitter()
    # A broadcast subscription runs in every worker, unlike the others.
    await bus.emit("news", "hello")

    async def everyone() -> bool:
        lists = [await redis.lrange(f"{prefix}:broadcast:{w.name}", 0, -1) for w in pair]
        return lists == [[b"hello"], [b"hello"]]

    await eventually(everyone, what="the broadcast in both workers")

    sent = [(await bus.emit("job", {"n": n})).event_id for n in range(500)]
    sent += [bus.emit_nowait("job", {"n": n}).id for n in range(500, 1000)]
    assert len(set(sent)) == 1000
    counts = await wait_handled(redis, prefix, {str(i) for i in sent})
    assert set(counts) == set(sent)
    assert set(counts.values()) == {1}, "an event was handled twice"
    shares = [await redis.llen(f"{prefix}:by:{w.name}") for w in pair]
    assert sum(shares) == 1000
    assert all(shares), f"one worker handled nothing: {shares}"


async def test_a_killed_workers_event_is_redelivered_to_the_other_worker(
    workers: Workers, emitter: Callable[..., Any], redis: aioredis.Redis, prefix: str
) -> None:
    pair = {w.name: w for w in (workers("w1"), workers("w2"))}
    for worker in pair.values():
        await worker.ready(redis)
    bus = await emitter()
    result = await bus.emit("job", {"hang": True})

    async def in_handler() -> bytes | None:
        value = cast("bytes | None", await redis.get(f"{prefix}:in-handler"))
        return value

    holder, event_id = (await eventually(in_handler, what="a worker to enter the handler")).split()
    assert event_id.decode() == result.event_id
    pair[holder.decode()].kill()  # kill -9, in the middle of the handler
    survivor = next(name for name in pair if name != holder.decode())

    counts = await wait_handled(redis, prefix, {result.event_id})
    assert counts == {result.event_id: 1}
    assert await redis.lrange(f"{prefix}:by:{survivor}", 0, -1) == [event_id]
    # current_event().attempt is the delivery count: the second delivery.
    assert await redis.hget(f"{prefix}:attempt", result.event_id) == b"2"


async def test_consumers_survive_a_redis_restart(
    redis_server: Callable[..., RedisServer],
    workers: Workers,
    emitter: Callable[..., Any],
    prefix: str,
) -> None:
    server = redis_server(appendonly=True)
    redis = aioredis.from_url(server.url)
    try:
        worker = workers("w1", url=server.url, retry=True)
        await worker.ready(redis)
        bus = await emitter(server.url, publish_timeout=20)
        sent = [(await bus.emit("job", {"n": n})).event_id for n in range(100)]
        server.stop()  # SIGTERM: Redis writes its append-only file and exits
        server.start()
        # The first emits may wait for the bus to reconnect, within publish_timeout.
        sent += [(await bus.emit("job", {"n": n})).event_id for n in range(100, 200)]
        await redis.aclose()
        redis = aioredis.from_url(server.url)  # this test's own connection died too
        counts = await wait_handled(redis, prefix, set(sent))
        assert set(counts) == set(sent)  # at least once each
        assert "reconnected to Redis" in worker.output()
    finally:
        await redis.aclose()


async def test_a_poison_event_ends_in_the_dead_letter_stream_and_replays_once_fixed(
    workers: Workers, emitter: Callable[..., Any], redis: aioredis.Redis, prefix: str
) -> None:
    options = {"max_deliveries": 2, "visibility_timeout": 30.0}
    worker = workers("w1", **options)
    await worker.ready(redis)
    bus = await emitter()
    poison = await bus.emit("job", {"crash": True})
    # Each delivery kills the worker; restarted under the same consumer name, it first
    # re-reads its own pending entry: delivery 2 crashes too, delivery 3 > max_deliveries.
    for crashes in (1, 2):

        async def crashed(expected: int = crashes) -> bool:
            return await redis.llen(f"{prefix}:crashes") == expected

        await eventually(crashed, what=f"crash {crashes}")
        assert worker.proc is not None and worker.proc.wait(timeout=20) == 3
        await redis.delete(f"{prefix}:ready:w1")
        # Restarted, it may well crash again before it reports ready.
        worker = workers("w1", **options)

    async def dead_lettered() -> bool:
        return await redis.xlen(f"{{{prefix}}}:dead") == 1

    await eventually(dead_lettered, what="the poison event in the dead-letter stream")
    await worker.ready(redis)  # its third run survives
    (letter,) = await bus.dead_letters()
    assert letter.event.id == poison.event_id
    assert "more than max_deliveries=2" in letter.reason
    assert await handled(redis, prefix) == {}

    await redis.set(f"{prefix}:fixed", "1")
    await redis.rpush(f"{prefix}:commands:w1", "replay")

    async def replayed() -> Any:
        return await redis.lpop(f"{prefix}:results:w1")

    result = json.loads(await eventually(replayed, what="the replay"))
    assert result == {"handled": 1, "failures": 0}
    assert await handled(redis, prefix) == {poison.event_id: 1}
    assert await redis.xlen(f"{{{prefix}}}:dead") == 0
