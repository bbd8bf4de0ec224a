"""The Kafka backend: events cross processes, handlers run once per app.

``await emit()`` returns once the broker acknowledged the record (acks=all, within
``publish_timeout``, else :class:`BackendUnavailable`). Every process of the app joins
one consumer group; the process owning a record's partition handles it: once in the
normal case, at least once when processes die or rebalances interrupt handlers (make
handlers idempotent with ``current_event().id``, stable across deliveries). Records of
one partition key are handled in order; see :mod:`.consumer` for how commits never pass
unfinished work, and :mod:`.broadcast` for broadcast subscriptions.

Topics: ``<prefix>.events`` (``kafka_topic``) and ``<topic>.dlq``
(``kafka_dead_letter_topic``); the group is ``<prefix>`` (``kafka_group_id``), where the
prefix is the app's title as a slug. A process with no handlers joins no group.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from contextvars import Context
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from fastapi_opinionated.shared.logger import ns_logger

from ..._codec import Codec, known_types
from ..._core.dead_letters import DeadLetter
from ..._core.envelope import EventEnvelope
from ..._core.errors import BackendUnavailable, ConfigurationError
from ..._core.results import EmitResult
from ..._core.settings import BusSettings
from ..backoff import keep_trying
from ..base import BackendHealth, BackendPort, ServerInfo, StopReport, start_in_context
from ..broker import encode_batch, not_started, register_handler_types
from . import wire
from .admin import ensure_topics, missing_topics
from .broadcast import BroadcastReader
from .config import KafkaConfig, is_fatal
from .consumer import GroupConsumer
from .dead import DeadLetterTopic
from .publisher import Publisher

if TYPE_CHECKING:
    from ..._core.registry import Plan

__all__ = ["KafkaBackend", "KafkaHealth"]

logger = ns_logger("EventBus.kafka")

# In-flight handlers get this long at shutdown before they are cancelled (and their
# records left uncommitted): the bus has already drained its own work.
_STOP_GRACE = 5.0


class KafkaHealth(BackendHealth, total=False):
    bootstrap_servers: str
    """The brokers as configured (``host:port``; never the security settings)."""
    topic: str
    dead_letter_topic: str
    group: str
    client_id: str
    partitions: int | None
    """Partitions of the events topic (None when the broker could not be asked)."""
    assigned_partitions: list[int]
    """The partitions this process owns in the group now."""
    committed_offsets: dict[str, int | None]
    """The group's committed offset per partition (None: nothing committed yet)."""
    held: int
    """Records this process received and has not committed yet (running, waiting for
    their key's turn, or finished behind an unfinished one)."""


