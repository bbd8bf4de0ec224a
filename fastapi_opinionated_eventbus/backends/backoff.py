"""Exponential backoff with jitter, and connecting with it: shared by the broker backends."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .._core.errors import BackendUnavailable

__all__ = ["Backoff", "keep_trying"]


@dataclass
class Backoff:
    """Exponential delays with jitter: ``initial``, doubling, capped at ``maximum``."""

    initial: float = 0.05
    maximum: float = 2.0
    _next: float = 0.0

    def reset(self) -> None:
        self._next = 0.0

    def delay(self) -> float:
        self._next = self.initial if not self._next else min(self._next * 2, self.maximum)
        return self._next * random.uniform(0.8, 1.2)

    async def sleep(self, limit: float | None = None) -> None:
        delay = self.delay()
        await asyncio.sleep(delay if limit is None else max(0.0, min(delay, limit)))


async def keep_trying[T](
    attempt: Callable[[], Awaitable[T]],
    *,
    broker: str,
    timeout: float,
    describe: Callable[[BaseException], str],
    refused: Callable[[BaseException], bool],
    hint: str,
    logger: Any,
) -> T:
    """``await attempt()`` until it succeeds, with exponential backoff, for up to
    ``timeout`` seconds (``connect_timeout``); an attempt may take the time that is left.

    :raises BackendUnavailable: at once when ``refused(exc)`` (wrong credentials: waiting
        will not help; the message ends with ``hint``), or once the time is up, naming
        ``broker`` (``"Kafka at host:9092"``), the attempts and the last error.
    """
    deadline = time.monotonic() + timeout
    backoff = Backoff(initial=0.1, maximum=2.0)
    attempts = 0
    while True:
        attempts += 1
        try:
            async with asyncio.timeout(max(deadline - time.monotonic(), 0.1)):
                return await attempt()
        except Exception as exc:
            error = describe(exc)
            if refused(exc):
                raise BackendUnavailable(
                    f"{broker} refused the event bus: {error} ({hint})"
                ) from None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BackendUnavailable(
                    f"Cannot reach {broker}: gave up after connect_timeout={timeout}s "
                    f"({attempts} attempts); last error: {error}"
                ) from None
            if attempts == 1:
                logger.warning(
                    f"{broker} is not reachable yet ({error}); retrying for up to {timeout}s"
                )
            await backoff.sleep(limit=remaining)
