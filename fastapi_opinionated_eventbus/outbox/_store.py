"""The relay's SQL: claim rows, settle them, count them. One statement per step.

Claiming takes the oldest undispatched rows through the partial index. Where the
database can (PostgreSQL, and any dialect with ``FOR UPDATE SKIP LOCKED``), the rows are
locked by the claiming transaction, so relays in other processes skip them and each row
is dispatched by one relay; the lock lasts until that transaction ends (or its connection
dies, after which another relay takes the rows). SQLite has no row locks: one process
relays it (see :mod:`._sqlite`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Table, bindparam, delete, func, inspect, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["ClaimedRow", "OutboxStats", "OutboxStore", "Settlement"]


@dataclass(frozen=True, slots=True)
class ClaimedRow:
    seq: int
    event_id: str
    name: str
    body: str
    attempts: int


@dataclass(slots=True)
class Settlement:
    """What became of a claimed batch."""

    dispatched: list[int] = field(default_factory=list)
    """Rows the backend took: deleted, or marked ``dispatched_at`` with ``outbox_keep``."""
    failed: list[tuple[int, str]] = field(default_factory=list)
    """Rows to try again later, with the error (their ``attempts`` grow)."""
    dead: list[tuple[int, str]] = field(default_factory=list)
    """Rows moved aside (``dead_at`` set) with the reason: never claimed again."""

    def __len__(self) -> int:
        return len(self.dispatched) + len(self.failed) + len(self.dead)


@dataclass(frozen=True, slots=True)
class OutboxStats:
    pending: int
    """Rows committed and not yet dispatched (dead ones excluded)."""
    oldest_age_seconds: float | None
    """How long the oldest pending row has waited (None when there is none)."""
    dead: int
    """Rows moved aside: they do not decode, or kept failing."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "pending": self.pending,
            "oldest_age_seconds": self.oldest_age_seconds,
            "dead": self.dead,
        }


def _utc(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; every value this package writes is UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class OutboxStore:
    """The statements of one outbox table, built once."""

    def __init__(self, table: Table, *, batch_size: int, keep: bool, locking: bool) -> None:
        self.table = t = table
        pending = t.c.dispatched_at.is_(None) & t.c.dead_at.is_(None)
        claim = (
            select(t.c.seq, t.c.event_id, t.c.name, t.c.body, t.c.attempts)
            .where(pending)
            .order_by(t.c.seq)
            .limit(batch_size)
        )
        self._claim = claim.with_for_update(skip_locked=True) if locking else claim
        seqs: Any = bindparam("seqs", expanding=True)
        if keep:
            self._done: Any = (
                update(t)
                .where(t.c.seq.in_(seqs))
                .values(dispatched_at=bindparam("at"), attempts=t.c.attempts + 1, error=None)
            )
        else:
            self._done = delete(t).where(t.c.seq.in_(seqs))
        self._keep = keep
        one = t.c.seq == bindparam("row_seq")
        self._failed = (
            update(t).where(one).values(attempts=t.c.attempts + 1, error=bindparam("reason"))
        )
        self._dead = (
            update(t)
            .where(one)
            .values(dead_at=bindparam("at"), attempts=t.c.attempts + 1, error=bindparam("reason"))
        )
        self._pending_stats = select(func.count(), func.min(t.c.created_at)).where(pending)
        self._dead_count = select(func.count()).where(t.c.dead_at.is_not(None))
        self._kept_count = select(func.count()).where(t.c.dispatched_at.is_not(None))

    async def claim(self, conn: AsyncConnection) -> list[ClaimedRow]:
        result = await conn.execute(self._claim)
        return [ClaimedRow(*row) for row in result]

    async def settle(self, conn: AsyncConnection, settlement: Settlement) -> None:
        now = datetime.now(UTC)
        if settlement.dispatched:
            params: dict[str, Any] = {"seqs": settlement.dispatched}
            if self._keep:
                params["at"] = now
            await conn.execute(self._done, params)
        if settlement.failed:
            await conn.execute(
                self._failed, [{"row_seq": s, "reason": r} for s, r in settlement.failed]
            )
        if settlement.dead:
            await conn.execute(
                self._dead, [{"row_seq": s, "reason": r, "at": now} for s, r in settlement.dead]
            )

    async def stats(self, conn: AsyncConnection) -> OutboxStats:
        pending, oldest = (await conn.execute(self._pending_stats)).one()
        dead = (await conn.execute(self._dead_count)).scalar_one()
        age = None
        if oldest is not None:
            if isinstance(oldest, str):  # SQLite's CURRENT_TIMESTAMP default, by hand
                oldest = datetime.fromisoformat(oldest)
            age = max(0.0, (datetime.now(UTC) - _utc(oldest)).total_seconds())
        return OutboxStats(int(pending), age, int(dead))

    async def kept(self, conn: AsyncConnection) -> int:
        """Dispatched rows still in the table (``outbox_keep``); counts the whole table."""
        return int((await conn.execute(self._kept_count)).scalar_one())

    def ensure_table(self, conn: Connection, *, create: bool) -> bool:
        """Create the table and its indexes if missing (``create``); return whether it
        exists now. Run through ``AsyncConnection.run_sync``."""
        if inspect(conn).has_table(self.table.name):
            return True
        if not create:
            return False
        self.table.create(conn, checkfirst=True)
        return True
