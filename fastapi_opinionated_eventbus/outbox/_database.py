"""The relay's database: its URL, its engine, and errors told without secrets."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from .._core.errors import ConfigurationError
from .._secrets import mask_url, scrub
from .._text import loggable
from ._sqlite import sqlite_file

__all__ = ["async_url", "describe_error", "is_sqlite", "make_engine", "same_database"]

# A plain URL names the synchronous default driver; the relay needs an async one.
_ASYNC_DRIVERS = {"postgresql": "asyncpg", "postgres": "asyncpg", "sqlite": "aiosqlite"}


def async_url(raw: str) -> URL:
    """``outbox_url`` parsed, with the async driver for a plain ``postgresql://`` or
    ``sqlite://``; ConfigurationError (password masked) when it cannot serve."""
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError) as exc:
        raise ConfigurationError(
            f"option 'outbox_url' is not a database URL ({mask_url(raw)!r}): {scrub(str(exc), raw)}"
        ) from None
    backend, _, driver = url.drivername.partition("+")  # without loading the dialect
    if not driver and backend in _ASYNC_DRIVERS:
        dialect = "postgresql" if backend == "postgres" else backend
        url = url.set(drivername=f"{dialect}+{_ASYNC_DRIVERS[backend]}")
    elif backend == "sqlite" and driver != "aiosqlite":
        raise ConfigurationError(
            f"option 'outbox_url' ({mask_url(raw)!r}): the relay needs an async driver; "
            "use sqlite+aiosqlite:///path.db"
        )
    if is_sqlite(url) and sqlite_file(url) is None:
        raise ConfigurationError(
            f"option 'outbox_url' ({mask_url(raw)!r}): an in-memory SQLite database "
            "cannot be shared by your sessions and the relay; use a file, e.g. "
            "sqlite+aiosqlite:///./app.db"
        )
    return url


def is_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite"


def make_engine(url: URL, raw: str, *, pool_size: int) -> AsyncEngine:
    options: dict[str, Any] = {}
    if not is_sqlite(url):
        options = {"pool_size": pool_size, "max_overflow": 2}
    try:
        return create_async_engine(url, **options)
    except Exception as exc:  # a sync driver, a driver that is not installed, ...
        hint = ""
        if isinstance(exc, ImportError | ModuleNotFoundError):
            hint = " (pip install 'fastapi-opinionated-eventbus[outbox]')"
        raise ConfigurationError(
            f"option 'outbox_url' ({mask_url(raw)!r}) cannot be used by the relay: "
            f"{type(exc).__name__}: {scrub(str(exc), raw)}{hint}"
        ) from None


def describe_error(exc: BaseException, raw_url: str) -> str:
    """``Type: message`` on one short line: the driver's error without SQLAlchemy's
    statement and parameters, without the URL's password."""
    inner: BaseException = exc
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        inner = exc.orig
    text = str(inner).strip().splitlines()[0] if str(inner).strip() else ""
    kind = type(inner).__name__
    return loggable(scrub(f"{kind}: {text}" if text else kind, raw_url))


def same_database(a: URL, b: URL) -> bool:
    """Whether two URLs name the same database (drivers and credentials aside)."""
    if a.get_backend_name() != b.get_backend_name():
        return False
    if is_sqlite(a):
        return sqlite_file(a) == sqlite_file(b)
    where_a = (a.host or "localhost", a.port, a.database)
    return where_a == (b.host or "localhost", b.port, b.database)
