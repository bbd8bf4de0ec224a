"""The Redis Streams backend in one process, against a real redis-server."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, cast

import pytest
import redis.asyncio as aioredis
from redis_support import Entries, Make, eventually
from support import RedisServer

from fastapi_opinionated_eventbus import (
    BackendUnavailable,
    EventBus,
    EventSerializationError,
    RetryPolicy,
    TypedEvent,
    current_event,
)
from fastapi_opinionated_eventbus.testing import EventRecorder

GROUP = "eventbus"


def stream(prefix: str) -> str:
    return f"{{{prefix}}}:events"


def dead(prefix: str) -> str:
    return f"{{{prefix}}}:dead"


async def pending(redis: aioredis.Redis, prefix: str) -> int:
    return int((await redis.xpending(stream(prefix), GROUP))["pending"])


async def test_an_emitted_event_is_handled_by_a_consumer(make_bus: Make) -> None:
    seen: list[tuple[Any, ...]] = []
    done = asyncio.Event()

    async def handler(user: dict[str, Any], *, source: str) -> None:
        event = current_event()
        seen.append((user, source, event.id, event.attempt))
        done.set()

    bus = make_bus()
    bus.subscribe("user.created", handler)
    await bus.start()
    result = await bus.emit("user.created", {"id": 1}, source="signup")
    assert result.published and result.handled == 0
    await asyncio.wait_for(done.wait(), 20)
    assert seen == [({"id": 1}, "signup", result.event_id, 1)]


async def test_a_recorder_sees_an_event_once_though_this_process_also_consumes_it(
    make_bus: Make,
) -> None:
    """The recorder records emits: the same event coming back from the stream to this
    process's consumer is not recorded a second time."""
    done = asyncio.Event()

    async def handler(n: int) -> None:
        done.set()

    bus = make_bus()
    bus.subscribe("user.created", handler)
    await bus.start()
    with EventRecorder().recording(bus) as events:
        result = await bus.emit("user.created", 1)
        await asyncio.wait_for(done.wait(), 20)
    assert [(event.name, event.id) for event in events] == [("user.created", result.event_id)]


async def test_background_emits_are_published_too(make_bus: Make) -> None:
    got: list[int] = []
    done = asyncio.Event()

    async def handler(n: int) -> None:
        got.append(n)
        if len(got) == 20:
            done.set()

    bus = make_bus()
    bus.subscribe("tick", handler)
    await bus.start()
    for n in range(20):
        bus.emit_nowait("tick", n)
    await asyncio.wait_for(done.wait(), 20)
    assert sorted(got) == list(range(20))


class OrderPlaced(TypedEvent):
    __event_name__: ClassVar[str] = "order.placed"
    order_id: int
    amount: float


async def test_typed_events_arrive_as_their_model(make_bus: Make) -> None:
    got: list[OrderPlaced] = []
    done = asyncio.Event()

    async def handler(order: OrderPlaced) -> None:
        got.append(order)
        done.set()

    bus = make_bus()
    bus.subscribe(OrderPlaced, handler)
    await bus.start()
    await bus.emit(OrderPlaced(order_id=7, amount=9.5))
    await asyncio.wait_for(done.wait(), 20)
    assert got == [OrderPlaced(order_id=7, amount=9.5)]
    assert type(got[0]) is OrderPlaced


async def test_an_unserializable_argument_is_refused_and_nothing_published(
    make_bus: Make, redis: aioredis.Redis, prefix: str
) -> None:
    bus = make_bus()
    bus.subscribe("user.created", lambda *a, **k: None)
    await bus.start()
    before = await redis.xlen(stream(prefix))
    with pytest.raises(EventSerializationError, match=r"kwargs\['tags'\] is a set"):
        await bus.emit("user.created", {"id": 1}, tags={"a"})
    assert await redis.xlen(stream(prefix)) == before


