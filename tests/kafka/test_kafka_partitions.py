"""Records keyed by their own event id: a sticky partition, a batch's worth of bytes each."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from aiokafka import AIOKafkaProducer

from fastapi_opinionated_eventbus.backends.kafka.config import KafkaConfig
from fastapi_opinionated_eventbus.backends.kafka.publisher import Publisher, _estimate
from fastapi_opinionated_eventbus.backends.kafka.wire import Outgoing


def _publisher(partitions: int, options: dict[str, Any]) -> Publisher:
    cluster = SimpleNamespace(partitions_for_topic=lambda topic: set(range(partitions)))
    producer = SimpleNamespace(client=SimpleNamespace(cluster=cluster))
    config = SimpleNamespace(topic="t", producer_options=options)
    return Publisher(cast(AIOKafkaProducer, producer), cast(KafkaConfig, config), 5.0)


def _record(index: int, own_key: bool = True) -> Outgoing:
    return (f"id-{index:06}".encode(), b"v" * 200, [("eventbus-name", b"job")], own_key)


def test_a_partition_takes_a_batch_worth_of_records_then_the_next_one() -> None:
    publisher = _publisher(3, {"max_batch_size": 4096})
    size = _estimate(*_record(0)[:3])
    per_batch = 4096 // size
    chosen = [publisher._partition(_record(i)) for i in range(3 * per_batch + 1)]
    assert chosen == [1] * per_batch + [2] * per_batch + [0] * per_batch + [1]


def test_records_keyed_by_an_event_key_are_hashed_by_the_producer() -> None:
    publisher = _publisher(3, {})
    assert publisher._partition(_record(0, own_key=False)) is None
