"""What both readers of the events stream share: the group consumer and the broadcast
reader hold the same connection, codec and dead-letter stream, bound how many entries
they handle at once, and track the tasks handling them."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from ..._codec import Codec
from ..._core.settings import BusSettings
from ..base import BackendPort
from ..unwind import finish_tasks
from .dead import DeadLetterStream
from .flow import Capacity

__all__ = ["StreamReader"]


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
        return await finish_tasks(self._tasks, grace)
