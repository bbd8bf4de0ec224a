"""The app's consumer group: each event is handled by one process of the app.

Delivery is at least once. A consumer first re-reads its own pending entries (left by
a previous run with the same consumer name, or unread after a lost connection), then new
ones. An entry is acknowledged only after all of its handlers finished -- successfully,
or failed after their retries, in which case dead letters were stored first. Entries
idle longer than ``visibility_timeout`` (their consumer died or hangs) are claimed by
another consumer's reclaimer; a live consumer keeps refreshing the entries it is still
handling, so a slow handler is not run twice while its process is alive. An entry
delivered more than ``max_deliveries`` times, or not an event at all, goes to the
dead-letter stream unhandled.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import cast

from fastapi_opinionated.shared.logger import ns_logger
from redis.exceptions import ResponseError
from redis.typing import StreamIdT

from ..._codec import MalformedEntry
from ..._core.dead_letters import DeadLetter
from ..._core.settings import BusSettings
from ..._secrets import mask_url
from ..._text import as_text, loggable
from .connection import (
    BLOCK_SECONDS,
    Backoff,
    Entry,
    Reconnecting,
    describe_error,
    entries_of,
    is_transient,
)
from .flow import Acker
from .reader import StreamReader

__all__ = ["GroupConsumer"]

logger = ns_logger("EventBus.redis")


class GroupConsumer(StreamReader):
    def _setup(self, settings: BusSettings) -> None:
        self._group = settings.redis_group
        self._max_deliveries = settings.max_deliveries
        self._visibility_ms = int(settings.visibility_timeout * 1000)
        # Refresh an in-flight entry once it is a third of the visibility timeout old;
        # checked four times per timeout, so a live consumer's entries stay well below it.
        self._refresh_after = settings.visibility_timeout / 3
        self._tick = min(max(settings.visibility_timeout / 4, 0.05), 5.0)
        self._acks = Acker(self._client, self._url, self._stream, self._group)
        self._inflight: dict[bytes, float] = {}  # entry id -> last claimed (monotonic)
        self._reader: asyncio.Task[None] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._resync = True  # re-read our own pending entries before new ones
        self._stopping = False

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    @property
    def unacknowledged(self) -> int:
        """Entries received and not acknowledged yet: in flight, or handled and queued."""
        return len(self._inflight) + len(self._acks)

    async def ensure_group(self) -> None:
        """Create the group (and the stream) if missing; from the stream's start, so
        events published before any consumer ever ran are handled too."""
        try:
            await self._client.xgroup_create(self._stream, self._group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._acks.start()
        self._reader = loop.create_task(self._read_loop(), name="eventbus-redis-reader")
        self._refresher = loop.create_task(self._refresh_loop(), name="eventbus-redis-refresh")

    async def pause(self) -> None:
        """Take no new entries; those in flight go on (and stay claimed)."""
        self._stopping = True
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None

    async def stop(self, grace: float) -> tuple[int, int]:
        """Stop reading; give in-flight handlers ``grace`` seconds, then cancel them
        (their entries stay pending and are delivered again); flush acks. Returns how
        many were cancelled, and how many still ran after that (abandoned)."""
        await self.pause()
        cancelled, abandoned = await self._finish_running(grace)
        if cancelled:
            logger.warning(
                f"Shutdown: {cancelled} event(s) still being handled after {grace}s were "
                "cancelled; they stay pending in Redis and will be delivered again"
            )
        if abandoned:
            logger.error(
                f"Shutdown: {abandoned} event(s) kept running after being cancelled (a handler "
                "that ignores cancellation?) and were abandoned; they stay pending in Redis "
                "and will be delivered again"
            )
        if self._refresher is not None:
            self._refresher.cancel()
            await asyncio.gather(self._refresher, return_exceptions=True)
            self._refresher = None
        await self._acks.stop(grace)
        return cancelled, abandoned

    # ------------------------------------------------------------------ reading
    def _has_handlers(self) -> bool:
        # A process without handlers must not take entries from the group: acking them
        # unhandled would lose them for the processes that have handlers.
        return self._port.has_handlers(broadcast=False)

    async def _read_loop(self) -> None:
        """One loop reads, and reclaims every tick: a blocking read holds the slots it
        reserved, so a second reader would find no room while this one waits."""
        connection = Reconnecting(self._url, f"Consumer {self.consumer}")
        next_reclaim = 0.0
        while True:
            try:
                if not self._has_handlers():
                    await asyncio.sleep(0.5)
                    continue
                if self._resync:
                    await self._read_own_pending()
                    self._resync = False
                if time.monotonic() >= next_reclaim:
                    await self._reclaim()
                    next_reclaim = time.monotonic() + self._tick
                await self._read_new(min(BLOCK_SECONDS, next_reclaim - time.monotonic()))
                connection.worked()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self._recover(exc, connection)

    async def _recover(self, exc: Exception, connection: Reconnecting) -> None:
        self._resync = True
        if "NOGROUP" in str(exc):
            # Redis restarted without its data, or someone deleted the stream.
            logger.warning(
                f"Consumer group {self._group!r} is missing on {self._stream} at "
                f"{mask_url(self._url)}: creating it again"
            )
            try:
                await self.ensure_group()
                return
            except Exception as again:
                exc = again
        if is_transient(exc):
            await connection.failed(exc)
            return
        logger.error(
            f"Consumer {self.consumer} failed to read {self._stream} at "
            f"{mask_url(self._url)}: {describe_error(exc, self._url, with_traceback=True)}"
        )
        await connection.backoff.sleep()

    async def _read_new(self, block: float) -> None:
        reserved = await self._capacity.reserve(self._batch)
        started = 0
        try:
            reply = await self._client.xreadgroup(
                self._group,
                self.consumer,
                {self._stream: ">"},
                count=reserved,
                block=max(1, int(block * 1000)),  # BLOCK 0 would wait forever
            )
            for entry_id, fields in entries_of(reply):
                started += 1
                self._start(entry_id, fields, 1)
        finally:
            self._capacity.release(reserved - started)

    async def _read_own_pending(self) -> None:
        """Entries delivered to this consumer name and never acknowledged."""
        last: bytes | str = "0-0"
        while not self._stopping:
            reserved = await self._capacity.reserve(self._batch)
            started = 0
            try:
                reply = await self._client.xreadgroup(
                    self._group, self.consumer, {self._stream: last}, count=reserved
                )
                entries = entries_of(reply)
                if not entries:
                    return
                last = entries[-1][0]
                counts = await self._delivery_counts(entries)
                for entry_id, fields in entries:
                    started += 1
                    self._start(entry_id, fields, counts.get(entry_id, 1))
            finally:
                self._capacity.release(reserved - started)

    async def _delivery_counts(self, entries: list[Entry]) -> dict[bytes, int]:
        # One XPENDING per entry, pipelined: a range query could be crowded out by other
        # pending entries in the same range, and a missing count would read as 1 and let
        # a poison entry escape max_deliveries.
        pipe = self._client.pipeline(transaction=False)
        for entry_id, _ in entries:
            pipe.xpending_range(self._stream, self._group, min=entry_id, max=entry_id, count=1)
        counts: dict[bytes, int] = {}
        for rows in await pipe.execute():
            for row in rows:
                counts[_key(row["message_id"])] = int(row["times_delivered"])
        return counts

    # ------------------------------------------------------------------ reclaiming
    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self._tick)
            try:
                await self._refresh_inflight()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not ("NOGROUP" in str(exc) or is_transient(exc)):
                    # The reader reports lost connections and recreates the group.
                    logger.error(
                        f"Refreshing in-flight entries of {self._stream} failed: "
                        f"{describe_error(exc, self._url, with_traceback=True)}"
                    )

    async def _refresh_inflight(self) -> None:
        """Reset the idle time of entries this process is still handling (XCLAIM JUSTID
        keeps their delivery count), so no other consumer claims them meanwhile."""
        now = time.monotonic()
        due = [i for i, touched in self._inflight.items() if now - touched >= self._refresh_after]
        if not due:
            return
        await self._client.xclaim(
            self._stream,
            self._group,
            self.consumer,
            # Not an entry another consumer claimed recently: that one is theirs now.
            int(self._refresh_after * 900),
            cast("list[StreamIdT]", due),
            justid=True,
        )
        for entry_id in due:
            if entry_id in self._inflight:
                self._inflight[entry_id] = now

    async def _reclaim(self) -> None:
        """XAUTOCLAIM entries idle longer than the visibility timeout, as room allows."""
        cursor: bytes | str = "0-0"
        while not self._stopping:
            reserved = self._capacity.try_reserve(self._batch)
            if not reserved:
                return
            started = 0
            try:
                reply = await self._client.xautoclaim(
                    self._stream,
                    self._group,
                    self.consumer,
                    min_idle_time=self._visibility_ms,
                    start_id=cursor,
                    count=reserved,
                )
                # [cursor, entries] on Redis 6.2, [cursor, entries, deleted ids] on 7.x.
                cursor = reply[0]
                claimed: list[Entry] = list(reply[1])
                if len(reply) > 2 and reply[2]:
                    logger.warning(
                        f"{len(reply[2])} pending entries of {self._stream} were trimmed "
                        "before anyone handled them (max_stream_length too small?): "
                        + ", ".join(as_text(i) for i in reply[2][:10])
                    )
                if claimed:
                    logger.info(
                        f"Consumer {self.consumer} claimed {len(claimed)} entries idle "
                        f"longer than visibility_timeout={self._visibility_ms / 1000}s"
                    )
                    counts = await self._delivery_counts(claimed)
                    for entry_id, fields in claimed:
                        started += 1
                        self._start(entry_id, fields, counts.get(entry_id, 1))
            finally:
                self._capacity.release(reserved - started)
            if cursor in (b"0-0", "0-0"):
                return

    # ------------------------------------------------------------------ handling
    def _start(self, entry_id: bytes, fields: dict[bytes, bytes], deliveries: int) -> None:
        """Handle one entry in its own task; it holds one reserved slot until done."""
        if entry_id in self._inflight or entry_id in self._acks:
            # Already being handled, or handled and not yet acknowledged, here.
            self._capacity.release()
            return
        self._inflight[entry_id] = time.monotonic()
        # Eager: a handler that does not suspend finishes before the next entry starts,
        # without a trip through the scheduler.
        task = asyncio.Task(
            self._handle(entry_id, fields, deliveries),
            loop=asyncio.get_running_loop(),
            eager_start=True,
        )
        if not task.done():
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _handle(self, entry_id: bytes, fields: dict[bytes, bytes], deliveries: int) -> None:
        try:
            if deliveries > self._max_deliveries:
                await self._give_up(entry_id, fields, deliveries)
            elif not fields:
                await self._reject(entry_id, fields, deliveries, "the entry was deleted")
            else:
                try:
                    envelope = self._codec.decode(fields, attempt=deliveries)
                except MalformedEntry as exc:
                    await self._reject(entry_id, fields, deliveries, str(exc))
                else:
                    result = await self._port.deliver(envelope, broadcast=False)
                    if result.failures:
                        letters = [
                            self._dead.for_failure(
                                fields,
                                entry_id,
                                DeadLetter.from_exception(
                                    envelope, f.handler, f.exception, f.attempts
                                ),
                                reason="handler failed",
                            )
                            for f in result.failures
                        ]
                        await self._store(lambda: self._dead.add(letters))
            self._acks.add(entry_id)
        except asyncio.CancelledError:
            raise  # not acknowledged: the entry is delivered again
        except Exception as exc:
            logger.error(
                f"Entry {as_text(entry_id)} of {self._stream} was left unacknowledged and will "
                f"be delivered again: {describe_error(exc, self._url, with_traceback=True)}"
            )
        finally:
            self._inflight.pop(entry_id, None)
            self._capacity.release()

    async def _give_up(self, entry_id: bytes, fields: dict[bytes, bytes], deliveries: int) -> None:
        reason = (
            f"delivered {deliveries} times, more than max_deliveries={self._max_deliveries}: "
            "its handling keeps crashing or stalling the consumers"
        )
        letter = self._dead.entry(fields, source_id=entry_id, reason=reason, deliveries=deliveries)
        await self._store(lambda: self._dead.add([letter]))
        name, event_id = loggable(fields.get(b"name", b"?")), loggable(fields.get(b"id", b"?"))
        logger.error(
            f"Event {name!r} (id={event_id}, entry {as_text(entry_id)}) moved to the "
            f"dead-letter stream {self._dead.key}: {reason}"
        )

    async def _reject(
        self, entry_id: bytes, fields: dict[bytes, bytes], deliveries: int, problem: str
    ) -> None:
        reason = f"malformed entry: {problem}"
        letter = self._dead.entry(
            fields, source_id=entry_id, reason=reason, deliveries=deliveries, malformed=True
        )
        await self._store(lambda: self._dead.add([letter]))
        logger.error(
            f"Entry {as_text(entry_id)} of {self._stream} is not an event this bus can read "
            f"and was moved to the dead-letter stream {self._dead.key}: {problem}"
        )

    async def _store(self, write: Callable[[], Awaitable[None]]) -> None:
        """Dead letters are written before the ack: retry through a lost connection
        (while not stopping), rather than run the handlers again later."""
        backoff = Backoff(initial=0.05, maximum=2.0)
        while True:
            try:
                await write()
                return
            except Exception as exc:
                if self._stopping or not is_transient(exc):
                    raise
                await backoff.sleep()


def _key(entry_id: object) -> bytes:
    return entry_id if isinstance(entry_id, bytes) else str(entry_id).encode()
