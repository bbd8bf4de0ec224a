"""The relay: dispatches committed outbox rows through the bus's backend.

A few workers each repeat one *cycle*: claim a batch of the oldest undispatched rows,
decode them, hand them to the backend concurrently, then delete (or mark) the rows the
backend took, all in one transaction. A row is marked only after the backend returned
for it -- locally once its handlers ran, with a broker once the broker stored it -- so a
crash anywhere in between leaves it undispatched, and it is dispatched again: at least
once. With row locks (PostgreSQL), the claim holds the batch's rows until the commit, so
relays of other processes skip them, and a relay that dies releases them with its
connection. A slow handler holds one worker's batch only: the other workers go on.

Idle workers sleep until a commit in this process rings the bell (:mod:`._wake`) or the
poll interval passes (rows committed by other processes, or left by a crash). Rows that
do not decode are moved aside at once; rows whose dispatch keeps failing for another
reason than an unreachable broker, after a few attempts. Database trouble (a restart, a
lost connection) is logged once and retried with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from fastapi_opinionated.shared.logger import ns_logger
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .._core.errors import EventBusClosed
from .._text import loggable
from ._database import describe_error
from ._store import ClaimedRow, OutboxStats, OutboxStore, Settlement

if TYPE_CHECKING:
    from .._core.envelope import EventEnvelope
    from .._core.results import EmitResult
    from ._sqlite import RelayLock

__all__ = ["Relay"]

logger = ns_logger("EventBus.outbox")

# A single statement (or connecting) taking longer than this is treated as the database
# being unreachable: the cycle is abandoned and retried.
DB_TIMEOUT = 10.0
# Attempts of a row whose dispatch fails for another reason than an unreachable broker
# before it is moved aside.
MAX_ATTEMPTS = 5
_BACKOFF_FIRST, _BACKOFF_MAX = 0.1, 5.0
# Failures that are the broker's, the network's or the bus's (closed), not the row's:
# retried without limit.
_TRANSIENT = (ConnectionError, TimeoutError, OSError, EventBusClosed)


class Relay:
    """Workers dispatching one outbox table; see the module docstring."""

    def __init__(
        self,
        engine: AsyncEngine,
        store: OutboxStore,
        *,
        decode: Callable[[ClaimedRow], EventEnvelope],
        dispatch: Callable[[EventEnvelope], Awaitable[EmitResult]],
        poll_interval: float,
        batch_size: int,
        workers: int,
        locking: bool,
        lock: RelayLock | None,
        url: str,
    ) -> None:
        self._engine = engine
        self._store = store
        self._decode = decode
        self._dispatch = dispatch
        self._poll_interval = poll_interval
        self._batch_size = batch_size
        self._worker_count = workers
        self._locking = locking
        self._lock = lock
        self._url = url
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._nappers: deque[asyncio.Future[None]] = deque()
        self._rung = False
        self._stopping = False
        self._stopped = asyncio.Event()
        self._trouble: str | None = None  # the database error of an ongoing outage
        self._standby_logged = False
        self.stats: OutboxStats | None = None
        """The latest counts (refreshed every poll interval); None before the first."""
        self.dispatched = 0
        """Rows dispatched by this relay since it started."""

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._stopping = False
        self._stopped = asyncio.Event()
        self._tasks = [
            asyncio.create_task(self._work(), name=f"eventbus-outbox-relay-{index}")
            for index in range(self._worker_count)
        ]
        self._tasks.append(asyncio.create_task(self._watch(), name="eventbus-outbox-stats"))

    async def stop(self, timeout: float) -> int:
        """Let the batches in flight finish for up to ``timeout`` seconds, then cancel them
        (their rows stay undispatched, for the next relay). Returns how many were
        cancelled."""
        self._stopping = True
        self._stopped.set()
        while self._nappers:
            napper = self._nappers.popleft()
            if not napper.done():
                napper.set_result(None)
        tasks, self._tasks = self._tasks, []
        cancelled = 0
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            cancelled = len(pending)
            if pending:
                await asyncio.wait(pending, timeout=1.0)
                logger.warning(
                    f"Outbox relay: {cancelled} batch(es) still dispatching after {timeout}s "
                    "were cancelled at shutdown; their rows stay undispatched and are "
                    "dispatched again by the next relay (at least once)"
                )
        if self._lock is not None:
            self._lock.release()
        return cancelled

    def ring(self) -> None:
        """A transaction that wrote outbox rows committed: wake a worker. Thread-safe."""
        loop = self._loop
        if loop is None or self._stopping:
            return
        if threading.get_ident() == self._loop_thread:
            self._wake_one()
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to wake
            loop.call_soon_threadsafe(self._wake_one)

    def _wake_one(self) -> None:
        while self._nappers:
            napper = self._nappers.popleft()
            if not napper.done():
                napper.set_result(None)
                return
        # Every worker is busy: the first to finish claims again instead of sleeping.
        self._rung = True

    async def _nap(self, seconds: float) -> None:
        napper: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._nappers.append(napper)
        try:
            async with asyncio.timeout(seconds):
                await napper
        except TimeoutError:
            pass
        finally:
            with contextlib.suppress(ValueError):
                self._nappers.remove(napper)

    # ------------------------------------------------------------------ workers
    async def _work(self) -> None:
        backoff = _BACKOFF_FIRST
        while not self._stopping:
            if not self._may_relay():
                await self._nap(self._poll_interval)
                continue
            self._rung = False
            try:
                settled = await self._cycle()
            except Exception as exc:  # the database: restarting, unreachable, timed out
                self._database_trouble(exc)
                await self._nap(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
                continue
            self._database_back()
            if settled.failed:  # the broker did not take some events: wait a little
                await self._nap(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
                continue
            backoff = _BACKOFF_FIRST
            if len(settled) >= self._batch_size:
                self._wake_one()  # more rows are likely waiting: let another worker help
                continue
            if not self._rung:
                await self._nap(self._poll_interval)

    def _may_relay(self) -> bool:
        """With SQLite, only the process holding the relay lock relays."""
        lock = self._lock
        if lock is None or lock.held:
            return True
        if lock.try_acquire():
            if self._standby_logged:
                logger.info(f"Outbox relay: took over relaying ({lock.path} was released)")
            return True
        if not self._standby_logged:
            self._standby_logged = True
            logger.warning(
                f"Outbox relay: another process relays this SQLite database (it holds "
                f"{lock.path}); SQLite supports one relaying process, so this one stands "
                "by and takes over if that process stops. Its commits are dispatched by "
                "that process within outbox_poll_interval. Use PostgreSQL to relay from "
                "several processes."
            )
        return False

    async def _cycle(self) -> Settlement:
        conn = self._engine.connect()
        async with asyncio.timeout(DB_TIMEOUT):
            await conn.start()
        try:
            if self._locking:
                return await self._locked_cycle(conn)
            return await self._unlocked_cycle(conn)
        finally:
            await _release(conn)

    async def _locked_cycle(self, conn: AsyncConnection) -> Settlement:
        # Committed under the timeout, not at the exit of an ``async with conn.begin()``
        # (a commit the database never answers would wait there for ever). On a failure
        # the transaction stays open and _release() ends it, within the timeout too.
        async with asyncio.timeout(DB_TIMEOUT):
            transaction = await conn.begin()
            rows = await self._store.claim(conn)
        if not rows:
            async with asyncio.timeout(DB_TIMEOUT):
                await transaction.commit()
            return Settlement()
        settlement = await self._dispatch_rows(rows)
        async with asyncio.timeout(DB_TIMEOUT):
            await self._store.settle(conn, settlement)
            await transaction.commit()
        # Committed: only now are the rows gone for the other relays.
        self.dispatched += len(settlement.dispatched)
        return settlement

    async def _unlocked_cycle(self, conn: AsyncConnection) -> Settlement:
        # No read transaction stays open while handlers run: on SQLite it would block the
        # app's commits (or, in WAL mode, make the relay's own write fail).
        async with asyncio.timeout(DB_TIMEOUT):
            rows = await self._store.claim(conn)
            await conn.rollback()
        if not rows:
            return Settlement()
        settlement = await self._dispatch_rows(rows)
        async with asyncio.timeout(DB_TIMEOUT), conn.begin():
            await self._store.settle(conn, settlement)
        self.dispatched += len(settlement.dispatched)
        return settlement

    async def _dispatch_rows(self, rows: list[ClaimedRow]) -> Settlement:
        settlement = Settlement()
        ready: list[tuple[ClaimedRow, EventEnvelope]] = []
        for row in rows:
            try:
                ready.append((row, self._decode(row)))
            except Exception as exc:  # MalformedEntry, or anything odd in a row
                reason = f"does not decode: {exc}"
                settlement.dead.append((row.seq, reason))
                logger.error(
                    f"Outbox relay: row {row.seq} (event {loggable(row.name)!r}, id "
                    f"{loggable(row.event_id)}) moved aside: {loggable(reason)}"
                )
        if len(ready) == 1:  # the common case of a single commit: no Task
            row, envelope = ready[0]
            try:
                await self._dispatch(envelope)
                outcomes: list[object] = [None]
            except Exception as exc:
                outcomes = [exc]
        else:
            outcomes = await asyncio.gather(
                *(self._dispatch(envelope) for _, envelope in ready), return_exceptions=True
            )
        failed: list[str] = []
        for (row, envelope), outcome in zip(ready, outcomes, strict=True):
            if not isinstance(outcome, BaseException):
                settlement.dispatched.append(row.seq)
                continue
            reason = describe_error(outcome, self._url)
            if not isinstance(outcome, _TRANSIENT) and row.attempts + 1 >= MAX_ATTEMPTS:
                settlement.dead.append((row.seq, reason))
                logger.error(
                    f"Outbox relay: event {envelope.describe()} (row {row.seq}) moved aside "
                    f"after {row.attempts + 1} failed dispatches: {reason}"
                )
            else:
                settlement.failed.append((row.seq, reason))
                failed.append(reason)
        if failed:
            logger.warning(
                f"Outbox relay: {len(failed)} event(s) not taken by the backend, retried "
                f"later: {failed[0]}"
            )
        return settlement

    # ------------------------------------------------------------------ health
    def _database_trouble(self, exc: BaseException) -> None:
        error = describe_error(exc, self._url)
        if self._trouble is None:
            logger.warning(
                f"Outbox relay: the outbox database is not answering ({error}); retrying "
                "with backoff. Committed rows wait in the table."
            )
        self._trouble = error

    def _database_back(self) -> None:
        if self._trouble is not None:
            self._trouble = None
            logger.info("Outbox relay: the outbox database answers again; relaying")

    @property
    def trouble(self) -> str | None:
        """The database error of an ongoing outage (None when the database answers)."""
        return self._trouble

    async def _watch(self) -> None:
        """Refresh :attr:`stats` (the metrics gauges read it) every poll interval."""
        interval = max(self._poll_interval, 0.5)
        while not self._stopping:
            started = time.monotonic()
            with contextlib.suppress(Exception):  # the workers report database trouble
                self.stats = await self.read_stats()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, interval - (time.monotonic() - started))):
                    await self._stopped.wait()

    async def read_stats(self) -> OutboxStats:
        async with asyncio.timeout(DB_TIMEOUT), self._engine.connect() as conn:
            return await self._store.stats(conn)


async def _release(conn: AsyncConnection) -> None:
    """Close ``conn`` (rolling back what it left open) within DB_TIMEOUT. A connection
    that does not answer is dropped: its socket is closed without a word, and the server
    ends its session, rolling back and freeing the rows it had claimed."""
    try:
        async with asyncio.timeout(DB_TIMEOUT):
            await conn.close()
    except Exception:  # timed out or broken: it is not coming back either way
        with contextlib.suppress(Exception):
            await conn.invalidate()
