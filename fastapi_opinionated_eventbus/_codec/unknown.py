"""The type names received that this process does not know: remembered, warned about.

The names come from messages, so anyone who can write to the stream chooses them: the
memo is bounded (least recently seen names are forgotten first) and the warnings are
rate-limited, so a flood of distinct names costs neither unbounded memory nor one log
line each.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from fastapi_opinionated.shared.logger import ns_logger

from .text import shown

__all__ = ["UnknownTypes", "WarningBudget"]

logger = ns_logger("EventBus.codec")


class WarningBudget:
    """At most ``burst`` warnings per ``period`` seconds; the rest are counted, and the next
    warning allowed says how many were held back."""

    def __init__(
        self, burst: int = 5, period: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._burst = burst
        self._period = period
        self._clock = clock
        self._window_start = -period
        self._sent = 0
        self.held_back = 0

    def take(self) -> int | None:
        """None: hold this warning back; else log it, with the count held back before it."""
        now = self._clock()
        if now - self._window_start >= self._period:
            self._window_start, self._sent = now, 0
        if self._sent >= self._burst:
            self.held_back += 1
            return None
        self._sent += 1
        held, self.held_back = self.held_back, 0
        return held


class UnknownTypes:
    """A bounded memo of unknown type names, each warned about (within budget) when new."""

    def __init__(self, capacity: int = 2048, budget: WarningBudget | None = None) -> None:
        self._names: OrderedDict[str, None] = OrderedDict()
        self._capacity = capacity
        self._budget = budget or WarningBudget()

    def __len__(self) -> int:
        return len(self._names)

    def seen(self, name: str) -> bool:
        """Whether ``name`` is remembered as unknown (and now the most recently seen)."""
        if name not in self._names:
            return False
        self._names.move_to_end(name)
        return True

    def add(self, name: str, *, warn: bool = True) -> None:
        self._names[name] = None
        if len(self._names) > self._capacity:
            self._names.popitem(last=False)
        if warn:
            self._warn(name)

    def _warn(self, name: str) -> None:
        held = self._budget.take()
        if held is None:
            return
        note = f" ({held} more such warnings were held back before this one)" if held else ""
        logger.warning(
            f"Received a value of type {shown(name)}, which is not registered in this "
            "process: it is passed on as plain data. Register it with "
            "fastapi_opinionated_eventbus.register_type() (or name it in a "
            f"handler's annotations).{note}"
        )
