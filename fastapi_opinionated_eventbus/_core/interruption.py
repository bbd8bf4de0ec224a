"""How a background event interrupted at shutdown ended, noted by the code it was in.

When shutdown gives up and cancels what is still running, the cancellation alone cannot
tell a lost event from one whose work goes on or may already be done elsewhere: a sync
handler keeps running in its worker thread (abandoned, not lost), a publish whose request
already left may be stored by the broker (unconfirmed, not lost). The code that knows says
so with :func:`note_interruption` before the cancellation propagates; the background queue
reads it with :func:`take_interruption`. Anything not noted is lost.
"""

from __future__ import annotations

import asyncio
import weakref
from enum import StrEnum

__all__ = ["Interruption", "note_interruption", "take_interruption"]


class Interruption(StrEnum):
    ABANDONED = "abandoned"
    """The work goes on unobserved (a sync handler in its thread)."""
    UNCONFIRMED = "unconfirmed"
    """The event may have reached the broker; nothing confirmed it."""


_noted: weakref.WeakKeyDictionary[asyncio.Task[object], Interruption] = weakref.WeakKeyDictionary()


def note_interruption(kind: Interruption) -> None:
    """Called while the current task is being cancelled: how its event ends."""
    task = asyncio.current_task()
    if task is not None:
        _noted[task] = kind


def take_interruption(task: asyncio.Task[object]) -> Interruption | None:
    return _noted.pop(task, None)