async def test_publish_before_start_is_refused(make_bus: Make) -> None:
    bus = make_bus()
    with pytest.raises(BackendUnavailable, match="not started"):
        await bus.emit("x.y", 1)


async def test_a_process_without_handlers_leaves_events_to_those_with_some(
    make_bus: Make,
) -> None:
    producer = make_bus(redis_consumer="producer")
    await producer.start()  # subscribes nothing: must not read from the group
    await producer.emit("job", 1)
    await producer.emit("job", 2)
    got: list[int] = []
    done = asyncio.Event()

    async def handler(n: int) -> None:
        got.append(n)
        if len(got) == 2:
            done.set()

    consumer = make_bus(redis_consumer="consumer")
    consumer.subscribe("job", handler)
    await consumer.start()
    await asyncio.wait_for(done.wait(), 20)
    assert sorted(got) == [1, 2]


async def test_garbage_entries_are_dead_lettered_and_the_consumer_carries_on(
    make_bus: Make, redis: aioredis.Redis, prefix: str
) -> None:
    got: list[str] = []
    done = asyncio.Event()

    async def handler(text: str) -> None:
        got.append(text)
        done.set()

    bus = make_bus()
    bus.subscribe("note", handler)
    await bus.start()
    await redis.xadd(stream(prefix), {"hello": "world"})
    await redis.xadd(stream(prefix), {"id": "x-1", "name": "note", "body": b"\x00{garbage"})
    await bus.emit("note", "after the garbage")
    await asyncio.wait_for(done.wait(), 20)
    assert got == ["after the garbage"]

    async def two_letters() -> bool:
        return await redis.xlen(dead(prefix)) == 2

    await eventually(two_letters, what="two dead letters")
    letters = await bus.dead_letters()
    assert [letter.reason.split(":")[0] for letter in letters] == ["malformed entry"] * 2
    assert "missing field" in letters[0].reason
    assert letters[1].event.id == "x-1"
    await eventually(lambda: _zero(pending(redis, prefix)), what="all entries acknowledged")


async def _zero(value: Awaitable[int]) -> bool:
    return await value == 0


async def test_a_failing_handler_is_dead_lettered_and_replayed_once_fixed(
    make_bus: Make, redis: aioredis.Redis, prefix: str
) -> None:
    broken = True
    runs: list[int] = []

    async def charge(order_id: int) -> None:
        runs.append(current_event().attempt)
        if broken:
            raise RuntimeError("card declined")

    bus = make_bus()
    bus.subscribe("order.placed", charge, retry=RetryPolicy(max_attempts=2, initial_delay=0))
    await bus.start()
    await bus.emit("order.placed", 42)

    async def dead_lettered() -> bool:
        return await redis.xlen(dead(prefix)) == 1

    await eventually(dead_lettered, what="the dead letter")
    await eventually(lambda: _zero(pending(redis, prefix)), what="the entry acknowledged")
    assert runs == [1, 2]
    (letter,) = await bus.dead_letters()
    assert letter.reason == "handler failed"
    assert letter.handler.endswith("charge")
    assert letter.exception_type == "RuntimeError" and letter.message == "card declined"
    assert letter.attempts == 2 and letter.event.args == (42,)
    assert "card declined" in letter.traceback

    broken = False
    result = await bus.replay_dead_letters()
    assert (result.handled, result.failures) == (1, ())
    assert await redis.xlen(dead(prefix)) == 0
    assert runs == [1, 2, 1]


async def read_as(redis: aioredis.Redis, prefix: str, consumer: str, times: int = 1) -> None:
    """Deliver the stream's entries to ``consumer`` (a process that then went silent)."""
    await redis.xreadgroup(GROUP, consumer, {stream(prefix): ">"})
    for _ in range(times - 1):
        await redis.xreadgroup(GROUP, consumer, {stream(prefix): "0"})


