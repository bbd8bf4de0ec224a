"""A worker process for the Redis tests: a standalone bus whose handlers record to Redis.

    python tests/redis/worker.py '{"url": ..., "prefix": ..., "name": ..., <bus options>}'

Handlers (keys under ``<prefix>:``):

* ``job``: records the event id in the hash ``handled`` (HINCRBY: a count above 1 is a
  duplicate), its attempt in ``attempt``, and the id in the list ``by:<worker>``.
  ``{"hang": true}`` on a first delivery: sets ``in-handler`` and hangs (to be killed).
  ``{"crash": true}`` until ``fixed`` is set: the process dies (os._exit) mid-handler.
  ``{"fail": true}`` until ``fixed`` is set: raises.
* ``news`` (broadcast): appends the item to ``broadcast:<worker>``.

Commands: the worker pops ``commands:<worker>`` (``replay``) and pushes each result to
``results:<worker>``. Sets ``ready:<worker>`` once started; stops on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import fastapi_opinionated.app  # noqa: F401 - the core sets up logging at import
import redis.asyncio as aioredis

from fastapi_opinionated_eventbus import EventBus, RetryPolicy, current_event


async def main(config: dict[str, Any]) -> None:
    prefix, name = config.pop("prefix"), config.pop("name")
    url = config.pop("url")
    retry = config.pop("retry", False)
    record = aioredis.from_url(url)
    options: dict[str, Any] = {
        "redis_consumer": name,
        "visibility_timeout": 1.0,
        "shutdown_timeout": 2.0,
        **config,
    }
    bus = EventBus(backend="redis", redis_url=url, redis_prefix=prefix, **options)

    async def job(payload: dict[str, Any]) -> None:
        event = current_event()
        broken = bool(payload.get("crash") or payload.get("fail"))
        if broken and await record.get(f"{prefix}:fixed"):
            broken = False
        if payload.get("hang") and event.attempt == 1:
            await record.set(f"{prefix}:in-handler", f"{name} {event.id}")
            await asyncio.sleep(3600)
        if payload.get("crash") and broken:
            await record.rpush(f"{prefix}:crashes", name)
            os._exit(3)
        if payload.get("fail") and broken:
            raise RuntimeError(f"job {payload.get('n')} failed on purpose")
        pipe = record.pipeline(transaction=False)
        pipe.hincrby(f"{prefix}:handled", event.id, 1)
        pipe.hset(f"{prefix}:attempt", event.id, event.attempt)
        pipe.rpush(f"{prefix}:by:{name}", event.id)
        await pipe.execute()

    async def news(item: str) -> None:
        await record.rpush(f"{prefix}:broadcast:{name}", item)

    policy = RetryPolicy(max_attempts=30, initial_delay=0.05, max_delay=0.5) if retry else None
    bus.subscribe("job", job, retry=policy)
    bus.subscribe("news", news, broadcast=True)
    await bus.start()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await record.set(f"{prefix}:ready:{name}", "1")
    while not stop.is_set():
        try:
            command = await record.lpop(f"{prefix}:commands:{name}")
        except Exception:  # Redis restarting: the bus copes, so do the tests' commands
            command = None
        if command == b"replay":
            result = await bus.replay_dead_letters()
            await record.rpush(
                f"{prefix}:results:{name}",
                json.dumps({"handled": result.handled, "failures": len(result.failures)}),
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.1)
    await bus.aclose()
    await record.aclose()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
