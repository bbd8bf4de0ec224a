"""The transactional outbox (``pip install 'fastapi-opinionated-eventbus[outbox]'``).

An event written with ``eventbus_api().outbox(session).emit(...)`` is one row in the
session's own transaction: dispatched through the bus's backend after the commit, never
if the transaction rolls back. A relay started with the bus dispatches committed rows
(woken by commits in this process, polling for the rest), at least once.

Imported only when the ``outbox_url`` option is set or ``outbox()`` is called: without
the extra, nothing here (SQLAlchemy included) is loaded.
"""

from __future__ import annotations

from ._store import OutboxStats
from ._table import DEFAULT_TABLE, outbox_table
from ._writer import AsyncOutbox, Outbox

__all__ = ["DEFAULT_TABLE", "AsyncOutbox", "Outbox", "OutboxStats", "outbox_table"]