async def test_a_silent_consumers_entry_is_reclaimed_with_attempt_as_delivery_count(
    make_bus: Make, redis: aioredis.Redis, prefix: str
) -> None:
    producer = make_bus()
    await producer.start()
    sent = await producer.emit("job", "lost")
    await read_as(redis, prefix, "silent-consumer")
    attempts: list[tuple[str, int]] = []
    done = asyncio.Event()

    async def handler(text: str) -> None:
        attempts.append((current_event().id, current_event().attempt))
        done.set()

    consumer = make_bus(redis_consumer="rescuer", visibility_timeout=0.3)
    consumer.subscribe("job", handler)
    await consumer.start()
    await asyncio.wait_for(done.wait(), 20)
    assert attempts == [(sent.event_id, 2)]
    await eventually(lambda: _zero(pending(redis, prefix)), what="the entry acknowledged")


async def test_a_consumer_first_rereads_its_own_pending_entries(
    make_bus: Make, redis: aioredis.Redis, prefix: str
) -> None:
    producer = make_bus()
    await producer.start()
    await producer.emit("job", "from a previous run")
    await read_as(redis, prefix, "worker-1")  # then that process died
    attempts: list[int] = []
    done = asyncio.Event()

    async def handler(text: str) -> None:
        attempts.append(current_event().attempt)
        done.set()

    # A long visibility timeout: only re-reading its own entries can find it this soon.
    restarted = make_bus(redis_consumer="worker-1", visibility_timeout=300)
    restarted.subscribe("job", handler)
    await restarted.start()
    await asyncio.wait_for(done.wait(), 20)
    assert attempts == [2]


async def test_an_entry_delivered_too_often_is_dead_lettered_unhandled_then_replayed(
    make_bus: Make, redis: aioredis.Redis, prefix: str
) -> None:
    producer = make_bus()
    await producer.start()
    await producer.emit("job", "poison")
    await read_as(redis, prefix, "worker-1", times=2)  # it crashed its consumer twice
    runs: list[str] = []

    async def handler(text: str) -> None:
        runs.append(text)

    restarted = make_bus(redis_consumer="worker-1", max_deliveries=2, visibility_timeout=300)
    restarted.subscribe("job", handler)
    await restarted.start()

    async def dead_lettered() -> bool:
        return await redis.xlen(dead(prefix)) == 1

    await eventually(dead_lettered, what="the dead letter")
    await eventually(lambda: _zero(pending(redis, prefix)), what="the entry acknowledged")
    assert runs == []
    (letter,) = await restarted.dead_letters()
    assert "delivered 3 times, more than max_deliveries=2" in letter.reason
    assert letter.handler == "*" and letter.event.args == ("poison",)

    result = await restarted.replay_dead_letters()
    assert (result.handled, result.failures) == (1, ())
    assert runs == ["poison"]
    assert await redis.xlen(dead(prefix)) == 0


async def test_stop_leaves_unfinished_entries_for_another_consumer(
    make_bus: Make, redis: aioredis.Redis, prefix: str
) -> None:
    started = asyncio.Event()

    async def stuck(n: int) -> None:
        started.set()
        await asyncio.sleep(3600)

    first = make_bus(redis_consumer="first", shutdown_timeout=0.2)
    first.subscribe("job", stuck)
    await first.start()
    await first.emit("job", 1)
    await asyncio.wait_for(started.wait(), 20)
    await first.aclose()
    assert await pending(redis, prefix) == 1  # not acknowledged: not lost
    # connect() only: an inspecting process (the CLI) joins no group.
    probe = make_bus(redis_consumer="probe")
    await probe.backend.connect()
    report = await probe.health()
    assert report["pending_by_consumer"] == {"first": 1} and report["in_flight"] == 0

    done = asyncio.Event()

    async def handler(n: int) -> None:
        done.set()

    second = make_bus(redis_consumer="second", visibility_timeout=0.3)
    second.subscribe("job", handler)
    await second.start()
    await asyncio.wait_for(done.wait(), 20)


