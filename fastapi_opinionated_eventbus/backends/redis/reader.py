"""What both readers of the events stream share: the group consumer and the broadcast
reader hold the same connection, codec and dead-letter stream, bound how many entries
they handle at once, and track the tasks handling them."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from ..._codec import Codec
from ..._core.settings import BusSettings
from ..base import BackendPort
from .dead import DeadLetterStream
from .flow import Capacity

__all__ = ["UNWIND_SECONDS", "StreamReader"]

# How long cancelled handlers get to unwind at shutdown before they are abandoned.
UNWIND_SECONDS = 1.0


class StreamReader:
    def __init__(
        self,
        port: BackendPort,
        client: Redis,
        codec: Codec,
        dead: DeadLetterStream,
        settings: BusSettings,
        *,
        url: str,
        stream: str,
        consumer: str,
    ) -> None:
        self._port = port
        self._client = client
        self._codec = codec
        self._dead = dead
        self._url = url
        self._stream = stream
        self.consumer = consumer
        self._batch = settings.redis_batch_size
        self._capacity = Capacity(settings.redis_concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._setup(settings)

    def _setup(self, settings: BusSettings) -> None:
        """What a reader adds to the shared state."""

    def running(self) -> set[asyncio.Task[None]]:
        """The tasks of the entries being handled now."""
        return set(self._tasks)

    async def _finish_running(self, grace: float) -> tuple[int, int]:
        """Give the running handlers ``grace`` seconds, then cancel the rest and give them
        a bounded moment to unwind; return how many were cancelled and how many still ran
        after that (a handler that ignores cancellation: abandoned, never waited for)."""
        if not self._tasks:
            return 0, 0
        _, unfinished = await asyncio.wait(set(self._tasks), timeout=grace)
        for task in unfinished:
            task.cancel()
        still_running: set[asyncio.Task[None]] = set()
        if unfinished:
            _, still_running = await asyncio.wait(unfinished, timeout=UNWIND_SECONDS)
        return len(unfinished) - len(still_running), len(still_running)
