"""Fixtures shared by every test.

The core is imported first: it replaces the root logger's handlers at import, and pytest's
``caplog`` only sees records if that happened before any test ran.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import fastapi_opinionated.app  # noqa: F401 - import order matters, see above
import pytest
from kafka_broker import KafkaBroker, started_broker
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from support import (
    EXAMPLE_APP,
    REPO_ROOT,
    Postgres,
    RedisServer,
    no_redis,
    start_postgres,
    strip_ansi,
    write_app,
)

__all__ = ["EXAMPLE_APP", "REPO_ROOT", "strip_ansi", "write_app"]


@pytest.fixture
def app_dir(tmp_path: Path) -> Callable[..., Path]:
    """``app_dir({"orders/handlers.py": "..."})`` -> a fresh app root in tmp_path."""
    counter = iter(range(1_000_000))

    def make(domain_files: dict[str, str], *, enable: bool = True) -> Path:
        return write_app(tmp_path / f"app{next(counter)}", domain_files, enable=enable)

    return make


@pytest.fixture
def spans() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    # The global provider can be set once per process; tests share this one.
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(provider)
    else:
        trace.get_tracer_provider().add_span_processor(SimpleSpanProcessor(exporter))  # type: ignore[attr-defined]
    return exporter


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env_url = os.environ.get("EVENTBUS_TEST_REDIS_URL")
    if env_url:
        yield env_url
        return
    if shutil.which("redis-server") is None:
        no_redis("no redis-server binary on PATH and EVENTBUS_TEST_REDIS_URL is not set")
    server = RedisServer(tmp_path_factory.mktemp("redis-session"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """One tansu broker for the whole session (tests that stop theirs start their own)."""
    broker = started_broker(tmp_path_factory.mktemp("kafka-session") / "tansu.log")
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def kafka_servers(kafka_broker: KafkaBroker) -> str:
    return kafka_broker.servers


def _postgres_of(url: str) -> Postgres:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return Postgres(
        async_url=parsed.set(drivername="postgresql+asyncpg").render_as_string(False),
        sync_url=parsed.set(drivername="postgresql+psycopg").render_as_string(False),
        password=parsed.password or "",
    )


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """The session's PostgreSQL: EVENTBUS_TEST_POSTGRES_URL, else a private cluster."""
    env_url = os.environ.get("EVENTBUS_TEST_POSTGRES_URL")
    if env_url:
        yield _postgres_of(env_url)
        return
    server = start_postgres()
    try:
        yield _postgres_of(server.url())
    finally:
        server.cleanup()
