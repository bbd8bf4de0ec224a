"""The dead-letter stream: events whose handlers failed for good, and entries that could
not be handled at all, each with the reason.

A dead letter's fields::

    reason            why it is here (handler failed / max deliveries / malformed entry)
    handler           the failed handler's ``module:qualname``, or ``*`` for the event as a
                      whole (it never got a verdict from its handlers)
    exception_type, message, traceback, attempts
    failed_at         ISO 8601, UTC
    source            the entry id in the events stream
    deliveries        how often that entry had been delivered
    consumer          the consumer that gave up on it
    id, name, body    the event itself, copied from the entry, when it had them
    raw               for a malformed entry: all its fields as JSON text (kept for a human)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT

from ..._codec import BODY, ID, NAME, Codec, MalformedEntry
from ..._core.dead_letters import DeadLetter
from ..._core.envelope import EventEnvelope
from ..._text import as_text, loggable
from ..replay import EVENT_LEVEL

__all__ = ["EVENT_LEVEL", "DeadLetterStream", "StoredLetter"]


Fields = Mapping[bytes, bytes]
Row = tuple[bytes, dict[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class StoredLetter:
    entry_id: bytes
    letter: DeadLetter
    replayable: bool
    """False when the stored event does not decode (malformed or unknown)."""


class DeadLetterStream:
    def __init__(
        self, client: Redis, key: str, codec: Codec, *, consumer: str, max_length: int
    ) -> None:
        self._client = client
        self.key = key
        self._codec = codec
        self._consumer = consumer
        self._max_length = max_length

    # ------------------------------------------------------------------ writing
    def entry(
        self,
        source: Fields,
        *,
        source_id: bytes | str,
        reason: str,
        handler: str = EVENT_LEVEL,
        exception_type: str = "",
        message: str = "",
        traceback: str = "",
        attempts: int = 0,
        deliveries: int = 0,
        malformed: bool = False,
    ) -> dict[bytes, bytes | str | int]:
        """The fields of one dead letter about the event entry ``source``."""
        fields: dict[bytes, bytes | str | int] = {
            b"reason": reason,
            b"handler": handler,
            b"exception_type": exception_type,
            b"message": message,
            b"traceback": traceback,
            b"attempts": attempts,
            b"failed_at": datetime.now(UTC).isoformat(),
            b"source": source_id,
            b"deliveries": deliveries,
            b"consumer": self._consumer,
        }
        for name in (ID, NAME, BODY):
            value = source.get(name)
            if isinstance(value, bytes):
                fields[name] = value
        if malformed:
            raw = {as_text(k): as_text(v) for k, v in source.items()}
            fields[b"raw"] = json.dumps(raw, ensure_ascii=False)
        return fields

    def for_failure(
        self, source: Fields, source_id: bytes | str, letter: DeadLetter, *, reason: str
    ) -> dict[bytes, bytes | str | int]:
        return self.entry(
            source,
            source_id=source_id,
            reason=reason,
            handler=letter.handler,
            exception_type=letter.exception_type,
            message=letter.message,
            traceback=letter.traceback,
            attempts=letter.attempts,
            deliveries=letter.event.attempt,
        )

    async def add(self, entries: list[dict[bytes, bytes | str | int]]) -> None:
        """Store dead letters (one round trip); raises if Redis did not store them all."""
        if not entries:
            return
        pipe = self._client.pipeline(transaction=False)
        for fields in entries:
            pipe.xadd(
                self.key,
                cast("dict[FieldT, EncodableT]", fields),
                maxlen=self._max_length,
                approximate=True,
            )
        await pipe.execute()

    async def delete(self, entry_id: bytes) -> None:
        await self._client.xdel(self.key, entry_id)

    async def purge(self) -> int:
        """Delete the stream; return how many letters it held (one transaction: a letter
        written meanwhile is either counted and deleted, or kept)."""
        pipe = self._client.pipeline(transaction=True)
        pipe.xlen(self.key)
        pipe.delete(self.key)
        count, _ = await pipe.execute()
        return int(count)

    # ------------------------------------------------------------------ reading
    async def count(self) -> int:
        return int(await self._client.xlen(self.key))

    async def newest(self, limit: int) -> list[StoredLetter]:
        """The newest ``limit`` dead letters, oldest first."""
        rows = cast("list[Row]", await self._client.xrevrange(self.key, "+", "-", count=limit))
        return [self._letter(entry_id, fields) for entry_id, fields in reversed(rows)]

    async def pages(self, page: int = 100) -> list[StoredLetter]:
        """Every dead letter, oldest first, read in pages."""
        letters: list[StoredLetter] = []
        start: bytes | str = "-"
        while True:
            rows = cast("list[Row]", await self._client.xrange(self.key, start, "+", count=page))
            letters.extend(self._letter(entry_id, fields) for entry_id, fields in rows)
            if len(rows) < page:
                return letters
            start = b"(" + rows[-1][0]

    def _letter(self, entry_id: bytes, fields: dict[bytes, bytes]) -> StoredLetter:
        deliveries = _int(fields.get(b"deliveries"))
        try:
            envelope = self._codec.decode(fields, attempt=max(deliveries, 1))
            replayable = True
        except (MalformedEntry, RecursionError, ValueError):
            # A letter is listed even when its body never decoded (that is why it is here);
            # what it holds came from outside, and is shown sanitised.
            name = loggable(fields.get(NAME, b"")) or "<malformed entry>"
            event_id = loggable(fields.get(ID, b"")) or as_text(fields.get(b"source", entry_id))
            envelope = EventEnvelope(name, (), {}, event_id=event_id)
            replayable = False
        try:
            failed_at = datetime.fromisoformat(as_text(fields.get(b"failed_at", b"")))
        except ValueError:
            failed_at = datetime.now(UTC)
        letter = DeadLetter(
            event=envelope,
            handler=as_text(fields.get(b"handler", b"")) or EVENT_LEVEL,
            exception_type=as_text(fields.get(b"exception_type", b"")),
            message=as_text(fields.get(b"message", b"")),
            traceback=as_text(fields.get(b"traceback", b"")),
            attempts=_int(fields.get(b"attempts")),
            failed_at=failed_at,
            reason=as_text(fields.get(b"reason", b"")) or "unknown",
        )
        return StoredLetter(entry_id, letter, replayable)


def _int(value: bytes | None) -> int:
    try:
        return int(value) if value is not None else 0
    except ValueError:
        return 0
