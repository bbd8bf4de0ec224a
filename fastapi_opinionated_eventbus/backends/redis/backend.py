"""The Redis Streams backend: events cross processes, handlers run once per app.

``await emit()`` returns once Redis stored the event (XADD acknowledged within
``publish_timeout``, else :class:`BackendUnavailable`). Every process of the app reads the
events stream through one consumer group, so each event is handled by one process:
once in the normal case, at least once when processes die or connections drop (make
handlers idempotent with ``current_event().id``, which is stable across deliveries;
``current_event().attempt`` is the delivery count). Broadcast subscriptions run in every
live process, at most once each (see :mod:`.redis_broadcast`).

Keys (``{prefix}`` is a Redis Cluster hash tag): ``{prefix}:events`` and
``{prefix}:dead``, the dead-letter stream. Every process sharing a group must subscribe
the same handlers: whichever process reads an event runs all of its handlers there. A
process with no handlers reads nothing (it may still publish).
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Sequence
from contextvars import Context
from typing import TYPE_CHECKING

from fastapi_opinionated.shared.logger import ns_logger
from redis.asyncio import Redis

from ..._codec import Codec, known_types
from ..._core.dead_letters import DeadLetter
from ..._core.envelope import EventEnvelope
from ..._core.errors import BackendUnavailable
from ..._core.results import EmitResult, HandlerFailure
from ..._core.settings import BusSettings
from ..._secrets import mask_url, public_location
from ..._text import as_text
from ..backoff import keep_trying
from ..base import BackendHealth, BackendPort, ServerInfo, StopReport, start_in_context
from ..broker import encode_batch, not_started, register_handler_types
from ..naming import app_prefix, default_prefix
from ..replay import replay_letter
from .broadcast import BroadcastReader
from .connection import describe_error, is_fatal, is_transient, make_client
from .consumer import GroupConsumer
from .dead import DeadLetterStream, StoredLetter
from .keys import StreamKeys
from .publisher import Publisher

if TYPE_CHECKING:
    from ..._core.registry import Plan

__all__ = ["RedisHealth", "RedisStreamsBackend", "default_prefix"]

logger = ns_logger("EventBus.redis")

# In-flight handlers get this long at shutdown before they are cancelled (and their
# entries left pending for another consumer): the bus has already drained its own work.
_STOP_GRACE = 5.0


def default_consumer() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class RedisHealth(BackendHealth, total=False):
    redis_url: str
    """The URL, password masked."""
    stream: str
    stream_length: int | None
    group: str
    consumer: str
    """This process's consumer name."""
    pending: int | None
    """Entries delivered to the group and not acknowledged."""
    lag: int | None
    """Entries not yet delivered to the group (Redis 7+)."""
    pending_by_consumer: dict[str, int]


