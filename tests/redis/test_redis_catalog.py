"""The event catalog with the Redis backend: the document names the server, and the live
counters and failures come from the consuming side, where the handlers run."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from catalog_support import HOSTILE, SHOP_APP, validate_asyncapi
from fastapi.testclient import TestClient

from fastapi_opinionated_eventbus import eventbus_api


def test_served_document_and_counters_with_redis(
    eventbus_app_factory: Callable[..., Any],
    app_dir: Callable[..., Path],
    redis_url: str,
    prefix: str,
) -> None:
    app = eventbus_app_factory(
        app_dir(SHOP_APP),
        backend="redis",
        redis_url=redis_url,
        redis_prefix=prefix,
        introspection_path="/_eventbus",
        asyncapi_path="/asyncapi.json",
        shutdown_timeout=1.0,
    )

    @app.post("/emit")
    async def emit() -> dict[str, Any]:
        await eventbus_api().emit("payment.processed", "p_1", 9.5)
        result = await eventbus_api().emit(HOSTILE, {"card": "4111"})
        return {"event_id": result.event_id}

    with TestClient(app) as client:
        document = client.get("/asyncapi.json").json()
        event_id = client.post("/emit", headers={"X-Correlation-ID": "req-redis"}).json()[
            "event_id"
        ]
        deadline = time.monotonic() + 15
        while True:
            report = client.get("/_eventbus").json()
            events = report["counters"]["events"]
            if (
                events.get(HOSTILE, {}).get("dead_lettered")
                and events.get("payment.processed", {}).get("handled") == 2
            ):
                break
            assert time.monotonic() < deadline, report["counters"]
            time.sleep(0.05)  # polling interval, not synchronisation

    validate_asyncapi(document)
    url = urlsplit(redis_url)
    assert document["servers"]["redis"]["host"] == f"{url.hostname}:{url.port}"
    assert document["servers"]["redis"]["protocol"] == "redis"
    assert f"{{{prefix}}}:events" in document["servers"]["redis"]["description"]
    # Emitted here, and handled here too (this process is also the group's consumer).
    assert events["payment.processed"]["emitted"] == 1
    [failure] = report["recent_failures"]
    assert (failure["event"], failure["event_id"]) == (HOSTILE, event_id)
    assert failure["correlation_id"] == "req-redis"  # carried through the stream
    assert failure["exception_type"] == "RuntimeError"
