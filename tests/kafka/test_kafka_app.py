"""The example app in Kafka mode: ``EVENTBUS_BACKEND=kafka uvicorn main:app --workers 2``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from kafka_support import app_env, eventually
from support import EXAMPLE_APP, check_activity, two_uvicorn_workers, wait_until_serving


async def test_example_app_under_two_workers_handles_each_signup_once(
    kafka_servers: str, topic: str, tmp_path: Path
) -> None:
    """Users go to one SQLite file shared by the workers, and user.created through its
    outbox: one worker relays it to the topic, and each signup is handled once, by
    whichever worker owns its partition."""
    activity_log = tmp_path / "activity.jsonl"
    env = {
        **app_env(kafka_servers, topic),
        "EXAMPLE_ACTIVITY_LOG": str(activity_log),
        "EXAMPLE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'example.db'}",
    }
    with two_uvicorn_workers(EXAMPLE_APP, tmp_path / "uvicorn.log", env) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            await wait_until_serving(client)
            created = []
            for n in range(30):
                response = await client.post(
                    "/users/", json={"name": f"user{n}", "email": f"u{n}@example.com"}
                )
                assert response.status_code == 200, response.text
                created.append(response.json())
            health = (await client.get("/_eventbus")).json()["health"]
            assert (health["backend"], health["topic"], health["reachable"]) == (
                "kafka",
                topic,
                True,
            )

        def records() -> list[dict[str, Any]]:
            if not activity_log.exists():
                return []
            return [json.loads(line) for line in activity_log.read_text().splitlines()]

        async def both_handlers_ran_for_all() -> list[dict[str, Any]] | None:
            found = records()
            return found if len(found) >= 2 * len(created) else None

        found = await eventually(both_handlers_ran_for_all, timeout=60, what="all signups")
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
