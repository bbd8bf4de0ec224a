"""Which offsets of a partition may be committed: never one past unfinished work.

Records of one partition arrive in offset order and finish in any order (records of
different keys run concurrently). A :class:`PartitionTrack` keeps the offsets received
and not yet committable, oldest first; the commit point is the first offset not finished,
so an offset is committed only once that record and every earlier one of its partition
have finished all their handlers.
"""

from __future__ import annotations

import asyncio
from collections import deque

from aiokafka import TopicPartition

__all__ = ["PartitionTrack"]


class PartitionTrack:
    """One assigned partition: offsets in flight, the commit point, running tasks."""

    __slots__ = ("_done", "_order", "commit_to", "committed", "revoked", "tasks", "tp")

    def __init__(self, tp: TopicPartition) -> None:
        self.tp = tp
        self._order: deque[int] = deque()  # received, not yet below the commit point
        self._done: set[int] = set()  # finished, waiting for earlier ones
        self.commit_to: int | None = None
        """The offset to commit next: every record before it has finished."""
        self.committed: int | None = None
        """The offset last committed by this process (None: nothing yet)."""
        self.revoked = False
        """The partition is being taken away: start no more of its records."""
        self.tasks: set[asyncio.Task[None]] = set()
        """The tasks of its records: waiting for their key's turn, or running."""

    def __len__(self) -> int:
        """Records received and not yet committable (running, waiting or finished early)."""
        return len(self._order)

    @property
    def first_unfinished(self) -> int | None:
        return self._order[0] if self._order else None

    def received(self, offset: int) -> bool:
        """Track ``offset``; False when it is not after the last one received (the
        partition was reset, e.g. the broker lost its data): the track no longer fits."""
        if self._order and offset <= self._order[-1]:
            return False
        if self.commit_to is not None and offset < self.commit_to:
            return False
        self._order.append(offset)
        return True

    def finished(self, offset: int) -> bool:
        """Mark ``offset`` finished; True when the commit point moved."""
        order = self._order
        if offset not in self._done and order and order[0] <= offset:
            self._done.add(offset)
        moved = False
        while order and order[0] in self._done:
            first = order.popleft()
            self._done.discard(first)
            self.commit_to = first + 1
            moved = True
        return moved

    @property
    def dirty(self) -> bool:
        """Whether the commit point is ahead of what was committed."""
        return self.commit_to is not None and self.commit_to != self.committed
