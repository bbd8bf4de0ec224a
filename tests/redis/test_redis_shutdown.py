"""Redis shutdown under attack (6b items 1 and 5): every stage is bounded, and events in
flight are reported for what they are."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import redis.asyncio as aioredis
from redis_support import Make
from support import RedisServer, close_while_a_handler_ignores_cancellation

from fastapi_opinionated_eventbus import EventBus


async def test_shutdown_is_bounded_when_a_handler_ignores_cancellation(make_bus: Make) -> None:
    """aclose() waited forever for a cancelled handler that swallows CancelledError."""
    await close_while_a_handler_ignores_cancellation(make_bus(shutdown_timeout=0.3))


async def test_publishes_in_flight_at_shutdown_are_unconfirmed_not_lost(
    redis_server: Callable[..., RedisServer],
) -> None:
    """They were all counted lost although Redis may have those whose XADD had left.
    Now: sent and unanswered -> unconfirmed; still in this process's buffer -> lost."""
    server = redis_server()
    client = aioredis.from_url(server.url)
    bus = EventBus(
        backend="redis", redis_url=server.url, redis_prefix="unconfirmed", publish_timeout=30
    )
    await bus.start()
    try:
        await client.execute_command("CLIENT", "PAUSE", "3000", "WRITE")
        for n in range(20):
            bus.emit_nowait("order.paid", n)
        await asyncio.sleep(0.2)  # the first XADDs have left and wait for the server
        lost = await asyncio.wait_for(bus.aclose(timeout=0.3), 15)
        report = (await bus.health())["background"]
    finally:
        await client.execute_command("CLIENT", "UNPAUSE")
        await client.aclose()
    assert report["unconfirmed"] >= 1  # at least the first XADD had left
    assert report["lost"] == lost == 20 - report["unconfirmed"]
    assert report["emitted"] == 20 and report["handled"] == 0 and report["abandoned"] == 0
