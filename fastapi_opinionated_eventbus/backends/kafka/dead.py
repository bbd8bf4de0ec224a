"""The dead-letter topic: events whose handlers failed for good, and records that could
not be handled at all, each with the reason.

A dead letter is a record of the dead-letter topic (one partition, so oldest first)::

    key      the event id (or the source record's key)
    value    the source record's value, untouched (the event's JSON body)
    headers  the source record's headers (eventbus-name, eventbus-id, ...), then
             dead-letter-reason, -handler (``module:qualname``, ``*`` for the event as a
             whole), -exception-type, -message, -traceback, -attempts, -failed-at
             (ISO 8601, UTC), -source (``topic/partition/offset``), -deliveries, -consumer

A topic cannot delete single records: the group ``<group>.dead-letters`` commits past
the letters replayed or purged, and listing starts from its committed offset.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from ..._codec import Codec, MalformedEntry
from ..._core.dead_letters import DeadLetter
from ..._core.envelope import EventEnvelope
from ..._core.results import EmitResult, HandlerFailure
from ..._text import as_text, loggable
from ..backoff import Backoff
from ..base import BackendPort
from ..replay import EVENT_LEVEL, replay_letter
from . import wire
from .config import KafkaConfig, is_transient

__all__ = ["DeadLetterTopic", "StoredLetter"]

_PREFIX = "dead-letter-"
# How long reading the topic waits for one fetch before it gives up on more records.
_POLL_MS = 500


@dataclass(frozen=True, slots=True)
class StoredLetter:
    tp: TopicPartition
    offset: int
    letter: DeadLetter
    replayable: bool
    """False when the stored event does not decode (malformed or unknown)."""
    record: Any
    """The letter's own record (to keep it, or to write a new letter about its event)."""

    @property
    def where(self) -> str:
        return f"{self.tp.topic}/{self.tp.partition}/{self.offset}"


