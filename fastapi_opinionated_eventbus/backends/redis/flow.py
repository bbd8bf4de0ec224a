"""Flow control of a consumer: slots for handlers in flight, and acknowledgements in bulk."""

from __future__ import annotations

import asyncio

from fastapi_opinionated.shared.logger import ns_logger
from redis.asyncio import Redis

from ..._secrets import mask_url
from .connection import Backoff, describe_error, is_transient

__all__ = ["Acker", "Capacity"]

logger = ns_logger("EventBus.redis")


class Capacity:
    """At most ``size`` entries in flight. Slots are reserved *before* a read, so one
    read never fetches more entries than there is room to handle."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._used = 0
        self._room = asyncio.Event()
        self._room.set()

    async def reserve(self, wanted: int) -> int:
        """Wait for a free slot, then take up to ``wanted`` slots; returns how many."""
        while self._used >= self.size:
            self._room.clear()
            await self._room.wait()
        return self.try_reserve(wanted)

    def try_reserve(self, wanted: int) -> int:
        taken = max(0, min(wanted, self.size - self._used))
        self._used += taken
        return taken

    def release(self, count: int = 1) -> None:
        if count > 0:
            self._used -= count
            self._room.set()


class Acker:
    """XACKs entries in bulk: one command for every entry that finished meanwhile.

    An entry is added only once its handlers finished (and its dead letters, if any, were
    stored). Acks that fail for want of a connection are kept and retried, so nothing
    handled is redelivered because of a brief outage, unless Redis itself lost them.
    """

    _CHUNK = 1000

    def __init__(self, client: Redis, url: str, stream: str, group: str) -> None:
        self._client = client
        self._url = url
        self._stream = stream
        self._group = group
        # An insertion-ordered set: oldest first.
        self._pending: dict[bytes, None] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def __contains__(self, entry_id: bytes) -> bool:
        return entry_id in self._pending

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, entry_id: bytes) -> None:
        self._pending[entry_id] = None
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="eventbus-acker")

    async def _run(self) -> None:
        backoff = Backoff()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                try:
                    await self._ack_some()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if not is_transient(exc):
                        # E.g. NOGROUP: Redis lost the group, and with it these entries'
                        # pending state; there is nothing left to acknowledge.
                        dropped = list(self._pending)[: self._CHUNK]
                        for entry_id in dropped:
                            self._pending.pop(entry_id, None)
                        logger.error(
                            f"XACK of {len(dropped)} entries on {self._stream} at "
                            f"{mask_url(self._url)} failed and was given up: "
                            f"{describe_error(exc, self._url, with_traceback=True)}"
                        )
                    await backoff.sleep()
                else:
                    backoff.reset()

    async def _ack_some(self) -> None:
        batch = list(self._pending)[: self._CHUNK]
        await self._client.xack(self._stream, self._group, *batch)
        for entry_id in batch:
            self._pending.pop(entry_id, None)

    async def stop(self, timeout: float) -> int:
        """Send what is pending (up to ``timeout``); returns how many were left un-acked."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        try:
            async with asyncio.timeout(timeout):
                while self._pending:
                    await self._ack_some()
        except Exception as exc:
            logger.warning(
                f"{len(self._pending)} handled event(s) could not be acknowledged at "
                f"shutdown ({describe_error(exc, self._url)}): they will be delivered again"
            )
        return len(self._pending)
