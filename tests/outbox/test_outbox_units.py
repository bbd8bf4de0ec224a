"""The outbox's small parts on their own: URLs, the SQLite relay lock, error text, and the
commit hook that wakes the relay."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from fastapi_opinionated_eventbus import ConfigurationError
from fastapi_opinionated_eventbus.outbox._database import async_url, describe_error, same_database
from fastapi_opinionated_eventbus.outbox._sqlite import RelayLock, sqlite_file
from fastapi_opinionated_eventbus.outbox._wake import arm


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("postgresql://u:p@h/db", "postgresql+asyncpg"),
        ("postgres://u:p@h/db", "postgresql+asyncpg"),
        ("postgresql+psycopg://u:p@h/db", "postgresql+psycopg"),
        ("sqlite:///app.db", "sqlite+aiosqlite"),
        ("sqlite+aiosqlite:///app.db", "sqlite+aiosqlite"),
    ],
)
def test_plain_urls_get_the_async_driver(given: str, used: str) -> None:
    assert async_url(given).drivername == used


def test_unusable_urls_are_refused_without_the_password() -> None:
    for url in ("sqlite+pysqlite:///x.db", "sqlite:///:memory:", "sqlite://"):
        with pytest.raises(ConfigurationError, match="outbox_url"):
            async_url(url)
    with pytest.raises(ConfigurationError) as caught:
        async_url("postgresql://u:hunter22@h:notaport/db")
    assert "hunter22" not in str(caught.value)


def test_same_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = make_url("sqlite:///./app.db")
    absolute = make_url(f"sqlite+aiosqlite:///{tmp_path / 'app.db'}")
    assert same_database(relative, absolute)
    assert not same_database(relative, make_url(f"sqlite:///{tmp_path / 'other.db'}"))
    pg = make_url("postgresql+asyncpg://u:a@db:5432/app")
    assert same_database(pg, make_url("postgresql+psycopg://v:b@db:5432/app"))
    assert not same_database(pg, make_url("postgresql+asyncpg://u:a@db:5432/other"))
    assert not same_database(pg, relative)
    assert sqlite_file(make_url("sqlite://")) is None


def test_relay_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    database = tmp_path / "app.db"
    first, second = RelayLock(database), RelayLock(database)
    assert first.path == tmp_path / "app.db.eventbus-relay.lock"
    assert first.try_acquire() and first.held
    assert not second.try_acquire() and not second.held
    first.release()
    assert second.try_acquire()
    second.release()


def test_describe_error_is_one_safe_line() -> None:
    url = "postgresql://app:hunter22@db/app"
    exc = OperationalError("SELECT 1", {}, ValueError("login as app:hunter22 failed\nat line 2"))
    assert describe_error(exc, url) == "ValueError: login as app:*** failed"
    assert describe_error(TimeoutError(), url) == "TimeoutError"


class Bell:
    def __init__(self) -> None:
        self.rings = 0

    def ring(self) -> None:
        self.rings += 1


def test_commit_rings_rollback_does_not_savepoint_rollback_keeps_the_outer_ring() -> None:
    engine = create_engine("sqlite://")
    bell = Bell()
    with Session(engine) as session:
        with session.begin():
            assert arm(session, bell) is True  # the first row of the transaction
            assert arm(session, bell) is False
        assert bell.rings == 1
        with session.begin():
            arm(session, bell)
            session.rollback()
        with session.begin():
            session.execute(text("SELECT 1"))  # a later commit must not ring for it
        assert bell.rings == 1
        with session.begin():
            arm(session, bell)
            nested = session.begin_nested()
            arm(session, bell)
            nested.rollback()
        assert bell.rings == 2  # the outer transaction committed its own rows
    engine.dispose()