async def test_a_live_consumer_keeps_a_slow_handlers_entry_from_others(
    make_bus: Make, redis: aioredis.Redis, prefix: str
) -> None:
    runs: list[tuple[str, int]] = []
    finished = asyncio.Event()

    def subscribe(bus: EventBus, name: str) -> None:
        async def slow(n: int) -> None:
            runs.append((name, current_event().attempt))
            # Much longer than the visibility timeout, while the other consumer reclaims.
            await asyncio.sleep(1.5)
            finished.set()

        bus.subscribe("job", slow)

    a = make_bus(redis_consumer="a", visibility_timeout=0.3)
    b = make_bus(redis_consumer="b", visibility_timeout=0.3)
    subscribe(a, "a")
    subscribe(b, "b")
    await a.start()
    await b.start()
    await a.emit("job", 1)
    await asyncio.wait_for(finished.wait(), 20)
    await eventually(lambda: _zero(pending(redis, prefix)), what="the entry acknowledged")
    assert len(runs) == 1 and runs[0][1] == 1, runs


async def test_broadcast_handlers_run_in_every_bus_others_once(make_bus: Make) -> None:
    calls: list[str] = []
    everyone = asyncio.Event()

    def subscribe(bus: EventBus, name: str) -> None:
        async def broadcast(key: str) -> None:
            calls.append(f"broadcast@{name}")
            if calls.count("broadcast@a") and calls.count("broadcast@b"):
                everyone.set()

        async def once(key: str) -> None:
            calls.append("once")

        bus.subscribe("cache.invalidate", broadcast, broadcast=True)
        bus.subscribe("cache.invalidate", once)

    a, b = make_bus(redis_consumer="a"), make_bus(redis_consumer="b")
    subscribe(a, "a")
    subscribe(b, "b")
    await a.start()
    await b.start()
    await a.emit("cache.invalidate", "user:1")
    await asyncio.wait_for(everyone.wait(), 20)

    async def once_ran() -> bool:
        return "once" in calls

    await eventually(once_ran, what="the non-broadcast handler")
    assert sorted(calls) == ["broadcast@a", "broadcast@b", "once"]


async def test_health_reports_the_stream(
    make_bus: Make, redis: aioredis.Redis, prefix: str, redis_url: str
) -> None:
    bus = make_bus(redis_consumer="health-check")
    not_started = await bus.health()
    assert not_started["reachable"] is False
    await bus.start()
    await bus.emit("nobody.listens", 1)
    await redis.xadd(dead(prefix), {"reason": "test"})
    report = await bus.health()
    assert report["reachable"] is True
    assert report["stream_length"] == 1
    assert report["dead_letters"] == 1
    assert report["consumer"] == "health-check"
    assert report["pending"] == 0 and report["lag"] in (0, 1)
    assert report["pending_by_consumer"] == {}
    assert report["redis_url"] == re.sub(r"//[^@/]*@", "//***@", redis_url)


# ====================================================================== Redis failures
SECRET = "pa55-w0rd-that-must-not-leak"


async def test_start_gives_up_on_an_unreachable_redis_after_connect_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from support import free_port

    url = f"redis://:{SECRET}@127.0.0.1:{free_port()}/0"
    bus = EventBus(backend="redis", redis_url=url, connect_timeout=0.5)
    bus.subscribe("x", lambda: None)
    with pytest.raises(BackendUnavailable, match=r"gave up after connect_timeout=0\.5s") as caught:
        await bus.start()
    assert "redis://:***@127.0.0.1" in str(caught.value)
    assert SECRET not in str(caught.value)
    assert SECRET not in caplog.text
    assert "not reachable yet" in caplog.text


