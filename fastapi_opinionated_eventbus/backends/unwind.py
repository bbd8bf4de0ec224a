"""Ending the handlers a broker backend runs, within bounds: shared by every reader."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

__all__ = ["UNWIND_SECONDS", "finish_tasks"]

# How long cancelled handlers get to unwind at shutdown (or a rebalance) before they are
# abandoned.
UNWIND_SECONDS = 1.0


async def finish_tasks(tasks: Iterable[asyncio.Task[None]], grace: float) -> tuple[int, int]:
    """Give ``tasks`` ``grace`` seconds, then cancel the rest and give them a bounded moment
    (``UNWIND_SECONDS``) to unwind; return how many were cancelled and how many still ran
    after that (a handler that ignores cancellation: abandoned, never waited for)."""
    running = set(tasks)
    if not running:
        return 0, 0
    _, unfinished = await asyncio.wait(running, timeout=grace)
    for task in unfinished:
        task.cancel()
    still_running: set[asyncio.Task[None]] = set()
    if unfinished:
        _, still_running = await asyncio.wait(unfinished, timeout=UNWIND_SECONDS)
    return len(unfinished) - len(still_running), len(still_running)
