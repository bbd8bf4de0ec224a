"""An outbox event is dispatched if and only if its transaction commits: on SQLite and on
PostgreSQL, through an AsyncSession and a sync Session."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from outbox_support import (
    Database,
    Engines,
    Make,
    Recorder,
    User,
    eventually,
    outbox_rows,
    users_table,
)
from pydantic import ValidationError
from sqlalchemy import MetaData, create_engine, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from fastapi_opinionated_eventbus import (
    ConfigurationError,
    EventBus,
    EventBusClosed,
    EventEnvelope,
    EventSerializationError,
    TypedEvent,
)
from fastapi_opinionated_eventbus.outbox import AsyncOutbox, Outbox, outbox_table
from fastapi_opinionated_eventbus.outbox._relay import MAX_ATTEMPTS


class Boom(Exception):
    pass


async def test_commit_dispatches_once_with_the_emitters_id(
    database: Database, make_bus: Make, engines: Engines
) -> None:
    bus = make_bus(database)
    seen = Recorder()
    bus.subscribe("user.created", seen)
    await bus.start()
    engine = engines(database.async_url)
    async with AsyncSession(engine) as session, session.begin():
        session.add(User(name="Jane"))
        outbox = bus.outbox(session)
        assert isinstance(outbox, AsyncOutbox)
        envelope = await outbox.emit("user.created", {"name": "Jane"})
    await seen.wait_for(1)
    await asyncio.sleep(0.3)  # three poll intervals: nothing more arrives
    assert seen.calls == [(envelope.id, ({"name": "Jane"},))]
    assert await outbox_rows(database) == []  # dispatched rows are deleted
    async with AsyncSession(engine) as session:
        count = await session.scalar(select(func.count()).where(User.name == "Jane"))
        assert count is not None
        assert count >= 1


async def test_rollback_dispatches_nothing_ever(
    database: Database, make_bus: Make, engines: Engines
) -> None:
    bus = make_bus(database)
    seen = Recorder()
    bus.subscribe("user.created", seen)
    await bus.start()
    engine = engines(database.async_url)
    async with AsyncSession(engine) as session:
        async with session.begin():
            await bus.outbox(session).emit("user.created", {"name": "Ghost"})
            await session.rollback()
        # A later commit in the same session must not carry the rolled-back event.
        async with session.begin():
            kept = await bus.outbox(session).emit("user.created", {"name": "Kept"})
    await seen.wait_for(1)
    await asyncio.sleep(0.5)  # five poll intervals
    assert seen.ids == [kept.id]
    assert await outbox_rows(database) == []


async def test_exception_in_the_transaction_block_dispatches_nothing(
    database: Database, make_bus: Make, engines: Engines
) -> None:
    bus = make_bus(database)
    seen = Recorder()
    bus.subscribe("user.created", seen)
    await bus.start()
    engine = engines(database.async_url)
    with pytest.raises(Boom):
        async with AsyncSession(engine) as session, session.begin():
            session.add(User(name="Nobody"))
            await bus.outbox(session).emit("user.created", {"name": "Nobody"})
            raise Boom
    await asyncio.sleep(0.5)
    assert seen.calls == []
    assert await outbox_rows(database) == []
    async with AsyncSession(engine) as session:
        assert await session.scalar(select(func.count()).where(User.name == "Nobody")) == 0


async def test_sync_session_commit_and_rollback(database: Database, make_bus: Make) -> None:
    bus = make_bus(database)
    seen = Recorder()
    bus.subscribe("user.created", seen)
    await bus.start()
    engine = create_engine(database.sync_url)
    result: dict[str, str] = {}

    def route() -> None:  # a sync route: runs in a worker thread
        with Session(engine) as session, session.begin():
            session.add(User(name="Sync"))
            outbox = bus.outbox(session)
            assert isinstance(outbox, Outbox)
            result["id"] = outbox.emit("user.created", {"name": "Sync"}).id
        try:
            with Session(engine) as session, session.begin():
                bus.outbox(session).emit("user.created", {"name": "Rolled back"})
                raise Boom
        except Boom:
            pass

    thread = threading.Thread(target=route)
    thread.start()
    await asyncio.to_thread(thread.join, 10)
    await seen.wait_for(1)
    await asyncio.sleep(0.3)
    assert seen.calls == [(result["id"], ({"name": "Sync"},))]
    engine.dispose()


async def test_commit_wakes_the_relay_without_waiting_for_a_poll(
    database: Database, make_bus: Make, engines: Engines
) -> None:
    bus = make_bus(database, outbox_poll_interval=60.0)
    seen = Recorder()
    bus.subscribe("user.created", seen)
    await bus.start()
    await asyncio.sleep(0.2)  # the relay's first look at the table is over: it sleeps now
    engine = engines(database.async_url)
    async with AsyncSession(engine) as session, session.begin():
        envelope = await bus.outbox(session).emit("user.created", {"name": "Quick"})
    # Well under the 60 s poll interval: the commit itself woke the relay.
    await seen.wait_for(1, timeout=10)
    assert seen.ids == [envelope.id]


async def test_rows_committed_elsewhere_are_found_by_polling(
    database: Database, make_bus: Make, engines: Engines
) -> None:
    bus = make_bus(database, outbox_poll_interval=0.2)
    seen = Recorder()
    bus.subscribe("job", seen)
    await bus.start()
    await asyncio.sleep(0.1)
    # Another bus writes (another process would too): no commit of this process rings.
    writer = make_bus(database)
    engine = engines(database.async_url)
    async with AsyncSession(engine) as session, session.begin():
        envelope = await writer.outbox(session).emit("job", 1)
    await seen.wait_for(1, timeout=10)
    assert seen.ids == [envelope.id]


async def test_outbox_keep_marks_dispatched_rows(
    database: Database, make_bus: Make, engines: Engines
) -> None:
    bus = make_bus(database, outbox_keep=True)
    seen = Recorder()
    bus.subscribe("order.placed", seen)
    await bus.start()
    engine = engines(database.async_url)
    before = datetime.now(UTC)
    async with AsyncSession(engine) as session, session.begin():
        first = await bus.outbox(session).emit("order.placed", 1)
        second = await bus.outbox(session).emit("order.placed", 2)
    await seen.wait_for(2)
    rows = await eventually(
        lambda: _all_dispatched(database, 2), what="both rows marked dispatched"
    )
    assert [row["event_id"] for row in rows] == [first.id, second.id]
    for row in rows:
        dispatched = row["dispatched_at"]
        if dispatched.tzinfo is None:  # SQLite keeps no zone; the relay writes UTC
            dispatched = dispatched.replace(tzinfo=UTC)
        assert dispatched >= before
        assert row["attempts"] == 1 and row["error"] is None and row["dead_at"] is None
    assert row["name"] == "order.placed"
    await asyncio.sleep(0.3)
    assert sorted(seen.ids) == sorted([first.id, second.id])  # never dispatched again


async def _all_dispatched(db: Database, count: int) -> list[dict[str, object]] | None:
    rows = await outbox_rows(db)
    if len(rows) == count and all(row["dispatched_at"] is not None for row in rows):
        return rows
    return None


async def test_garbage_row_is_moved_aside_and_rows_behind_it_dispatched(
    database: Database, make_bus: Make, engines: Engines
) -> None:
    bus = make_bus(database)
    seen = Recorder()
    bus.subscribe("job", seen)
    writer = make_bus(database)  # not started: its rows wait for the relay below
    engine = engines(database.async_url)
    table = outbox_table(MetaData(), database.table)
    await _create_table(database)
    async with AsyncSession(engine) as session, session.begin():
        # By hand, before the good rows: not JSON, and JSON that is not an event.
        await session.execute(
            insert(table),
            [
                {"event_id": "garbage-1", "name": "job", "body": "not json \x1b[31m"},
                {"event_id": "garbage-2", "name": "job", "body": '{"v": 1}'},
            ],
        )
        good = [await writer.outbox(session).emit("job", n) for n in range(3)]
    await bus.start()
    await seen.wait_for(3)
    assert sorted(seen.ids) == sorted(e.id for e in good)
    rows = await eventually(lambda: _dead_rows(database, 2), what="the garbage rows moved aside")
    assert [row["event_id"] for row in rows] == ["garbage-1", "garbage-2"]
    for row in rows:
        assert row["dead_at"] is not None and row["dispatched_at"] is None
        assert "does not decode" in row["error"]
    health = await bus.health()
    assert health["outbox"]["dead"] == 2 and health["outbox"]["pending"] == 0
    await asyncio.sleep(0.3)
    assert len(seen.calls) == 3  # moved aside, never retried


async def _dead_rows(db: Database, count: int) -> list[dict[str, object]] | None:
    rows = [row for row in await outbox_rows(db) if row["dead_at"] is not None]
    return rows if len(rows) == count else None


async def _create_table(db: Database) -> None:
    engine = create_async_engine(db.async_url)
    async with engine.begin() as conn:
        await conn.run_sync(outbox_table(MetaData(), db.table).create, checkfirst=True)
    await engine.dispose()


async def test_unencodable_argument_raises_in_the_caller_and_writes_nothing(
    database: Database, make_bus: Make, engines: Engines
) -> None:
    bus = make_bus(database)
    await bus.start()
    engine = engines(database.async_url)
    async with AsyncSession(engine) as session, session.begin():
        with pytest.raises(EventSerializationError, match=r"kwargs\['lock'\]"):
            await bus.outbox(session).emit("job", 1, lock=threading.Lock())
        with pytest.raises(TypeError, match="strict"):
            await bus.outbox(session).emit("job", 1, strict=True)
    assert await outbox_rows(database) == []


class UserCreated(TypedEvent):
    __event_name__ = "typed.user.created"
    id: int
    name: str


async def test_typed_events_are_validated_at_emit_and_arrive_as_models(
    database: Database, make_bus: Make, engines: Engines
) -> None:
    bus = make_bus(database)
    seen = Recorder()
    bus.subscribe(UserCreated, seen)
    await bus.start()
    engine = engines(database.async_url)
    async with AsyncSession(engine) as session, session.begin():
        with pytest.raises(ValidationError):
            await bus.outbox(session).emit("typed.user.created", {"id": "not a number"})
        first = await bus.outbox(session).emit(UserCreated(id=1, name="Jane"))
        second = await bus.outbox(session).emit("typed.user.created", {"id": 2, "name": "Li"})
    await seen.wait_for(2)
    by_id = dict(seen.calls)
    assert by_id[first.id] == (UserCreated(id=1, name="Jane"),)
    assert by_id[second.id] == (UserCreated(id=2, name="Li"),)
    assert len(seen.calls) == 2


async def test_handler_failures_become_dead_letters_and_the_row_is_done(
    database: Database, make_bus: Make, engines: Engines
) -> None:
    bus = make_bus(database)

    async def broken(n: int) -> None:
        raise RuntimeError(f"broken {n}")

    bus.subscribe("job", broken)
    await bus.start()
    engine = engines(database.async_url)
    async with AsyncSession(engine) as session, session.begin():
        envelope = await bus.outbox(session).emit("job", 7)
    letters = await eventually(bus.dead_letters, what="a dead letter")
    assert [(letter.event.id, letter.message) for letter in letters] == [(envelope.id, "broken 7")]
    await eventually(lambda: _no_rows(database), what="the row deleted")


async def _no_rows(db: Database) -> bool:
    return await outbox_rows(db) == []


async def test_savepoint_rollback_keeps_the_outer_transactions_events(
    database: Database, make_bus: Make, engines: Engines
) -> None:
    bus = make_bus(database, outbox_poll_interval=60.0)
    seen = Recorder()
    bus.subscribe("job", seen)
    await bus.start()
    await asyncio.sleep(0.2)
    engine = engines(database.async_url)
    async with AsyncSession(engine) as session, session.begin():
        outer = await bus.outbox(session).emit("job", "outer")
        nested = await session.begin_nested()
        await bus.outbox(session).emit("job", "inner")
        await nested.rollback()
    # Dispatched after the commit (woken by it, well before the 60 s poll), inner never.
    await seen.wait_for(1, timeout=10)
    await asyncio.sleep(0.3)
    assert seen.calls == [(outer.id, ("outer",))]


async def test_disabled_bus_writes_nothing(
    database: Database, make_bus: Make, engines: Engines
) -> None:
    bus = make_bus(database, disabled=True)
    await bus.start()
    engine = engines(database.async_url)
    await _create_table(database)
    async with AsyncSession(engine) as session, session.begin():
        envelope = await bus.outbox(session).emit("job", 1)
    assert envelope.name == "job"
    assert await outbox_rows(database) == []


def test_outbox_off_says_how_to_enable_it() -> None:
    bus = EventBus()
    with pytest.raises(ConfigurationError) as caught:
        bus.outbox(object())  # type: ignore[call-overload]  # deliberately not a session
    message = str(caught.value)
    assert "outbox_url" in message and "EVENTBUS_OUTBOX_URL" in message
    assert "[outbox]" in message


async def test_outbox_takes_sessions_only(
    database: Database, make_bus: Make, engines: Engines
) -> None:
    bus = make_bus(database)
    engine = engines(database.async_url)
    async with engine.connect() as conn:
        with pytest.raises(TypeError, match="Session or AsyncSession"):
            bus.outbox(conn)  # type: ignore[call-overload]  # deliberately a connection


async def test_missing_table_without_create_is_a_clear_startup_error(
    database: Database, make_bus: Make
) -> None:
    bus = make_bus(database, outbox_create_table=False)
    with pytest.raises(ConfigurationError, match=rf"{database.table}.*does not exist"):
        await bus.start()


async def test_alembic_style_table_from_the_apps_metadata(
    database: Database, make_bus: Make, engines: Engines
) -> None:
    # What a migration made from outbox_table(metadata) creates; the relay only uses it.
    metadata = MetaData()
    table = outbox_table(metadata, database.table)
    assert outbox_table(metadata, database.table) is table
    assert {index.name for index in table.indexes} == {
        f"ix_{database.table}_undispatched",
        f"ix_{database.table}_dead",
    }
    engine = engines(database.async_url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    bus = make_bus(database, outbox_create_table=False)
    seen = Recorder()
    bus.subscribe("job", seen)
    await bus.start()
    async with AsyncSession(engine) as session, session.begin():
        await bus.outbox(session).emit("job", 1)
    await seen.wait_for(1)


async def test_session_on_another_database_is_warned_about(
    sqlite_database: Database,
    make_bus: Make,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    engines: Engines,
) -> None:
    bus = make_bus(sqlite_database)
    await bus.start()
    other = tmp_path / "other.db"
    engine = engines(f"sqlite+aiosqlite:///{other}")
    async with engine.begin() as conn:
        await conn.run_sync(outbox_table(MetaData(), sqlite_database.table).create)
    async with AsyncSession(engine) as session, session.begin():
        await bus.outbox(session).emit("job", 1)
        await bus.outbox(session).emit("job", 2)
    warnings = [r.getMessage() for r in caplog.records if "relay reads" in r.getMessage()]
    assert len(warnings) == 1  # once per engine
    assert "other.db" in warnings[0]


async def test_many_rows_in_one_transaction(
    database: Database, make_bus: Make, engines: Engines
) -> None:
    bus = make_bus(database, outbox_batch_size=50)
    seen = Recorder()
    bus.subscribe("job", seen)
    await bus.start()
    engine = engines(database.async_url)
    users = users_table(f"users_{database.table}")
    async with engine.begin() as conn:
        await conn.run_sync(users.create)
    async with AsyncSession(engine) as session, session.begin():
        ids = []
        for n in range(500):
            await session.execute(insert(users).values(name=f"u{n}"))
            ids.append((await bus.outbox(session).emit("job", n)).id)
    await seen.wait_for(500, timeout=30)
    await asyncio.sleep(0.3)
    assert sorted(seen.ids) == sorted(ids)
    async with engine.begin() as conn:
        assert (await conn.execute(text(f"SELECT count(*) FROM {users.name}"))).scalar() == 500
        await conn.execute(text(f"DROP TABLE {users.name}"))


async def test_a_closed_bus_refuses_stored_events_and_its_relay_keeps_the_rows(
    sqlite_database: Database, make_bus: Make, engines: Engines
) -> None:
    bus = make_bus(sqlite_database)
    bus.subscribe("job", Recorder())
    await bus.start()
    bus.close()  # without shutdown: its subscriptions are gone, its relay still runs
    with pytest.raises(EventBusClosed, match="closed"):
        await bus.publish_stored(EventEnvelope("job", (1,), {}))
    writer = make_bus(sqlite_database)
    engine = engines(sqlite_database.async_url)
    async with AsyncSession(engine) as session, session.begin():
        envelope = await writer.outbox(session).emit("job", 1)

    async def retried() -> list[dict[str, object]] | None:
        rows = await outbox_rows(sqlite_database)
        return rows if rows and int(rows[0]["attempts"]) >= MAX_ATTEMPTS + 1 else None

    # Not the row's fault: tried again and again, never moved aside, never lost.
    [row] = await eventually(retried, timeout=30, what="the relay trying past MAX_ATTEMPTS")
    assert row["event_id"] == envelope.id and row["dead_at"] is None
    assert "EventBusClosed" in str(row["error"])
