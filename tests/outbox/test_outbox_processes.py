"""The outbox across processes and failures: a crash between commit and dispatch, two
relays on one PostgreSQL table, a PostgreSQL restart, a second relay on one SQLite file."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from outbox_support import Base, Database, Engines, Make, Recorder, Worker, eventually, outbox_rows
from postgres_server import PostgresServer
from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from support import start_postgres, strip_ansi

from fastapi_opinionated_eventbus import EventBus

Workers = Callable[..., Worker]


async def test_emitter_killed_after_commit_a_fresh_process_dispatches(
    database: Database, workers: Workers
) -> None:
    emitter = workers(database, "emit-then-die", "emitter", outbox_poll_interval=0.1)
    event_id = await emitter.ready()
    assert await asyncio.to_thread(emitter.wait_dead) == -signal.SIGKILL, emitter.output()
    # Committed, and never dispatched: the process died before its relay ran.
    rows = await outbox_rows(database)
    assert [(row["event_id"], row["dispatched_at"]) for row in rows] == [(event_id, None)]
    assert emitter.handled() == []

    fresh = workers(database, "relay", "fresh", outbox_poll_interval=0.1)
    await fresh.ready()
    await eventually(lambda: fresh.handled() == [event_id], what="the fresh relay's dispatch")
    await eventually(lambda: _table_empty(database), what="the row deleted")
    await asyncio.sleep(0.3)
    assert fresh.handled() == [event_id]


async def _table_empty(db: Database) -> bool:
    return await outbox_rows(db) == []


def _write_jobs(bus: EventBus, db: Database, count: int) -> list[str]:
    """``count`` job events in one transaction of a sync Session; their ids."""
    engine = create_engine(db.sync_url)
    try:
        with Session(engine) as session, session.begin():
            outbox = bus.outbox(session)
            return [outbox.emit("job", n).id for n in range(count)]
    finally:
        engine.dispose()


async def test_two_processes_relay_one_postgresql_table_each_row_once(
    pg_database: Database, workers: Workers, make_bus: Make
) -> None:
    options = {"outbox_poll_interval": 0.05, "outbox_batch_size": 50, "handler_delay": 0.002}
    first = workers(pg_database, "relay", "a", **options)
    second = workers(pg_database, "relay", "b", **options)
    await first.ready()
    await second.ready()
    writer = make_bus(pg_database)  # not started: it only writes rows
    ids = await asyncio.to_thread(_write_jobs, writer, pg_database, 2_000)

    def handled() -> list[str]:
        return first.handled() + second.handled()

    await eventually(lambda: len(handled()) >= 2_000, timeout=60, what="2,000 dispatches")
    await eventually(lambda: _table_empty(pg_database), what="every row deleted")
    await asyncio.sleep(0.3)  # a duplicate would arrive now
    counts = Counter(handled())
    assert set(counts) == set(ids)
    assert [event_id for event_id, n in counts.items() if n != 1] == []
    # Both relays took part (rows were committed after both were polling).
    assert first.handled() and second.handled(), (len(first.handled()), len(second.handled()))


async def test_relay_killed_mid_batch_another_relay_takes_its_rows(
    pg_database: Database, workers: Workers, make_bus: Make
) -> None:
    stuck = workers(pg_database, "relay", "stuck", hang=True, outbox_poll_interval=0.1)
    await stuck.ready()
    writer = make_bus(pg_database)
    ids = await asyncio.to_thread(_write_jobs, writer, pg_database, 10)
    # The whole batch is claimed (locked) by a relay whose handlers never return.
    await eventually(lambda: sorted(stuck.handled(hanging=True)) == sorted(ids))
    other = workers(pg_database, "relay", "other", outbox_poll_interval=0.1)
    await other.ready()
    await asyncio.sleep(1.0)  # ten polls: SKIP LOCKED, the rows are not its to take
    assert other.handled() == []
    stuck.kill()  # mid-batch: its transaction and locks die with its connection
    await eventually(lambda: sorted(other.handled()) == sorted(ids), what="the takeover")
    await eventually(lambda: _table_empty(pg_database), what="every row deleted")


@pytest.fixture
def private_postgres() -> Iterator[tuple[PostgresServer, Database]]:
    """A PostgreSQL server of this test's own (to restart it)."""
    server = start_postgres()
    db = Database(
        "postgresql",
        server.url("asyncpg"),
        server.url("psycopg"),
        "outbox_restart",
        server.password,
    )
    engine = create_engine(db.sync_url)
    Base.metadata.create_all(engine)
    engine.dispose()
    try:
        yield server, db
    finally:
        server.cleanup()


async def test_relay_reconnects_after_a_postgresql_restart(
    private_postgres: tuple[PostgresServer, Database],
    make_bus: Make,
    caplog: pytest.LogCaptureFixture,
    engines: Engines,
) -> None:
    server, db = private_postgres
    bus = make_bus(db)
    seen = Recorder()
    bus.subscribe("job", seen)
    await bus.start()
    engine = engines(db.async_url, pool_pre_ping=True)
    async with AsyncSession(engine) as session, session.begin():
        before = await bus.outbox(session).emit("job", "before")
    await seen.wait_for(1)

    await asyncio.to_thread(server.stop)
    await eventually(lambda: "not answering" in caplog.text, what="the relay noticing the outage")
    await asyncio.to_thread(server.start)
    async with AsyncSession(engine) as session, session.begin():
        after = [await bus.outbox(session).emit("job", n) for n in range(20)]
    await seen.wait_for(21, timeout=30)
    assert seen.ids[0] == before.id
    assert sorted(seen.ids[1:]) == sorted(e.id for e in after)
    await eventually(lambda: "answers again" in caplog.text, what="the recovery log line")
    health = await bus.health()
    assert health["outbox"]["reachable"] is True and health["outbox"]["pending"] == 0
    text = strip_ansi(caplog.text)
    assert db.password not in text
    assert "eventbus:***@127.0.0.1" in text  # the URL appears, masked


async def test_second_relay_on_one_sqlite_file_stands_by_then_takes_over(
    sqlite_database: Database, workers: Workers, make_bus: Make
) -> None:
    first = workers(sqlite_database, "relay", "first", outbox_poll_interval=0.1)
    await first.ready()
    second = workers(sqlite_database, "relay", "second", outbox_poll_interval=0.1)
    await second.ready()
    writer = make_bus(sqlite_database)
    ids = await asyncio.to_thread(_write_jobs, writer, sqlite_database, 50)
    await eventually(lambda: len(first.handled()) == 50, what="the first relay's dispatches")
    await asyncio.sleep(0.5)
    assert sorted(first.handled()) == sorted(ids) and second.handled() == []
    assert "stands by" in strip_ansi(second.output())

    first.stop()
    more = await asyncio.to_thread(_write_jobs, writer, sqlite_database, 5)
    await eventually(lambda: sorted(second.handled()) == sorted(more), what="the takeover")
    assert "took over relaying" in strip_ansi(second.output())
