"""Redis fixtures: a real redis-server, unique key prefixes, worker processes.

The session's Redis is ``EVENTBUS_TEST_REDIS_URL`` when set, else a private redis-server
started on a free port (scripts/redis-server.sh). Without one the Redis tests are
skipped, loudly -- except on CI (``CI`` set), where that is a failure. Tests that stop,
restart or password-protect a server start their own (``redis_server`` fixture).
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis
import redis.asyncio as aioredis
from redis_support import Make, Worker
from support import RedisServer, no_redis

from fastapi_opinionated_eventbus import EventBus


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """``redis_server(appendonly=False, password="")``: a started private server."""
    if shutil.which("redis-server") is None:
        no_redis("this test needs its own redis-server and there is no binary on PATH")
    servers: list[RedisServer] = []

    def make(*, appendonly: bool = False, password: str = "") -> RedisServer:
        server = RedisServer(
            tmp_path / f"redis-{len(servers)}", appendonly=appendonly, password=password
        )
        server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    yield name
    client = sync_redis.Redis.from_url(redis_url)
    try:
        keys = [*client.scan_iter(match=f"{name}:*"), *client.scan_iter(match=f"{{{name}}}:*")]
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def workers(redis_url: str, prefix: str, tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """``workers(name, url=None, **options)``: a started worker; all stopped at the end."""
    started: list[Worker] = []

    def make(name: str, *, url: str | None = None, **options: Any) -> Worker:
        worker = Worker(url or redis_url, prefix, name, tmp_path, **options).start()
        started.append(worker)
        return worker

    yield make
    for worker in started:
        worker.stop()


@pytest.fixture
async def make_bus(redis_url: str, prefix: str) -> AsyncIterator[Make]:
    """``make_bus(**options)``: a bus on this test's prefix; all closed at the end."""
    buses: list[EventBus] = []

    def make(**options: Any) -> EventBus:
        settings: dict[str, Any] = {
            "backend": "redis",
            "redis_url": redis_url,
            "redis_prefix": prefix,
            "shutdown_timeout": 1.0,
            **options,
        }
        bus = EventBus(**settings)
        buses.append(bus)
        return bus

    yield make
    for bus in buses:
        await bus.aclose()
