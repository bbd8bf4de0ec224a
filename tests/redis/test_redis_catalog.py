"""The event catalog with the Redis backend: the document names the server, and the live
counters and failures come from the consuming side, where the handlers run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from catalog_support import SHOP_APP, served_with_a_broker


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

    document = served_with_a_broker(app, "req-redis")

    url = urlsplit(redis_url)
    assert document["servers"]["redis"]["host"] == f"{url.hostname}:{url.port}"
    assert document["servers"]["redis"]["protocol"] == "redis"
    assert f"{{{prefix}}}:events" in document["servers"]["redis"]["description"]