class DeadLetterTopic:
    def __init__(
        self, producer: AIOKafkaProducer, config: KafkaConfig, codec: Codec, timeout: float
    ) -> None:
        self._producer = producer
        self._config = config
        self._codec = codec
        self._timeout = timeout
        self.topic = config.dead_letter_topic
        self._reader: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------------ writing
    def letter(
        self,
        source: Any,
        *,
        reason: str,
        handler: str = EVENT_LEVEL,
        exception_type: str = "",
        message: str = "",
        traceback: str = "",
        attempts: int = 0,
        deliveries: int = 0,
    ) -> wire.Record:
        """The record of one dead letter about the consumed record ``source``."""
        fields = {
            "reason": reason,
            "handler": handler,
            "exception-type": exception_type,
            "message": message,
            "traceback": traceback,
            "attempts": str(attempts),
            "failed-at": datetime.now(UTC).isoformat(),
            # A letter about a letter (replayed and failed again) keeps the first source.
            "source": as_text(
                wire.header(source.headers or (), _PREFIX + "source")
                or f"{source.topic}/{source.partition}/{source.offset}"
            ),
            "deliveries": str(deliveries),
            "consumer": self._config.client_id,
        }
        headers = [(k, v) for k, v in source.headers or () if not k.startswith(_PREFIX)]
        headers += [(_PREFIX + k, v.encode("utf-8", "backslashreplace")) for k, v in fields.items()]
        key = source.key if source.key is not None else wire.header(headers, wire.EVENT_ID)
        return key or b"", source.value or b"", headers

    def for_failures(
        self, source: Any, event: EventEnvelope, failures: Sequence[HandlerFailure], reason: str
    ) -> list[wire.Record]:
        letters = []
        for failure in failures:
            letter = DeadLetter.from_exception(
                event, failure.handler, failure.exception, failure.attempts
            )
            letters.append(
                self.letter(
                    source,
                    reason=reason,
                    handler=letter.handler,
                    exception_type=letter.exception_type,
                    message=letter.message,
                    traceback=letter.traceback,
                    attempts=letter.attempts,
                    deliveries=event.attempt,
                )
            )
        return letters

    @staticmethod
    def kept(stored: StoredLetter) -> wire.Record:
        """A letter written again as it is (it stays when the offsets move past it)."""
        record = stored.record
        return record.key or b"", record.value or b"", list(record.headers or ())

    async def add(self, records: Sequence[wire.Record]) -> None:
        """Store dead letters and wait for the broker's acknowledgement of each."""
        if not records:
            return
        async with asyncio.timeout(self._timeout):
            sent = [
                await self._producer.send(self.topic, value, key=key, headers=headers)
                for key, value, headers in records
            ]
            await asyncio.gather(*sent)

    async def add_until_stored(
        self, records: Sequence[wire.Record], giving_up: Callable[[], bool]
    ) -> None:
        """:meth:`add`, retried through a lost connection until stored or ``giving_up()``:
        a dead letter is written before its record is committed."""
        backoff = Backoff(initial=0.05, maximum=2.0)
        while True:
            try:
                await self.add(records)
                return
            except Exception as exc:
                if giving_up() or not is_transient(exc):
                    raise
                await backoff.sleep()

    # ------------------------------------------------------------------ replaying
    async def replay(self, port: BackendPort) -> EmitResult:
        """Run each letter's handler again through ``port`` (this process), oldest first.

        A letter about the event as a whole (max deliveries) runs all of its handlers here.
        Letters that failed again are written again as new letters; letters that cannot
        run here (their event does not decode, or their handler is not subscribed in this
        process) are written again as they are, and logged. Then the dead-letter group
        commits past the letters read. Two processes replaying at once may both run a letter.
        """
        stored_letters, positions = await self.read()
        replayed = 0
        failures: list[HandlerFailure] = []
        again: list[wire.Record] = []
        for stored in stored_letters:
            where = f"dead letter {stored.where} of {stored.letter.event.name!r}"
            outcome = await replay_letter(
                port, stored.letter, where=where, replayable=stored.replayable
            )
            if outcome is None:
                again.append(self.kept(stored))
                continue
            replayed += 1
            if outcome.failures:
                again += self.for_failures(
                    stored.record,
                    stored.letter.event,
                    outcome.failures,
                    "handler failed again on replay",
                )
                failures.extend(outcome.failures)
        await self.add(again)  # before the commit: a letter may be doubled, never lost
        await self.commit(positions)
        return EmitResult(None, replayed, tuple(failures))

    # ------------------------------------------------------------------ reading
    async def _consumer(self) -> AIOKafkaConsumer:
        if self._reader is None:
            reader = AIOKafkaConsumer(
                **self._config.common(),
                group_id=self._config.letters_group,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
            )
            await reader.start()
            self._reader = reader
        return self._reader

    async def close(self) -> None:
        if self._reader is not None:
            reader, self._reader = self._reader, None
            await reader.stop()

    async def _partitions(self, reader: AIOKafkaConsumer) -> list[TopicPartition]:
        partitions = reader.partitions_for_topic(self.topic)
        if partitions is None:
            await reader.topics()  # refreshes the metadata
            partitions = reader.partitions_for_topic(self.topic) or set()
        return [TopicPartition(self.topic, p) for p in sorted(partitions)]

    async def read(self) -> tuple[list[StoredLetter], dict[TopicPartition, int]]:
        """Every letter not yet replayed or purged, oldest first, and the position after
        the last one of each partition (what :meth:`commit` takes)."""
        async with self._lock:
            reader = await self._consumer()
            tps = await self._partitions(reader)
            if not tps:
                return [], {}
            reader.assign(tps)
            await reader.seek_to_committed(*tps)
            ends = await reader.end_offsets(tps)
            letters: list[StoredLetter] = []
            for tp in tps:
                letters += await self._read_partition(reader, tp, ends.get(tp, 0))
            positions = {tp: await reader.position(tp) for tp in tps}
        letters.sort(key=lambda s: s.letter.failed_at)
        return letters, positions

    async def _read_partition(
        self, reader: AIOKafkaConsumer, tp: TopicPartition, end: int
    ) -> list[StoredLetter]:
        """Up to the partition's end: ``end_offsets`` and the high watermark of the fetch
        responses, whichever is further (a broker may report one of them short)."""
        letters: list[StoredLetter] = []
        while True:
            position = await reader.position(tp)
            highwater = reader.highwater(tp)
            if position >= max(end, highwater or 0):
                return letters
            batch = await reader.getmany(tp, timeout_ms=_POLL_MS)
            records = batch.get(tp, [])
            if not records and reader.highwater(tp) is None:
                return letters  # nothing came back at all: the partition is empty
            letters += [self._stored(tp, record) for record in records]

    async def commit(self, positions: dict[TopicPartition, int]) -> None:
        """Mark every letter before ``positions`` as gone (replayed or purged)."""
        if not positions:
            return
        async with self._lock:
            reader = await self._consumer()
            await reader.commit(positions)

    async def count(self) -> int:
        """Letters not yet replayed or purged, from the end offsets the broker reports."""
        async with self._lock:
            reader = await self._consumer()
            tps = await self._partitions(reader)
            if not tps:
                return 0
            ends = await reader.end_offsets(tps)
            total = 0
            for tp in tps:
                committed = await reader.committed(tp)
                total += max(0, ends.get(tp, 0) - (committed or 0))
            return total

    def _stored(self, tp: TopicPartition, record: Any) -> StoredLetter:
        headers = list(record.headers or ())

        def text(name: str) -> str:
            return as_text(wire.header(headers, _PREFIX + name) or b"")

        deliveries = _int(text("deliveries"))
        try:
            envelope = wire.decode(self._codec, record, max(deliveries, 1))
            replayable = True
        except (MalformedEntry, RecursionError, ValueError):
            # A letter is listed even when its event never decoded (that is why it is here);
            # what its headers hold came from outside, and is shown sanitised.
            name = loggable(wire.header(headers, wire.EVENT_NAME) or b"") or "<malformed record>"
            event_id = loggable(wire.header(headers, wire.EVENT_ID) or b"") or text("source")
            envelope = EventEnvelope(name, (), {}, event_id=event_id)
            replayable = False
        try:
            failed_at = datetime.fromisoformat(text("failed-at"))
        except ValueError:
            failed_at = datetime.fromtimestamp(record.timestamp / 1000, UTC)
        letter = DeadLetter(
            event=envelope,
            handler=text("handler") or EVENT_LEVEL,
            exception_type=text("exception-type"),
            message=text("message"),
            traceback=text("traceback"),
            attempts=_int(text("attempts")),
            failed_at=failed_at,
            reason=text("reason") or "unknown",
        )
        return StoredLetter(tp, record.offset, letter, replayable, record)


def _int(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        return 0
