"""Redis URLs: passwords masked everywhere; redis://, rediss:// and unix:// accepted."""

from __future__ import annotations

import pytest
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection

from fastapi_opinionated_eventbus._core.errors import ConfigurationError
from fastapi_opinionated_eventbus._secrets import mask_url, scrub
from fastapi_opinionated_eventbus.backends.redis.connection import make_client
from fastapi_opinionated_eventbus.backends.redis.keys import StreamKeys, default_prefix


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("redis://:s3cret@localhost:6379/0", "redis://:***@localhost:6379/0"),
        ("redis://app:s3cret@localhost/1", "redis://app:***@localhost/1"),
        (
            "rediss://app:s3cret@cache.example.com:6380/0",
            "rediss://app:***@cache.example.com:6380/0",
        ),
        ("redis://s3cret@localhost", "redis://***@localhost"),
        ("redis://:p%40ss%3Aword@localhost", "redis://:***@localhost"),
        ("redis://localhost/0?password=s3cret&db=1", "redis://localhost/0?password=***&db=1"),
        ("unix:///run/redis.sock?password=s3cret", "unix:///run/redis.sock?password=***"),
        ("redis://:s3cret@[::1]:bad/0", "redis://:***@[::1]:bad/0"),
    ],
)
def test_mask_url_hides_every_password(url: str, masked: str) -> None:
    assert mask_url(url) == masked
    assert "s3cret" not in mask_url(url)


def test_mask_url_never_raises_on_garbage() -> None:
    masked = mask_url("redis://:s3cret@[broken")
    assert "s3cret" not in masked


def test_scrub_removes_the_password_from_any_text() -> None:
    url = "redis://app:p%40ss-word@localhost"
    text = "AUTH failed for p@ss-word (raw p%40ss-word)"
    assert scrub(text, url) == "AUTH failed for *** (raw ***)"


@pytest.mark.parametrize(
    ("url", "connection_class"),
    [
        ("rediss://:s3cret@cache.example.com:6380/0", SSLConnection),
        ("unix:///tmp/redis.sock", UnixDomainSocketConnection),
    ],
)
async def test_clients_are_built_for_tls_and_unix_urls(url: str, connection_class: type) -> None:
    client = make_client(url, connect_timeout=1.0)
    try:
        assert client.connection_pool.connection_class is connection_class
        # No hidden retries: the backend's own timeouts bound every wait.
        assert client.connection_pool.connection_kwargs["retry"].get_retries() == 0
    finally:
        await client.aclose()


def test_other_schemes_are_refused_with_the_url_masked() -> None:
    with pytest.raises(ValueError, match=r"http://:\*\*\*@x") as caught:
        make_client("http://:s3cret@x", connect_timeout=1.0)
    assert "s3cret" not in str(caught.value)


def test_keys_share_a_cluster_hash_tag() -> None:
    keys = StreamKeys("orders-api")
    assert keys.events == "{orders-api}:events"
    assert keys.dead == "{orders-api}:dead"
    with pytest.raises(ConfigurationError):
        StreamKeys("bad{prefix}")


@pytest.mark.parametrize(
    ("title", "prefix"),
    [("Orders API", "orders-api"), ("FastAPI", "fastapi"), ("  ", "eventbus"), ("{x}", "x")],
)
def test_default_prefix_from_the_app_title(title: str, prefix: str) -> None:
    assert default_prefix(title) == prefix
