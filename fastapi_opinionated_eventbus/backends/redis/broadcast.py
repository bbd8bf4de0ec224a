"""Broadcast subscriptions: run in every process of the app that is alive at the time.

Design: no second stream. Each process that has at least one broadcast subscription tails
the events stream itself with a plain XREAD (no consumer group), starting at the stream's
end when it starts. Publishers need not know who subscribes to what, and an event is
written once whoever runs its handlers.

Guarantee: **at most once per process, while that process is running**. An event emitted
while a process is down (or before its bus started) never reaches that process's
broadcast handlers, and nothing is acknowledged or redelivered: a handler that fails is
logged and dead-lettered like any other, a process killed mid-handler loses that run.
Through a lost connection the reader resumes after the last entry it saw, so a short
outage loses nothing as long as Redis kept its data. Use broadcast handlers for
per-process state (caches, local subscriptions), not for work that must happen.

Cost: such a process reads every event of the app once more; entries whose name has no
broadcast handler here are skipped before their body is decoded.
"""

from __future__ import annotations

import asyncio

from fastapi_opinionated.shared.logger import ns_logger

from ..._codec import NAME, MalformedEntry
from ..._core.dead_letters import DeadLetter
from ..._core.settings import BusSettings
from ..._secrets import mask_url
from .connection import BLOCK_SECONDS, Entry, Reconnecting, describe_error, entries_of
from .reader import StreamReader

__all__ = ["BroadcastReader"]

logger = ns_logger("EventBus.redis")


class BroadcastReader(StreamReader):
    def _setup(self, settings: BusSettings) -> None:
        self._last: bytes | str | None = None
        self._loop: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Fix the starting point now: events emitted once start() returned are seen."""
        self._last = await self._end_of_stream()
        self._loop = asyncio.get_running_loop().create_task(
            self._read_loop(), name="eventbus-redis-broadcast"
        )

    async def pause(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)
            self._loop = None

    async def stop(self, grace: float) -> tuple[int, int]:
        await self.pause()
        return await self._finish_running(grace)

    async def _end_of_stream(self) -> bytes | str:
        last = await self._client.xrevrange(self._stream, "+", "-", count=1)
        return last[0][0] or "0-0" if last else "0-0"

    def _has_handlers(self) -> bool:
        return self._port.has_handlers(broadcast=True)

    def _wanted(self, name: bytes | None) -> bool:
        if name is None:
            return False
        try:
            return self._port.handles(name.decode(), broadcast=True)
        except ValueError:  # not UTF-8, or not a valid event name: nobody handles it
            return False

    async def _read_loop(self) -> None:
        connection = Reconnecting(self._url, f"Broadcast reader of {self.consumer}")
        while True:
            try:
                if not self._has_handlers():
                    # Nobody to run: skip ahead, so a later subscription starts from now.
                    self._last = None
                    await asyncio.sleep(0.5)
                    continue
                if self._last is None:
                    self._last = await self._end_of_stream()
                await self._read_some()
                connection.worked()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await connection.failed(exc)

    async def _read_some(self) -> None:
        reserved = await self._capacity.reserve(self._batch)
        started = 0
        try:
            assert self._last is not None
            reply = await self._client.xread(
                {self._stream: self._last}, count=reserved, block=int(BLOCK_SECONDS * 1000)
            )
            for entry in entries_of(reply):
                self._last = entry[0]
                if self._wanted(entry[1].get(NAME)):
                    started += 1
                    self._start(entry)
        finally:
            self._capacity.release(reserved - started)

    def _start(self, entry: Entry) -> None:
        task = asyncio.Task(self._handle(entry), loop=asyncio.get_running_loop(), eager_start=True)
        if not task.done():
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _handle(self, entry: Entry) -> None:
        entry_id, fields = entry
        try:
            envelope = self._codec.decode(fields)
            result = await self._port.deliver(envelope, broadcast=True)
            if result.failures:
                await self._dead.add(
                    [
                        self._dead.for_failure(
                            fields,
                            entry_id,
                            DeadLetter.from_exception(envelope, f.handler, f.exception, f.attempts),
                            reason="broadcast handler failed",
                        )
                        for f in result.failures
                    ]
                )
        except MalformedEntry as exc:
            # The group consumer dead-letters malformed entries; here it is only skipped.
            logger.warning(f"Broadcast reader skipped entry {entry_id!r} of {self._stream}: {exc}")
        except Exception as exc:
            logger.error(
                f"Broadcast handling of entry {entry_id!r} from {mask_url(self._url)} failed: "
                f"{describe_error(exc, self._url, with_traceback=True)}"
            )
        finally:
            self._capacity.release()
