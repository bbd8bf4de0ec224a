"""Outbox fixtures: a database per test (SQLite file or the session's PostgreSQL, a table
of the test's own), and buses on it, closed at the end."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from outbox_support import Base, Database, Make, Worker, bus_options
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from fastapi_opinionated_eventbus import EventBus


def _sqlite(tmp_path: Path) -> Database:
    path = tmp_path / "app.db"
    table = f"outbox_{uuid.uuid4().hex[:10]}"
    return Database("sqlite", f"sqlite+aiosqlite:///{path}", f"sqlite:///{path}", table)


def _postgresql(request: pytest.FixtureRequest) -> Database:
    pg = request.getfixturevalue("postgres")
    table = f"outbox_{uuid.uuid4().hex[:10]}"
    return Database("postgresql", pg.async_url, pg.sync_url, table, pg.password)


def _prepared(db: Database) -> Iterator[Database]:
    engine = create_engine(db.sync_url)
    try:
        Base.metadata.create_all(engine)
        yield db
        with engine.begin() as conn:
            conn.execute(text(f"DROP TABLE IF EXISTS {db.table}"))
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """Each test runs on SQLite and on PostgreSQL."""
    db = _sqlite(tmp_path) if request.param == "sqlite" else _postgresql(request)
    yield from _prepared(db)


@pytest.fixture
def pg_database(request: pytest.FixtureRequest) -> Iterator[Database]:
    """PostgreSQL only (what SQLite cannot do: several relaying processes)."""
    yield from _prepared(_postgresql(request))


@pytest.fixture
def sqlite_database(tmp_path: Path) -> Iterator[Database]:
    yield from _prepared(_sqlite(tmp_path))


@pytest.fixture
async def make_bus() -> AsyncIterator[Make]:
    """``make_bus(db, **options)``: a bus whose outbox is ``db``; all closed at the end."""
    buses: list[EventBus] = []

    def make(db: Database, **options: Any) -> EventBus:
        bus = EventBus(**bus_options(db, **options))
        buses.append(bus)
        return bus

    yield make
    for bus in buses:
        await bus.aclose()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """``workers(db, role, name, **options)``: a started worker; all stopped at the end."""
    started: list[Worker] = []

    def make(db: Database, role: str, name: str, **options: Any) -> Worker:
        worker = Worker(db, role, name, tmp_path, **options).start()
        started.append(worker)
        return worker

    yield make
    for worker in started:
        worker.stop()


@pytest.fixture
async def engines() -> AsyncIterator[Callable[..., AsyncEngine]]:
    """``engines(url, **options)``: the app's own engines, disposed of at the end even when
    the test fails (a connection left to the garbage collector is a warning, an error)."""
    made: list[AsyncEngine] = []

    def make(url: str, **options: Any) -> AsyncEngine:
        engine = create_async_engine(url, **options)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        await engine.dispose()