class KafkaBackend:
    """A :class:`~fastapi_opinionated_eventbus.backends.Backend` on Kafka (aiokafka)."""

    name = "kafka"
    distributed = True

    def __init__(self, settings: BusSettings, port: BackendPort) -> None:
        self._port = port
        self._settings = settings
        self.config = KafkaConfig.from_settings(settings, port.app_name)
        self.codec = Codec(port.schema_for, known_types, refresh=self._register_types)
        self._producer: AIOKafkaProducer | None = None
        self._publisher: Publisher | None = None
        self._dead: DeadLetterTopic | None = None
        self._consumer: GroupConsumer | None = None
        self._broadcast: BroadcastReader | None = None
        self._inspector: AIOKafkaConsumer | None = None

    @property
    def assigned_partitions(self) -> list[int]:
        """The partitions of the events topic this process owns in the group now."""
        return [tp.partition for tp in self._consumer.assigned] if self._consumer else []

    @property
    def pending_entries(self) -> int:
        """Records this process received and has not committed yet (a metrics gauge)."""
        return self._consumer.held if self._consumer is not None else 0

    def describe_servers(self) -> list[ServerInfo]:
        """One entry per bootstrap server (``kafka``, ``kafka-2``, ...): ``host:port`` and
        the protocol (``kafka-secure`` with TLS or SASL); never the security settings."""
        secure = self.config.secure
        description = (
            f"Kafka: every event is a record of the topic {self.config.topic} (its name in the "
            f"{wire.EVENT_NAME} header), handled by the consumer group "
            f"{self.config.group!r}; dead letters in {self.config.dead_letter_topic}."
        )
        return [
            ServerInfo(
                name="kafka" if index == 1 else f"kafka-{index}",
                host=server,
                protocol="kafka-secure" if secure else "kafka",
                description=description,
            )
            for index, server in enumerate(self.config.servers.split(","), start=1)
        ]

    # ------------------------------------------------------------------ lifecycle
    async def connect(self) -> None:
        """Connect for publishing and inspection only: this process joins no consumer
        group and runs no handlers (CLI tools, producer-only scripts)."""
        if self._producer is not None:
            return
        producer = await self._start_producer()
        self._producer = producer
        timeout = self._settings.publish_timeout
        self._publisher = Publisher(producer, self.config, timeout)
        self._dead = DeadLetterTopic(producer, self.config, self.codec, timeout)

    async def start(self) -> None:
        """Connect (retrying up to connect_timeout), create missing topics, then consume."""
        if self._consumer is not None:
            return
        await self.connect()
        s, dead = self._settings, self._dead
        assert dead is not None
        try:
            if s.kafka_create_topics:
                await ensure_topics(
                    self.config,
                    partitions=s.kafka_partitions,
                    replication=s.kafka_replication_factor,
                    timeout=s.connect_timeout,
                )
        except Exception as exc:
            await self.stop(s.shutdown_timeout)
            raise BackendUnavailable(
                f"Kafka at {self.config.servers}: cannot create the topics "
                f"{self.config.topic!r} and {self.config.dead_letter_topic!r}: "
                f"{self.config.describe(exc)} (create them yourself and set "
                "kafka_create_topics=False, or grant the permission)"
            ) from None
        self._register_types()
        self._consumer = GroupConsumer(self._port, self.config, self.codec, dead, s)
        self._broadcast = BroadcastReader(self._port, self.config, self.codec, dead, s)
        self._consumer.start()
        try:
            await self._broadcast.start()
        except Exception as exc:
            await self.stop(s.shutdown_timeout)
            raise BackendUnavailable(
                f"Kafka at {self.config.servers}: cannot read {self.config.topic!r} for "
                f"broadcast subscriptions: {self.config.describe(exc)}"
            ) from None
        logger.info(
            f"Kafka backend started: {self.config.servers}, topic {self.config.topic}, "
            f"group {self.config.group!r}"
        )

    def _client_options(self) -> dict[str, Any]:
        return {
            **self.config.common(),
            "acks": "all",
            # aiokafka's idempotent producer needs broker support this backend does not
            # rely on; acks=all plus at-least-once consumers cover what it would.
            "enable_idempotence": False,
            # Unsent records expire about when their emit gave up on them.
            "request_timeout_ms": max(int(self._settings.publish_timeout * 1000), 1000),
            **self.config.producer_options,
        }

    async def _start_producer(self) -> AIOKafkaProducer:
        """Start a producer, retrying with backoff for up to connect_timeout."""

        def make() -> AIOKafkaProducer:
            try:
                return AIOKafkaProducer(**self._client_options())
            except (TypeError, ValueError) as exc:
                raise ConfigurationError(
                    f"option 'kafka_producer_options' or 'kafka_security': "
                    f"{self.config.describe(exc)}"
                ) from None

        unstarted: list[AIOKafkaProducer] = [make()]  # bad options fail here, at once

        async def start() -> AIOKafkaProducer:
            producer = unstarted.pop() if unstarted else make()
            try:
                await producer.start()
            except BaseException:
                await _quietly_stop(producer)
                raise
            return producer

        return await keep_trying(
            start,
            broker=f"Kafka at {self.config.servers}",
            timeout=self._settings.connect_timeout,
            describe=self.config.describe,
            refused=is_fatal,
            hint="check kafka_security",
            logger=logger,
        )

    async def pause(self) -> None:
        """Take no new records (shutdown has begun); handlers in flight finish, and
        publishing goes on while the bus drains its background emits."""
        if self._broadcast is not None:
            await self._broadcast.pause()
        if self._consumer is not None:
            await self._consumer.pause()

    async def settle(self, timeout: float) -> None:
        """Wait (without cancelling) up to ``timeout`` for the handlers running now."""
        running: set[asyncio.Task[None]] = set()
        if self._consumer is not None:
            running |= self._consumer.tasks()
        if self._broadcast is not None:
            running |= self._broadcast.running()
        if running:
            await asyncio.wait(running, timeout=timeout)

    async def stop(self, timeout: float) -> StopReport:
        """Within ``timeout`` (at most a few seconds: the bus has drained its own work):
        readers first, since handlers still running may publish; then the producer, which
        sends what it holds. Publishes it could not get acknowledged are unconfirmed."""
        report = StopReport(cancelled=0, abandoned=0, unconfirmed=0)
        producer = self._producer
        if producer is None:
            return report
        grace = min(timeout, _STOP_GRACE)
        in_flight: set[asyncio.Future[object]] = set()
        try:
            for reader in (self._broadcast, self._consumer):
                if reader is not None:
                    cancelled, abandoned = await reader.stop(grace)
                    report["cancelled"] += cancelled
                    report["abandoned"] += abandoned
            for closing in (self._dead, self._inspector):
                if closing is not None:
                    await _quietly_stop(closing)
            if self._publisher is not None:
                in_flight = set(self._publisher.unacknowledged)
        finally:
            self._producer = self._publisher = self._dead = None
            self._consumer = self._broadcast = self._inspector = None
            try:
                async with asyncio.timeout(max(grace, 0.1)):
                    await producer.stop()  # sends what it holds, then closes
            except Exception:
                await _quietly_stop(producer)
            report["unconfirmed"] = sum(1 for sent in in_flight if not _acknowledged(sent))
            logger.info(f"Kafka backend stopped ({self.config.servers})")
        return report

    @property
    def _description(self) -> str:
        return f"the Kafka backend ({self.config.servers})"

    def _register_types(self) -> None:
        register_handler_types(self._port)

    # ------------------------------------------------------------------ publishing
    def check(self, envelope: EventEnvelope) -> None:
        """Raise EventSerializationError now if ``envelope`` cannot be published."""
        wire.to_record(self.codec, envelope)

    async def publish(self, envelope: EventEnvelope, plan: Plan) -> EmitResult:
        """Return once the broker acknowledged the record (its handlers run in whichever
        process of the group owns its partition)."""
        record = wire.to_record(self.codec, envelope)  # before anything is sent
        await self._started_publisher(envelope).publish(record, envelope.name)
        return EmitResult(envelope, 0, published=True)

    def _started_publisher(self, envelope: EventEnvelope | None) -> Publisher:
        if self._publisher is None:
            raise not_started(self._description, envelope)
        return self._publisher

    def start_publish(
        self, envelope: EventEnvelope, plan: Plan, context: Context
    ) -> Awaitable[object] | None:
        return start_in_context(self.publish(envelope, plan), context)

    async def publish_many(self, batch: Sequence[tuple[EventEnvelope, Plan]]) -> list[EmitResult]:
        """Every event encoded first (nothing is sent if one fails), then appended to the
        producer together and acknowledged in one round trip."""
        encoded = encode_batch(batch, lambda envelope: wire.to_record(self.codec, envelope))
        names = [envelope.name for envelope, _ in batch]
        records = list(zip(encoded, names, strict=True))
        publisher = self._started_publisher(batch[0][0] if batch else None)
        await publisher.publish_many(records)
        return [EmitResult(envelope, 0, published=True) for envelope, _ in batch]

    # ------------------------------------------------------------------ dead letters
    def _letters(self) -> DeadLetterTopic:
        if self._dead is None:
            raise not_started(self._description)
        return self._dead

    async def dead_letters(self) -> list[DeadLetter]:
        """The newest ``dead_letter_capacity`` letters not yet replayed or purged, oldest
        first. Letters whose event does not decode carry a placeholder envelope."""
        stored, _ = await self._letters().read()
        return [s.letter for s in stored[-self._settings.dead_letter_capacity :]]

    async def purge_dead_letters(self) -> int:
        """Commit the dead-letter group past every letter; returns how many there were."""
        dead = self._letters()
        stored, positions = await dead.read()
        await dead.commit(positions)
        return len(stored)

    async def replay_dead_letters(self) -> EmitResult:
        """Run each dead letter's handler again in this process, oldest first (see
        :meth:`DeadLetterTopic.replay`)."""
        return await self._letters().replay(self._port)

    # ------------------------------------------------------------------ health
    async def _inspect(self) -> AIOKafkaConsumer:
        """A client of the app's group that never joins it: it reads committed offsets."""
        if self._inspector is None:
            inspector = AIOKafkaConsumer(
                **self.config.common(), group_id=self.config.group, enable_auto_commit=False
            )
            try:
                await inspector.start()
            except BaseException:
                await _quietly_stop(inspector)
                raise
            self._inspector = inspector
        return self._inspector

    async def health(self) -> KafkaHealth:
        consumer = self._consumer
        report = KafkaHealth(
            backend=self.name,
            reachable=False,
            bootstrap_servers=self.config.servers,
            topic=self.config.topic,
            dead_letter_topic=self.config.dead_letter_topic,
            group=self.config.group,
            client_id=self.config.client_id,
            partitions=None,
            assigned_partitions=self.assigned_partitions,
            committed_offsets={},
            in_flight=consumer.in_flight if consumer is not None else 0,
            held=consumer.held if consumer is not None else 0,
            dead_letters=None,
        )
        if self._producer is None or self._dead is None:
            report["error"] = "not started"
            return report
        try:
            async with asyncio.timeout(self._settings.publish_timeout):
                inspector = await self._inspect()
                await inspector.topics()  # a metadata round trip: the broker answers
                report["reachable"] = True
                partitions = sorted(inspector.partitions_for_topic(self.config.topic) or ())
                report["partitions"] = len(partitions) or None
                if not self._settings.kafka_create_topics:
                    report["warnings"] = missing_topics(inspector, self.config)
                for partition in partitions:
                    tp = TopicPartition(self.config.topic, partition)
                    report["committed_offsets"][str(partition)] = await inspector.committed(tp)
                report["dead_letters"] = await self._dead.count()
        except Exception as exc:
            report["error"] = (
                f"timed out after {self._settings.publish_timeout}s"
                if isinstance(exc, TimeoutError)
                else self.config.describe(exc)
            )
        return report


def _acknowledged(sent: asyncio.Future[object]) -> bool:
    return sent.done() and not sent.cancelled() and sent.exception() is None


async def _quietly_stop(client: Any) -> None:
    """Close a client that failed or is being abandoned; its errors no longer matter."""
    try:
        async with asyncio.timeout(2.0):
            await (client.close() if isinstance(client, DeadLetterTopic) else client.stop())
    except Exception:
        logger.debug("closing a Kafka client failed", exc_info=True)
