"""The event catalog with the Kafka backend: the document names every bootstrap server
(never a credential), and the live counters and failures come from the consuming side."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from catalog_support import SHOP_APP, served_with_a_broker
from kafka_support import FAST_GROUP


def test_served_document_and_counters_with_kafka(
    eventbus_app_factory: Callable[..., Any],
    app_dir: Callable[..., Path],
    kafka_servers: str,
    topic: str,
) -> None:
    app = eventbus_app_factory(
        app_dir(SHOP_APP),
        backend="kafka",
        kafka_bootstrap_servers=kafka_servers,
        kafka_topic=topic,
        kafka_group_id=f"{topic}.group",
        kafka_partitions=1,
        kafka_consumer_options=dict(FAST_GROUP),
        introspection_path="/_eventbus",
        asyncapi_path="/asyncapi.json",
        shutdown_timeout=1.0,
    )

    # The group's first assignment takes seconds.
    document = served_with_a_broker(app, "req-kafka", timeout=30)

    assert document["servers"] == {
        "kafka": {
            "host": kafka_servers,
            "protocol": "kafka",
            "description": f"Kafka: every event is a record of the topic {topic} (its name in "
            f"the eventbus-name header), handled by the consumer group '{topic}.group'; "
            f"dead letters in {topic}.dlq.",
        }
    }
