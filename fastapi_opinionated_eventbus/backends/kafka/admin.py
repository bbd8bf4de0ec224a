"""Topics: created at startup when missing (``kafka_create_topics``), with the configured
partitions and a replication factor that fits the cluster; else reported missing."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code
from fastapi_opinionated.shared.logger import ns_logger

from .config import KafkaConfig

__all__ = ["ensure_topics", "missing_topics", "probe"]

logger = ns_logger("EventBus.kafka")


async def ensure_topics(
    config: KafkaConfig, *, partitions: int, replication: int | None, timeout: float
) -> None:
    """Create the events topic (``partitions``) and the dead-letter topic (one partition,
    so that letters stay in order) unless they exist."""
    admin = AIOKafkaAdminClient(
        **config.common(), request_timeout_ms=max(int(timeout * 1000), 1000)
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = {config.topic: partitions, config.dead_letter_topic: 1}
        missing = {name: count for name, count in wanted.items() if name not in existing}
        if not missing:
            return
        if replication is None:
            # Kafka's usual 3 on a cluster, 1 on a single broker (development).
            brokers = len((await admin.describe_cluster())["brokers"])
            replication = max(1, min(3, brokers))
        topics = [NewTopic(name, count, replication) for name, count in missing.items()]
        response = await admin.create_topics(topics)
        for name, code, message, *_ in response.topic_errors:
            error = for_code(code)
            # Another process of the app may have created it meanwhile.
            if code and error is not TopicAlreadyExistsError:
                raise error(f"cannot create topic {name!r}: {message}")
        logger.info(
            "Created Kafka topic(s) "
            + ", ".join(f"{name} ({count} partition(s))" for name, count in missing.items())
            + f" with replication factor {replication}"
        )
    finally:
        await admin.close()


async def probe(config: KafkaConfig, timeout: float) -> tuple[str | None, set[str]]:
    """Ask the brokers for their topics once (no retries): ``(None, topics)`` when they
    answer, ``(why not, set())`` otherwise, without secrets."""
    admin = AIOKafkaAdminClient(
        **config.common(), request_timeout_ms=max(int(timeout * 1000), 1000)
    )
    try:
        async with asyncio.timeout(timeout):
            await admin.start()
            return None, set(await admin.list_topics())
    except Exception as exc:
        reason = f"timed out after {timeout}s" if isinstance(exc, TimeoutError) else None
        return f"Kafka at {config.servers} is unreachable: {reason or config.describe(exc)}", set()
    finally:
        try:
            async with asyncio.timeout(2.0):
                await admin.close()
        except Exception:
            logger.debug("closing a Kafka admin client failed", exc_info=True)


def missing_topics(client: AIOKafkaConsumer, config: KafkaConfig) -> list[str]:
    """A warning per topic of the app that ``client``'s last metadata lacks, for when
    nobody will create it (``kafka_create_topics`` off)."""
    return [
        f"topic {topic!r} does not exist and kafka_create_topics is off: create it before "
        "the app starts"
        for topic in (config.topic, config.dead_letter_topic)
        if not client.partitions_for_topic(topic)
    ]
