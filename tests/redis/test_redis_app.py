"""The Redis backend through real fastapi-opinionated apps: in process, and under
``uvicorn --workers 2``."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import redis.asyncio as aioredis
from redis_support import Hash, eventually
from support import EXAMPLE_APP, check_activity, two_uvicorn_workers, wait_until_serving

from fastapi_opinionated_eventbus import EventBus
from fastapi_opinionated_eventbus.testing import running

# Handlers record in Redis: the URL and prefix come from the EVENTBUS_* environment (the
# uvicorn workers) or are baked in by the test.
HANDLERS = """
    from __future__ import annotations

    import os

    import redis.asyncio as aioredis

    from fastapi_opinionated_eventbus import OnInternalEvent, current_event

    URL = {url!r} or os.environ["EVENTBUS_REDIS_URL"]
    PREFIX = {prefix!r} or os.environ["EVENTBUS_REDIS_PREFIX"]


    @OnInternalEvent("order.placed")
    async def record(order: dict) -> None:
        async with aioredis.from_url(URL) as client:
            pipe = client.pipeline(transaction=False)
            pipe.hincrby(f"{{PREFIX}}:handled", current_event().id, 1)
            pipe.rpush(f"{{PREFIX}}:pids", os.getpid())
            await pipe.execute()
"""

CONTROLLER = """
    from __future__ import annotations

    from fastapi_opinionated.decorators.routing import Controller, Post

    from fastapi_opinionated_eventbus import eventbus_api


    @Controller("/orders")
    class Orders:
        @Post("/{order_id}")
        async def place(self, order_id: int) -> dict[str, object]:
            result = await eventbus_api().emit("order.placed", {"id": order_id})
            return {"event_id": result.event_id, "published": result.published}
"""

MAIN = """
from fastapi_opinionated.app import App

from fastapi_opinionated_eventbus import EventBusPlugin

App.configurePlugin(EventBusPlugin())  # options from EVENTBUS_* variables
app = App.create(title="Orders")
"""


def orders_app(app_dir: Callable[..., Path], url: str = "", prefix: str = "") -> Path:
    return app_dir(
        {
            "orders/handlers.py": HANDLERS.format(url=url, prefix=prefix),
            "orders/controller.py": CONTROLLER,
        }
    )


async def handled(redis: aioredis.Redis, prefix: str) -> dict[str, int]:
    counts = cast(Hash, await redis.hgetall(f"{prefix}:handled"))
    return {key.decode(): int(value) for key, value in counts.items()}


async def test_a_route_emits_and_the_apps_consumer_handles_it(
    eventbus_app_factory: Callable[..., Any],
    app_dir: Callable[..., Path],
    redis_url: str,
    prefix: str,
    redis: aioredis.Redis,
) -> None:
    root = orders_app(app_dir, redis_url, prefix)
    app = eventbus_app_factory(root, backend="redis", redis_url=redis_url, redis_prefix=prefix)
    transport = httpx.ASGITransport(app=app)
    async with (
        running(app),
        httpx.AsyncClient(transport=transport, base_url="http://app") as client,
    ):
        response = await client.post("/orders/7")
        assert response.status_code == 200
        body = response.json()
        assert body["published"] is True

        async def done() -> dict[str, int]:
            return await handled(redis, prefix)

        assert await eventually(done, what="the handler") == {body["event_id"]: 1}


def test_the_default_prefix_comes_from_the_app_title() -> None:
    bus = EventBus(backend="redis", app_name="Orders API")
    assert bus.backend is not None
    assert bus.backend.keys.events == "{orders-api}:events"  # type: ignore[attr-defined]


@contextmanager
def uvicorn_workers(
    root: Path, redis_url: str, prefix: str, log: Path, **extra_env: str
) -> Iterator[str]:
    """``uvicorn main:app --workers 2`` in ``root`` with the Redis backend configured
    through EVENTBUS_* variables, on a free port; yields its base URL."""
    env = {
        "EVENTBUS_BACKEND": "redis",
        "EVENTBUS_REDIS_URL": redis_url,
        "EVENTBUS_REDIS_PREFIX": prefix,
        **extra_env,
    }
    with two_uvicorn_workers(root, log, env) as url:
        yield url


@pytest.fixture
def uvicorn_app(
    app_dir: Callable[..., Path], redis_url: str, prefix: str, tmp_path: Path
) -> Iterator[str]:
    """The orders app under ``uvicorn --workers 2`` on a free port; its base URL."""
    root = orders_app(app_dir)
    (root / "main.py").write_text(MAIN)
    with uvicorn_workers(root, redis_url, prefix, tmp_path / "uvicorn.log") as url:
        yield url


async def test_uvicorn_workers_handle_each_event_exactly_once(
    uvicorn_app: str, redis: aioredis.Redis, prefix: str
) -> None:
    async with httpx.AsyncClient(base_url=uvicorn_app, timeout=10) as client:
        await wait_until_serving(client)
        sent = []
        for order_id in range(60):
            response = await client.post(f"/orders/{order_id}")
            assert response.status_code == 200, response.text
            sent.append(response.json()["event_id"])

    async def all_handled() -> dict[str, int] | None:
        counts = await handled(redis, prefix)
        return counts if len(counts) >= len(sent) else None

    counts = await eventually(all_handled, timeout=60, what="every event handled")
    assert set(counts) == set(sent)
    assert set(counts.values()) == {1}, "an event was handled twice"
    assert await redis.llen(f"{prefix}:pids") == len(sent)


async def test_example_app_under_two_workers_handles_each_signup_once(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    """The README's multi-worker mode: EVENTBUS_BACKEND=redis uvicorn main:app --workers 2.

    Users go to one SQLite file shared by the workers, and user.created through its outbox:
    one worker relays it (the other stands by), publishing every committed event."""
    activity_log = tmp_path / "activity.jsonl"
    with uvicorn_workers(
        EXAMPLE_APP,
        redis_url,
        prefix,
        tmp_path / "uvicorn.log",
        EXAMPLE_ACTIVITY_LOG=str(activity_log),
        EXAMPLE_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'example.db'}",
    ) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            await wait_until_serving(client)
            created = []
            for n in range(30):
                response = await client.post(
                    "/users/", json={"name": f"user{n}", "email": f"u{n}@example.com"}
                )
                assert response.status_code == 200, response.text
                created.append(response.json())

        def records() -> list[dict[str, Any]]:
            if not activity_log.exists():
                return []
            return [json.loads(line) for line in activity_log.read_text().splitlines()]

        async def both_handlers_ran_for_all() -> list[dict[str, Any]] | None:
            found = records()
            return found if len(found) >= 2 * len(created) else None

        found = await eventually(both_handlers_ran_for_all, timeout=60, what="all signups")
    # User ids are unique across the workers (the database assigns them), and every
    # record names its event: the id the route got from the outbox.
    assert len({user["id"] for user in created}) == len(created)
    sent = {user["event_id"] for user in created}
    for kind in ("welcome", "audit"):
        assert sorted(r["event_id"] for r in found if r["kind"] == kind) == sorted(sent), kind
    assert all(r["thread"].startswith("eventbus") for r in found if r["kind"] == "audit")
    checked = check_activity(str(activity_log))
    assert checked.returncode == 0, checked.stdout
    assert checked.stdout.startswith(
        "30 event(s), each handled exactly once by each of its handlers, in "
    )
