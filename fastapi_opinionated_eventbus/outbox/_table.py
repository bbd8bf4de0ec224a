"""The outbox table: one row per event written in a user's transaction.

Designed for the relay's claim query: rows still to dispatch are found through a partial
index on ``seq`` (``WHERE dispatched_at IS NULL AND dead_at IS NULL``), so the claim reads
them in commit order without scanning dispatched (kept) or dead rows.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    text,
)

__all__ = ["DEFAULT_TABLE", "outbox_table"]

DEFAULT_TABLE = "eventbus_outbox"


def outbox_table(metadata: MetaData, name: str = DEFAULT_TABLE) -> Table:
    """The outbox table's definition on ``metadata`` (for Alembic's autogenerate).

    ``name`` must match the ``outbox_table`` option. Calling it again on the same
    metadata returns the table already defined there.
    """
    existing = metadata.tables.get(name)
    if existing is not None:
        return existing
    table = Table(
        name,
        metadata,
        # SQLite autoincrements only an INTEGER PRIMARY KEY (the rowid).
        Column(
            "seq",
            BigInteger().with_variant(Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        Column("event_id", String(64), nullable=False, unique=True),
        Column("name", String(255), nullable=False),
        # The codec's JSON: args, kwargs, time, correlation id, chain, trace context.
        Column("body", Text, nullable=False),
        Column("correlation_id", String(128), nullable=True),
        Column(
            "created_at",
            DateTime(timezone=True),
            nullable=False,
            server_default=func.current_timestamp(),
        ),
        # Set when the backend took the event (kept rows only: otherwise deleted then).
        Column("dispatched_at", DateTime(timezone=True), nullable=True),
        # Set when the row was moved aside: it does not decode, or kept failing.
        Column("dead_at", DateTime(timezone=True), nullable=True),
        Column("attempts", Integer, nullable=False, server_default=text("0")),
        Column("error", Text, nullable=True),
    )
    undispatched = (table.c.dispatched_at.is_(None)) & (table.c.dead_at.is_(None))
    Index(
        f"ix_{name}_undispatched",
        table.c.seq,
        postgresql_where=undispatched,
        sqlite_where=undispatched,
    )
    dead = table.c.dead_at.is_not(None)
    Index(f"ix_{name}_dead", table.c.seq, postgresql_where=dead, sqlite_where=dead)
    return table
