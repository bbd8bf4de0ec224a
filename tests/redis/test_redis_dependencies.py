"""Dependencies of a handler resolved in the consuming process: an app under uvicorn takes
the events a bus in this test process publishes to Redis, and its handler's dependencies
(a ``yield`` one, an overridden one, one reading the EventEnvelope) are resolved there."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import cast

import httpx
import redis.asyncio as aioredis
from dependencies_support import DEPS, MAIN, assert_resolved_in_one_consumer
from redis_support import REPO_ROOT, eventually
from support import uvicorn, wait_until_serving

from fastapi_opinionated_eventbus import EventBus

HANDLERS = """
    from __future__ import annotations

    import os
    from typing import Annotated

    import redis.asyncio as aioredis
    from fastapi import Depends

    from fastapi_opinionated_eventbus import OnInternalEvent

    from .deps import get_event_id, get_greeting

    URL = os.environ["EVENTBUS_REDIS_URL"]
    PREFIX = os.environ["EVENTBUS_REDIS_PREFIX"]


    async def get_redis():
        client = aioredis.from_url(URL)
        try:
            yield client
        finally:  # the teardown, in the consuming process
            await client.rpush(f"{PREFIX}:closed", os.getpid())
            await client.aclose()


    @OnInternalEvent("user.created")
    async def greet(
        name: str,
        client: Annotated[aioredis.Redis, Depends(get_redis)],
        greeting: Annotated[str, Depends(get_greeting)],
        event_id: Annotated[str, Depends(get_event_id)],
    ) -> None:
        await client.rpush(f"{PREFIX}:greeted", f"{greeting} {name} {event_id} {os.getpid()}")
"""


async def test_a_consumer_process_resolves_the_handlers_dependencies(
    app_dir: Callable[..., Path],
    redis_url: str,
    prefix: str,
    redis: aioredis.Redis,
    tmp_path: Path,
) -> None:
    root = app_dir({"users/deps.py": DEPS, "users/handlers.py": HANDLERS})
    (root / "main.py").write_text(MAIN)
    env = {
        **os.environ,
        "EVENTBUS_BACKEND": "redis",
        "EVENTBUS_REDIS_URL": redis_url,
        "EVENTBUS_REDIS_PREFIX": prefix,
        "PYTHONPATH": os.pathsep.join([str(root), str(REPO_ROOT)]),
    }
    with uvicorn(root, "main:app", log=tmp_path / "uvicorn.log", env=env) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            await wait_until_serving(client)
        # A producer-only bus here: it has no handlers, so it consumes nothing.
        producer = EventBus(backend="redis", redis_url=redis_url, redis_prefix=prefix)
        await producer.start()
        try:
            sent = [(await producer.emit("user.created", name)).event_id for name in ("ann", "bob")]
        finally:
            await producer.aclose()

        async def read(key: str) -> list[str] | None:
            items = cast("list[bytes]", await redis.lrange(f"{prefix}:{key}", 0, -1))
            found = [item.decode() for item in items]
            return found if len(found) >= 2 else None

        lines = await eventually(lambda: read("greeted"), timeout=30, what="both handled")
        closed = await eventually(lambda: read("closed"), timeout=30, what="both torn down")

    assert_resolved_in_one_consumer(lines, closed, sent)
