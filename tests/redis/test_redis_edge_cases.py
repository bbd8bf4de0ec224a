"""Edge cases of the Redis backend a review found broken: hostile or oversized payloads,
passwords in odd URLs, and handlers still running when shutdown begins."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
import redis.asyncio as aioredis
from redis_support import Entries, Make, eventually

from fastapi_opinionated_eventbus import (
    ConfigurationError,
    EventSerializationError,
)
from fastapi_opinionated_eventbus._secrets import mask_url

GROUP = "eventbus"
# A body nested deeper than the interpreter's recursion limit: json.loads raises
# RecursionError, which is not a ValueError.
DEEP_BODY = b'{"v":1,"args":' + b"[" * 100_000 + b"]" * 100_000 + b',"kwargs":{},"at":1}'


def stream(prefix: str) -> str:
    return f"{{{prefix}}}:events"


def dead(prefix: str) -> str:
    return f"{{{prefix}}}:dead"


async def test_a_deeply_nested_garbage_body_is_dead_lettered_at_once(
    make_bus: Make, redis: aioredis.Redis, prefix: str
) -> None:
    """README: a malformed entry is moved to the dead-letter stream and the consumer
    carries on. Today it is left pending ("will be delivered again") until
    max_deliveries * visibility_timeout have passed."""
    done = asyncio.Event()

    async def handler(text: Any) -> None:
        done.set()

    bus = make_bus(visibility_timeout=60)
    bus.subscribe("note", handler)
    await bus.start()
    await redis.xadd(stream(prefix), {"id": "x-1", "name": "note", "body": DEEP_BODY})
    await bus.emit("note", "after")
    await asyncio.wait_for(done.wait(), 20)

    async def one_letter() -> bool:
        return await redis.xlen(dead(prefix)) == 1

    await eventually(one_letter, timeout=5, what="the malformed entry dead-lettered")


async def test_dead_letters_survive_a_letter_whose_body_does_not_decode(
    make_bus: Make, redis: aioredis.Redis, prefix: str
) -> None:
    """The same entry, once given up after max_deliveries, makes dead_letters() (and
    replay, and the CLI) raise RecursionError for the whole stream."""

    async def handler(text: Any) -> None:
        pass

    bus = make_bus(visibility_timeout=0.3, max_deliveries=1)
    bus.subscribe("note", handler)
    await bus.start()
    await redis.xadd(stream(prefix), {"id": "x-1", "name": "note", "body": DEEP_BODY})

    async def one_letter() -> bool:
        return await redis.xlen(dead(prefix)) == 1

    await eventually(one_letter, timeout=20, what="the entry dead-lettered")
    (letter,) = await bus.dead_letters()
    assert letter.event.id == "x-1"


def _deep_list() -> list[Any]:
    root: list[Any] = []
    node = root
    for _ in range(5000):
        child: list[Any] = []
        node.append(child)
        node = child
    return root


@pytest.mark.parametrize(
    "make_value",
    [lambda: 10**5000, lambda: "\ud800", _deep_list],
    ids=["int-over-4300-digits", "lone-surrogate-str", "list-nested-5000-deep"],
)
async def test_every_unencodable_argument_raises_event_serialization_error(
    make_bus: Make, make_value: Any
) -> None:
    """README: anything that cannot be encoded raises EventSerializationError at emit,
    naming the argument (json.dumps alone would raise ValueError, UnicodeEncodeError or
    RecursionError)."""
    bus = make_bus()
    await bus.start()
    value = make_value()
    with pytest.raises(EventSerializationError, match=r"args\[0\]"):
        await bus.emit("e", value)
    with pytest.raises(EventSerializationError, match=r"args\[0\]"):
        bus.emit_nowait("e", value)


@pytest.mark.parametrize(
    "url",
    [
        "redis://app:ab/S3CRETPW@127.0.0.1:6379/0",  # '/' not percent-encoded
        "redis://app:ab#S3CRETPW@127.0.0.1:6379/0",  # '#'
        "redis://app:ab?S3CRETPW@127.0.0.1:6379/0",  # '?'
        "rediss://127.0.0.1:6380/0?ssl_password=S3CRETPW",  # key password, passed to redis-py
    ],
)
def test_mask_url_hides_passwords_of_odd_urls(url: str) -> None:
    assert "S3CRETPW" not in mask_url(url)


async def test_a_password_with_an_unencoded_slash_never_reaches_an_error(
    make_bus: Make,
) -> None:
    # redis-py would read "12345" as the port: refused with the options now, at
    # construction (App.create()), instead of at start (6b item 3).
    with pytest.raises(ConfigurationError) as caught:
        make_bus(redis_url="redis://:12345/S3CRETPW@127.0.0.1:6379/0", connect_timeout=0.3)
    assert "S3CRETPW" not in str(caught.value)


async def test_a_handler_in_flight_at_shutdown_may_still_emit_nowait(
    make_bus: Make, redis: aioredis.Redis, prefix: str
) -> None:
    """Shutdown pauses the consumers and lets in-flight handlers finish, background emits
    included: the follow-up event is published, nothing is dead-lettered."""
    gate = asyncio.Event()
    started = asyncio.Event()
    bus = make_bus(shutdown_timeout=3.0)

    async def handler(n: int) -> None:
        started.set()
        await gate.wait()
        bus.emit_nowait("follow.up", n)

    bus.subscribe("job", handler)
    await bus.start()
    await bus.emit("job", 1)
    await asyncio.wait_for(started.wait(), 20)
    shutdown = asyncio.create_task(bus.shutdown())

    async def shutting_down() -> bool:
        return bus._background.state != "open"  # shutdown has begun

    await eventually(shutting_down, timeout=5, what="shutdown to begin")
    gate.set()
    await asyncio.wait_for(shutdown, 20)
    entries = cast(Entries, await redis.xrange(stream(prefix)))
    names = [fields[b"name"] for _, fields in entries]
    assert await redis.xlen(dead(prefix)) == 0
    assert b"follow.up" in names