async def test_the_password_never_appears_in_logs_or_errors(
    redis_server: Callable[..., RedisServer],
    prefix: str,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level("DEBUG")
    server = redis_server(password=SECRET)
    errors: list[str] = []

    wrong = EventBus(
        backend="redis",
        redis_url=server.url_with_password("wrong-" + SECRET),
        redis_prefix=prefix,
        connect_timeout=2,
    )
    wrong.subscribe("job", lambda n: None)
    with pytest.raises(BackendUnavailable, match="refused") as refused:
        await wrong.start()
    errors.append(str(refused.value))

    done = asyncio.Event()

    async def handler(n: int) -> None:
        done.set()

    right = EventBus(
        backend="redis",
        redis_url=server.url,
        redis_prefix=prefix,
        publish_timeout=0.3,
        shutdown_timeout=0.5,
    )
    right.subscribe("job", handler)
    await right.start()
    await right.emit("job", 1)
    await asyncio.wait_for(done.wait(), 20)
    errors.append(str(await right.health()))
    server.stop()  # Redis goes away under a running bus
    with pytest.raises(BackendUnavailable) as unavailable:
        await right.emit("job", 2)
    errors.append(str(unavailable.value))

    def reconnecting() -> Any:
        return asyncio.sleep(0, "reconnecting with backoff" in caplog.text)

    await eventually(reconnecting, what="the consumer to report the lost connection")
    errors.append(str(await right.health()))
    await right.aclose()

    output = caplog.text + "".join(capfd.readouterr()) + "\n".join(errors)
    assert "redis://:***@127.0.0.1" in output
    assert SECRET not in output


async def test_publishing_while_redis_is_down_raises_after_publish_timeout(
    redis_server: Callable[..., RedisServer], prefix: str
) -> None:
    server = redis_server()
    bus = EventBus(
        backend="redis",
        redis_url=server.url,
        redis_prefix=prefix,
        publish_timeout=0.5,
        shutdown_timeout=0.5,
    )
    await bus.start()
    server.stop()
    with pytest.raises(BackendUnavailable, match=r"within publish_timeout=0\.5s"):
        await bus.emit("job", 1)
    await bus.aclose()


async def test_emit_many_stores_the_batch_in_order_and_refuses_it_whole(
    make_bus: Make, redis: aioredis.Redis, prefix: str
) -> None:
    got: list[int] = []
    done = asyncio.Event()

    async def handler(n: int) -> None:
        got.append(n)
        if len(got) == 50:
            done.set()

    bus = make_bus()
    bus.subscribe("batch.item", handler)
    await bus.start()
    with pytest.raises(EventSerializationError, match="event 2 of the batch"):
        await bus.emit_many([("batch.item", 0), ("batch.item", 1), ("batch.item", object())])
    assert await redis.xlen(stream(prefix)) == 0  # nothing was sent
    results = await bus.emit_many([("batch.item", n) for n in range(50)])
    assert all(r.published for r in results)
    entries = cast(Entries, await redis.xrange(stream(prefix)))
    assert [e[1][b"id"].decode() for e in entries] == [r.event_id for r in results]
    await asyncio.wait_for(done.wait(), 20)
    assert sorted(got) == list(range(50))


async def test_a_final_failure_is_kept_by_redis_only_not_also_in_memory(
    make_bus: Make, redis: aioredis.Redis, prefix: str
) -> None:
    """Before: every final failure was also kept in an in-memory store that
    dead_letters() never read (payload included), costing memory for nothing."""
    import gc

    from fastapi_opinionated_eventbus import DeadLetter

    async def broken(n: int) -> None:
        raise RuntimeError(f"no {n}")

    bus = make_bus()
    bus.subscribe("job.failed", broken)
    await bus.start()
    for n in range(20):
        await bus.emit("job.failed", n)

    async def stored() -> bool:
        return int(await redis.xlen(dead(prefix))) == 20

    await eventually(stored, what="20 dead letters in the stream")
    gc.collect()
    kept = [o for o in gc.get_objects() if isinstance(o, DeadLetter)]
    assert kept == []
    assert len(await bus.dead_letters()) == 20
