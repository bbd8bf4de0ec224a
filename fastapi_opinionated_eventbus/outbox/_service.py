"""The outbox as the bus sees it: bind sessions, run the relay, report its counts.

The bus creates one :class:`OutboxService` when ``outbox_url`` is set, handing it the few
things of its own the outbox needs (how to prepare an event, how to dispatch a stored
one); nothing here reaches into the bus.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from fastapi_opinionated.shared.logger import ns_logger
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_scoped_session
from sqlalchemy.orm import Session, scoped_session

from .._codec import Codec, known_types
from .._core.errors import BackendUnavailable, ConfigurationError
from .._secrets import mask_url
from ._database import async_url, describe_error, is_sqlite, make_engine
from ._relay import DB_TIMEOUT, Relay
from ._sqlite import RelayLock, sqlite_file
from ._store import ClaimedRow, OutboxStats, OutboxStore
from ._table import outbox_table
from ._writer import AsyncOutbox, Outbox, OutboxWriter, Prepare

if TYPE_CHECKING:
    from .._core.envelope import EventEnvelope
    from .._core.registry import Subscription
    from .._core.results import EmitResult
    from .._core.settings import BusSettings
    from ..metrics import MetricsCollector

__all__ = ["OutboxService", "inspect_outbox"]

logger = ns_logger("EventBus.outbox")

# Workers per relay where rows can be locked (PostgreSQL): batches dispatch concurrently,
# and one slow handler holds up one batch, not the relay.
_LOCKING_WORKERS = 3


class OutboxService:
    """The transactional outbox of one bus."""

    def __init__(
        self,
        settings: BusSettings,
        *,
        prepare: Prepare,
        dispatch: Callable[[EventEnvelope], Awaitable[EmitResult]],
        schema_for: Callable[[str], Any],
        subscriptions: Callable[[], Sequence[Subscription]],
        trace_carrier: Callable[[], dict[str, str]] | None,
        metrics: MetricsCollector | None,
    ) -> None:
        assert settings.outbox_url is not None
        self._settings = settings
        self._raw_url = settings.outbox_url
        self.url = async_url(self._raw_url)
        self.masked_url = mask_url(self._raw_url)
        self.table = outbox_table(MetaData(), settings.outbox_table)
        self._dispatch = dispatch
        self._subscriptions = subscriptions
        self._codec = Codec(schema_for, known_types, refresh=self._register_types)
        self._writer = OutboxWriter(
            self.table,
            prepare=prepare,
            encode=self._codec.encode,
            trace_carrier=trace_carrier,
            bell=self,
            relay_url=self.url,
        )
        self._sqlite = is_sqlite(self.url)
        self._workers = 1 if self._sqlite else _LOCKING_WORKERS
        # Made now so that a driver that is missing (or not async) fails at configuration;
        # it connects only when the relay starts, and stop() disposes of its connections.
        self._engine: AsyncEngine = make_engine(
            self.url, self._raw_url, pool_size=self._workers + 2
        )
        self._relay: Relay | None = None
        watch = getattr(metrics, "watch_outbox", None)
        if watch is not None:
            watch(self._pending_rows, self._oldest_age)

    # ------------------------------------------------------------------ writing
    def bind(self, session: Any) -> Outbox | AsyncOutbox:
        if isinstance(session, async_scoped_session | scoped_session):
            session = session()
        if isinstance(session, AsyncSession):
            return AsyncOutbox(self._writer, session)
        if isinstance(session, Session):
            return Outbox(self._writer, session)
        raise TypeError(
            "outbox() takes a SQLAlchemy Session or AsyncSession (the one whose transaction "
            f"the event belongs to), got {type(session).__module__}.{type(session).__qualname__}"
        )

    def ring(self) -> None:
        """A transaction that wrote outbox rows committed (called by :mod:`._wake`)."""
        relay = self._relay
        if relay is not None:
            relay.ring()

    # ------------------------------------------------------------------ relaying
    async def start(self) -> None:
        """Connect (retrying up to ``connect_timeout``), make sure the table exists, and
        start the relay."""
        if self._relay is not None:
            return
        s = self._settings
        sqlite, engine = self._sqlite, self._engine
        store = OutboxStore(
            self.table, batch_size=s.outbox_batch_size, keep=s.outbox_keep, locking=not sqlite
        )
        try:
            await self._prepare_database(engine, store)
        except BaseException:
            await engine.dispose()
            raise
        database = sqlite_file(self.url) if sqlite else None
        self._register_types()
        self._relay = Relay(
            engine,
            store,
            decode=self._decode,
            dispatch=self._dispatch,
            poll_interval=s.outbox_poll_interval,
            batch_size=s.outbox_batch_size,
            workers=self._workers,
            locking=not sqlite,
            lock=RelayLock(database) if database is not None else None,
            url=self._raw_url,
        )
        self._relay.start()
        logger.info(
            f"Outbox relay started: {self.masked_url}, table {self.table.name!r}, "
            f"poll every {s.outbox_poll_interval}s"
        )

    async def _prepare_database(self, engine: AsyncEngine, store: OutboxStore) -> None:
        s = self._settings
        deadline = time.monotonic() + s.connect_timeout
        delay, attempts = 0.1, 0
        while True:
            attempts += 1
            try:
                async with asyncio.timeout(DB_TIMEOUT), engine.begin() as conn:
                    if self._sqlite:
                        # Readers and the writer no longer block each other: the app's
                        # commits do not wait for the relay's reads. Persistent in the file.
                        await conn.exec_driver_sql("PRAGMA journal_mode=WAL")
                    exists = await conn.run_sync(store.ensure_table, create=s.outbox_create_table)
                break
            except Exception as exc:
                error = describe_error(exc, self._raw_url)
                if time.monotonic() >= deadline:
                    raise BackendUnavailable(
                        f"Cannot use the outbox database {self.masked_url}: gave up after "
                        f"connect_timeout={s.connect_timeout}s ({attempts} attempts); last "
                        f"error: {error}"
                    ) from None
                if attempts == 1:
                    logger.warning(
                        f"The outbox database {self.masked_url} is not usable yet ({error}); "
                        f"retrying for up to {s.connect_timeout}s"
                    )
                await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
                delay = min(delay * 2, 2.0)
        if not exists:
            raise ConfigurationError(
                f"the outbox table {self.table.name!r} does not exist in {self.masked_url}: "
                "create it (outbox_table(metadata) in your Alembic migrations) or set "
                "outbox_create_table=true"
            )

    async def stop(self, timeout: float) -> None:
        """Stop the relay within ``timeout`` seconds (batches still dispatching then are
        cancelled, and their rows dispatched again later), and close the engine."""
        relay, self._relay = self._relay, None
        if relay is not None:
            await relay.stop(timeout)
        await self._engine.dispose()

    def _decode(self, row: ClaimedRow) -> EventEnvelope:
        return self._codec.decode(
            {b"id": row.event_id.encode(), b"name": row.name.encode(), b"body": row.body.encode()}
        )

    def _register_types(self) -> None:
        """Models and enums named in handlers' annotations may be rebuilt from rows."""
        for sub in self._subscriptions():
            known_types.register_annotations(sub.handler)

    # ------------------------------------------------------------------ observing
    def _pending_rows(self) -> int:
        stats = self._relay.stats if self._relay is not None else None
        return stats.pending if stats is not None else 0

    def _oldest_age(self) -> float:
        stats = self._relay.stats if self._relay is not None else None
        return (stats.oldest_age_seconds or 0.0) if stats is not None else 0.0

    async def health(self) -> dict[str, Any]:
        """The outbox's part of ``bus.health()``: counted now, within a few seconds."""
        report: dict[str, Any] = {
            "url": self.masked_url,
            "table": self.table.name,
            "relaying": self._relay is not None,
            "reachable": False,
            "pending": None,
            "oldest_age_seconds": None,
            "dead": None,
        }
        relay = self._relay
        if relay is None:
            report["error"] = "not started"
            return report
        try:
            stats = await relay.read_stats()
        except Exception as exc:
            report["error"] = describe_error(exc, self._raw_url)
            return report
        report.update(stats.as_dict(), reachable=True, dispatched_here=relay.dispatched)
        return report


async def inspect_outbox(settings: BusSettings) -> dict[str, Any]:
    """The outbox table's counts, read with a short-lived engine (the CLI)."""
    assert settings.outbox_url is not None
    raw = settings.outbox_url
    url = async_url(raw)
    table = outbox_table(MetaData(), settings.outbox_table)
    store = OutboxStore(table, batch_size=1, keep=settings.outbox_keep, locking=False)
    engine = make_engine(url, raw, pool_size=1)
    try:
        async with asyncio.timeout(settings.connect_timeout), engine.connect() as conn:
            if not await conn.run_sync(store.ensure_table, create=False):
                raise ConfigurationError(
                    f"the outbox table {table.name!r} does not exist in {mask_url(raw)} "
                    "(the app creates it at startup unless outbox_create_table=false)"
                )
            stats: OutboxStats = await store.stats(conn)
            kept = await store.kept(conn)
    except ConfigurationError:
        raise
    except Exception as exc:
        raise BackendUnavailable(
            f"cannot read the outbox at {mask_url(raw)}: {describe_error(exc, raw)}"
        ) from None
    finally:
        await engine.dispose()
    return {
        "url": mask_url(raw),
        "table": table.name,
        **stats.as_dict(),
        "dispatched_kept": kept,
    }
