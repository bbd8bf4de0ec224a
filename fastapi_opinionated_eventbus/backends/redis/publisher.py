"""XADD with automatic pipelining: concurrent emits share round trips to Redis.

Every ``publish`` waits for its own entry id (Redis has stored the event). Emits that
arrive while a round trip is under way wait in a buffer and leave together in the next
pipeline, so a burst of ``emit_nowait`` costs a few round trips instead of one each, and
uses one connection instead of one per emit.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, cast

from fastapi_opinionated.shared.logger import ns_logger
from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT

from ..._core.errors import BackendUnavailable
from ..._core.interruption import Interruption, note_interruption
from ..._secrets import mask_url
from ..unwind import UNWIND_SECONDS
from .connection import Backoff, describe_error, is_transient

__all__ = ["Publisher"]

logger = ns_logger("EventBus.redis")

Fields = dict[bytes, bytes]


class Publisher:
    def __init__(
        self, client: Redis, url: str, stream: str, *, max_length: int, timeout: float
    ) -> None:
        self._client = client
        self._url = url
        self._stream = stream
        self._max_length = max_length
        self._timeout = timeout
        self._buffer: list[tuple[Fields, asyncio.Future[bytes]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._direct = False  # a publisher is sending its own entry
        # Every unresolved publish, oldest first, with its deadline: one timer serves
        # them all (an asyncio.timeout per emit would cost more than the rest of it).
        self._waiting: deque[tuple[float, asyncio.Future[bytes], str]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        # Publishes whose XADD left at least once: if they fail, they may be stored anyway.
        self._sent: set[asyncio.Future[bytes]] = set()

    async def publish(self, fields: Fields, name: str) -> bytes:
        """Store one entry; its stream id once Redis acknowledged it.

        :raises BackendUnavailable: not acknowledged within the publish timeout. The entry
            is then dropped if it had not been sent yet; one already sent may have been
            stored (a retry by the caller could store it twice).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        if self._flusher is None and not self._direct:
            # Nothing else in flight: send it from this very task, which saves a trip
            # through the scheduler. Publishers arriving meanwhile start the flusher.
            self._direct = True
            try:
                async with asyncio.timeout(self._timeout):
                    entry_id = await self._client.xadd(
                        self._stream, _redis(fields), maxlen=self._max_length, approximate=True
                    )
                    return cast("bytes", entry_id)  # decode_responses is off
            except TimeoutError:
                raise self._timed_out(name, may_be_stored=True) from None
            except asyncio.CancelledError:
                note_interruption(Interruption.UNCONFIRMED)  # the XADD had left
                raise
            except Exception as exc:
                if not is_transient(exc):
                    raise self._error(exc) from None
                # A lost connection: queue it, and the flusher retries until the deadline.
            finally:
                self._direct = False
        future = self._enqueue([(fields, name)], deadline)[0]
        try:
            return await future
        except asyncio.CancelledError:
            if future in self._sent:
                note_interruption(Interruption.UNCONFIRMED)
            raise
        finally:
            self._sent.discard(future)

    async def publish_many(self, batch: list[tuple[Fields, str]]) -> list[bytes | BaseException]:
        """Queue several entries behind each other: they leave in one pipeline, in order
        (never one of them on the direct path, which could overtake the others). Returns
        each entry's stream id, or the exception that failed it."""
        loop = asyncio.get_running_loop()
        futures = self._enqueue(batch, loop.time() + self._timeout)
        try:
            return await asyncio.gather(*futures, return_exceptions=True)
        except asyncio.CancelledError:
            if any(future in self._sent for future in futures):
                note_interruption(Interruption.UNCONFIRMED)
            raise
        finally:
            self._sent.difference_update(futures)

    def _enqueue(
        self, batch: list[tuple[Fields, str]], deadline: float
    ) -> list[asyncio.Future[bytes]]:
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[bytes]] = []
        for fields, name in batch:
            future: asyncio.Future[bytes] = loop.create_future()
            self._buffer.append((fields, future))
            self._wait_until(deadline, future, name)
            futures.append(future)
        if self._flusher is None:
            # Eager: the first XADD leaves now, without a trip through the scheduler.
            self._flusher = asyncio.Task(self._flush(), loop=loop, eager_start=True)
        return futures

    def _wait_until(self, deadline: float, future: asyncio.Future[bytes], name: str) -> None:
        """Keep the waiters in deadline order: a direct publish that failed late carries an
        earlier deadline than those queued meanwhile, and must not expire behind them."""
        waiting = self._waiting
        index = len(waiting)
        while index and waiting[index - 1][0] > deadline:
            index -= 1
        waiting.insert(index, (deadline, future, name))
        if index == 0:  # a new earliest deadline: the timer must fire for it
            if self._timer is not None:
                self._timer.cancel()
            self._timer = asyncio.get_running_loop().call_at(deadline, self._expire)

    def _expire(self) -> None:
        """Fail the publishes whose deadline passed; the flusher drops unsent ones."""
        self._timer = None
        waiting = self._waiting
        loop = asyncio.get_running_loop()
        now = loop.time()
        while waiting and (waiting[0][1].done() or waiting[0][0] <= now):
            _, future, name = waiting.popleft()
            if not future.done():
                future.set_exception(self._timed_out(name, may_be_stored=future in self._sent))
        if waiting:
            self._timer = loop.call_at(waiting[0][0], self._expire)

    async def _flush(self) -> None:
        backoff = Backoff(initial=0.02, maximum=1.0)
        failures = 0
        try:
            while self._buffer:
                batch = [(f, fut) for f, fut in self._buffer if not fut.done()]
                self._buffer = []
                if not batch:
                    continue
                self._sent.update(future for _, future in batch)
                try:
                    results = await self._send(batch)
                except Exception as exc:
                    if not is_transient(exc):
                        _fail(batch, self._error(exc))
                        continue
                    failures += 1
                    if failures == 1:
                        logger.warning(
                            f"Publishing to Redis at {mask_url(self._url)} failed "
                            f"({describe_error(exc, self._url)}); retrying until each "
                            f"event's publish_timeout={self._timeout}s"
                        )
                    # Back to the front of the line: their publishers still wait.
                    self._buffer[:0] = batch
                    await backoff.sleep()
                    continue
                if failures:
                    logger.info(f"Publishing to Redis at {mask_url(self._url)} works again")
                    failures = 0
                    backoff.reset()
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, Exception):
                        future.set_exception(self._error(result))
                    else:
                        future.set_result(result)
                waiting = self._waiting
                while waiting and waiting[0][1].done():
                    waiting.popleft()
                # One turn of the loop: the publishers just woken (each likely to emit
                # again at once) join the next batch instead of each starting one.
                await asyncio.sleep(0)
        finally:
            self._flusher = None

    async def _send(self, batch: list[tuple[Fields, asyncio.Future[bytes]]]) -> list[Any]:
        if len(batch) == 1:
            entry_id = await self._client.xadd(
                self._stream, _redis(batch[0][0]), maxlen=self._max_length, approximate=True
            )
            return [entry_id]
        pipe = self._client.pipeline(transaction=False)
        for fields, _ in batch:
            pipe.xadd(self._stream, _redis(fields), maxlen=self._max_length, approximate=True)
        # Per-command errors (e.g. OOM) come back as results, failing only their event.
        return await pipe.execute(raise_on_error=False)

    def _timed_out(self, name: str, *, may_be_stored: bool) -> BackendUnavailable:
        sent = " (it was sent: it may have been stored)" if may_be_stored else ""
        return BackendUnavailable(
            f"Redis at {mask_url(self._url)} did not confirm event {name!r} within "
            f"publish_timeout={self._timeout}s{sent}",
            may_be_stored=may_be_stored,
        )

    def _error(self, exc: BaseException) -> BackendUnavailable:
        return BackendUnavailable(
            f"Redis at {mask_url(self._url)} refused the event: {describe_error(exc, self._url)}"
        )

    async def close(self, timeout: float) -> int:
        """Let what is in flight finish (up to ``timeout``), then fail what is left;
        return how many of those had been sent (they may be stored: unconfirmed)."""
        flusher = self._flusher
        if flusher is not None:
            await asyncio.wait([flusher], timeout=timeout)
            if not flusher.done():
                flusher.cancel()
                await asyncio.wait([flusher], timeout=UNWIND_SECONDS)
        where = f"the Redis backend ({mask_url(self._url)}) stopped"
        unconfirmed = 0
        for future in [f for _, f in self._buffer] + [f for _, f, _ in self._waiting]:
            if not future.done():
                sent = future in self._sent
                unconfirmed += sent
                state = " after sending the event: it may have been stored" if sent else ""
                future.set_exception(BackendUnavailable(where + state, may_be_stored=sent))
        self._buffer = []
        self._waiting.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return unconfirmed


def _fail(batch: list[tuple[Fields, asyncio.Future[bytes]]], error: Exception) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(error)


def _redis(fields: Fields) -> dict[FieldT, EncodableT]:
    # redis-py's dict parameter is invariant in its value type.
    return cast("dict[FieldT, EncodableT]", fields)