class RedisStreamsBackend:
    """A :class:`~fastapi_opinionated_eventbus.backends.Backend` on Redis Streams."""

    name = "redis"
    distributed = True

    def __init__(self, settings: BusSettings, port: BackendPort) -> None:
        self._port = port
        self._settings = settings
        self.url = settings.redis_url
        self.keys = StreamKeys(settings.redis_prefix or app_prefix(port.app_name))
        self.consumer = settings.redis_consumer or default_consumer()
        self.codec = Codec(port.schema_for, known_types, refresh=self._register_types)
        self._client: Redis | None = None
        self._publisher: Publisher | None = None
        self._consumer: GroupConsumer | None = None
        self._broadcast: BroadcastReader | None = None
        self._dead: DeadLetterStream | None = None

    @property
    def masked_url(self) -> str:
        return mask_url(self.url)

    def describe_servers(self) -> list[ServerInfo]:
        """The Redis server of ``redis_url``: host, port, database; never the password."""
        scheme, host, path = public_location(self.url, default_port=6379)
        server = ServerInfo(
            name="redis",
            host=host,
            protocol=scheme,
            description=(
                f"Redis Streams: every event is an entry of the stream {self.keys.events} "
                f"(its name in the entry's name field), read by the consumer group "
                f"{self._settings.redis_group!r}; dead letters in {self.keys.dead}."
            ),
        )
        if path and path != "/":
            server["pathname"] = path
        return [server]

    @property
    def pending_entries(self) -> int:
        """Entries this process received and has not acknowledged yet (a metrics gauge)."""
        return self._consumer.unacknowledged if self._consumer is not None else 0

    # ------------------------------------------------------------------ lifecycle
    async def connect(self) -> None:
        """Connect for publishing and inspection only: this process joins no consumer
        group and runs no handlers (CLI tools, producer-only scripts)."""
        if self._client is not None:
            return
        s = self._settings
        client = make_client(self.url, connect_timeout=s.connect_timeout)
        try:
            await self._connect(client)
        except BaseException:
            await client.aclose()
            raise
        self._client = client
        self._dead = DeadLetterStream(
            client,
            self.keys.dead,
            self.codec,
            consumer=self.consumer,
            max_length=s.max_stream_length,
        )
        self._publisher = Publisher(
            client,
            self.url,
            self.keys.events,
            max_length=s.max_stream_length,
            timeout=s.publish_timeout,
        )

    async def start(self) -> None:
        """Connect (retrying up to connect_timeout), then consume."""
        if self._consumer is not None:
            return
        await self.connect()
        client, dead, s = self._client, self._dead, self._settings
        assert client is not None and dead is not None
        where = {"url": self.url, "stream": self.keys.events, "consumer": self.consumer}
        consumer = GroupConsumer(self._port, client, self.codec, dead, s, **where)
        broadcast = BroadcastReader(self._port, client, self.codec, dead, s, **where)
        try:
            await consumer.ensure_group()
            await broadcast.start()
        except BaseException:
            await self.stop(self._settings.shutdown_timeout)
            raise
        self._register_types()
        self._consumer, self._broadcast = consumer, broadcast
        consumer.start()
        logger.info(
            f"Redis Streams backend started: {self.masked_url}, stream {self.keys.events}, "
            f"group {s.redis_group!r}, consumer {self.consumer!r}"
        )

    async def _connect(self, client: Redis) -> None:
        """PING until it answers, with exponential backoff, for up to connect_timeout."""

        async def ping() -> None:
            await client.ping()

        await keep_trying(
            ping,
            broker=f"Redis at {self.masked_url}",
            timeout=self._settings.connect_timeout,
            describe=lambda exc: describe_error(exc, self.url),
            refused=lambda exc: is_fatal(exc) or not is_transient(exc),
            hint="check the user name and password in redis_url",
            logger=logger,
        )

    async def pause(self) -> None:
        """Take no new events (shutdown has begun); handlers in flight finish, and
        publishing goes on while the bus drains its background emits."""
        if self._broadcast is not None:
            await self._broadcast.pause()
        if self._consumer is not None:
            await self._consumer.pause()

    async def settle(self, timeout: float) -> None:
        """Wait (without cancelling) up to ``timeout`` for the handlers running now."""
        running = set()
        for reader in (self._consumer, self._broadcast):
            if reader is not None:
                running |= reader.running()
        if running:
            await asyncio.wait(running, timeout=timeout)

    async def stop(self, timeout: float) -> StopReport:
        """Within ``timeout`` (at most a few seconds: the bus has drained its own work):
        readers first, since handlers still running may publish events of their own; then
        the publisher; then the connection."""
        report = StopReport(cancelled=0, abandoned=0, unconfirmed=0)
        client = self._client
        if client is None:
            return report
        grace = min(timeout, _STOP_GRACE)
        try:
            for reader in (self._broadcast, self._consumer):
                if reader is not None:
                    cancelled, abandoned = await reader.stop(grace)
                    report["cancelled"] += cancelled
                    report["abandoned"] += abandoned
            if self._publisher is not None:
                report["unconfirmed"] += await self._publisher.close(grace)
        finally:
            self._client = self._publisher = self._dead = None
            self._consumer = self._broadcast = None
            await client.aclose()
            logger.info(f"Redis Streams backend stopped ({self.masked_url})")
        return report

    @property
    def _description(self) -> str:
        return f"the Redis backend ({self.masked_url})"

    def _register_types(self) -> None:
        register_handler_types(self._port)

    # ------------------------------------------------------------------ publishing
    def check(self, envelope: EventEnvelope) -> None:
        """Raise EventSerializationError now if ``envelope`` cannot be published."""
        self.codec.encode(envelope)

    async def publish(self, envelope: EventEnvelope, plan: Plan) -> EmitResult:
        """Return once Redis stored the event (its handlers run in whichever process of
        the group reads it)."""
        fields = self.codec.encode(envelope)  # before anything is sent
        await self._started_publisher(envelope).publish(fields, envelope.name)
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
        """Every event encoded first (nothing is sent if one fails), then queued together:
        they leave in one pipeline, in order (see :mod:`.publisher`)."""
        encoded = encode_batch(batch, self.codec.encode)
        publisher = self._started_publisher(batch[0][0] if batch else None)
        outcomes = await publisher.publish_many(
            [(fields, envelope.name) for fields, (envelope, _) in zip(encoded, batch, strict=True)]
        )
        for index, outcome in enumerate(outcomes):
            if isinstance(outcome, BaseException):
                raise BackendUnavailable(
                    f"event {index} of the batch ({batch[index][0].name!r}) was not confirmed "
                    f"(those before it are stored): {outcome}",
                    may_be_stored=any(
                        getattr(later, "may_be_stored", False) for later in outcomes[index:]
                    ),
                ) from outcome
        return [EmitResult(envelope, 0, published=True) for envelope, _ in batch]

    # ------------------------------------------------------------------ dead letters
    def _letters(self) -> DeadLetterStream:
        if self._dead is None:
            raise not_started(self._description)
        return self._dead

    async def dead_letters(self) -> list[DeadLetter]:
        """The newest ``dead_letter_capacity`` letters of the dead-letter stream, oldest
        first. Letters whose event does not decode carry a placeholder envelope."""
        stored = await self._letters().newest(self._settings.dead_letter_capacity)
        return [s.letter for s in stored]

    async def purge_dead_letters(self) -> int:
        """Delete the dead-letter stream; returns how many letters it held."""
        return await self._letters().purge()

    async def replay_dead_letters(self) -> EmitResult:
        """Run each dead letter's handler again in this process, oldest first.

        A letter about the event as a whole (max deliveries) runs all of its handlers here.
        A letter leaves the stream once its handlers ran; a handler failing again leaves a
        new letter. Letters that cannot run here (malformed, or their handler is not
        subscribed in this process) stay, and are logged. Two processes replaying at once
        may both run a letter.
        """
        dead = self._letters()
        replayed = 0
        failures: list[HandlerFailure] = []
        for stored in await dead.pages():
            outcome = await self._replay(stored)
            if outcome is None:
                continue
            replayed += 1
            if outcome.failures:
                envelope = stored.letter.event
                letters = [
                    dead.for_failure(
                        _fields_of(self.codec, envelope),
                        stored.entry_id,
                        DeadLetter.from_exception(envelope, f.handler, f.exception, f.attempts),
                        reason="handler failed again on replay",
                    )
                    for f in outcome.failures
                ]
                await dead.add(letters)
                failures.extend(outcome.failures)
            await dead.delete(stored.entry_id)
        return EmitResult(None, replayed, tuple(failures))

    async def _replay(self, stored: StoredLetter) -> EmitResult | None:
        where = f"dead letter {stored.entry_id.decode()} of {stored.letter.event.name!r}"
        return await replay_letter(
            self._port, stored.letter, where=where, replayable=stored.replayable
        )

    # ------------------------------------------------------------------ health
    async def health(self) -> RedisHealth:
        report = RedisHealth(
            backend=self.name,
            reachable=False,
            stream=self.keys.events,
            stream_length=None,
            pending=None,
            lag=None,
            dead_letters=None,
            group=self._settings.redis_group,
            consumer=self.consumer,
            in_flight=self._consumer.in_flight if self._consumer is not None else 0,
            pending_by_consumer={},
            redis_url=self.masked_url,
        )
        client = self._client
        if client is None:
            report["error"] = "not started"
            return report
        try:
            async with asyncio.timeout(self._settings.publish_timeout):
                pipe = client.pipeline(transaction=False)
                pipe.ping()
                pipe.xlen(self.keys.events)
                pipe.xlen(self.keys.dead)
                pipe.xinfo_groups(self.keys.events)
                pipe.xpending(self.keys.events, self._settings.redis_group)
                _, length, dead, groups, summary = await pipe.execute(raise_on_error=False)
        except Exception as exc:
            report["error"] = describe_error(exc, self.url)
            return report
        report["reachable"] = True
        report["stream_length"] = length if isinstance(length, int) else None
        report["dead_letters"] = dead if isinstance(dead, int) else None
        for group in groups if isinstance(groups, list) else ():
            if as_text(group.get("name")) == self._settings.redis_group:
                report["pending"] = group.get("pending")
                report["lag"] = group.get("lag")  # None before Redis 7
        if isinstance(summary, dict):
            report["pending_by_consumer"] = {
                as_text(c["name"]): int(c["pending"]) for c in summary.get("consumers") or ()
            }
        return report


def _fields_of(codec: Codec, envelope: EventEnvelope) -> dict[bytes, bytes]:
    try:
        return codec.encode(envelope)
    except Exception:  # it decoded from these fields once; be safe anyway
        return {b"id": envelope.id.encode(), b"name": envelope.name.encode()}
