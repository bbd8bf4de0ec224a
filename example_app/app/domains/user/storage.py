"""Where users live: a SQLite file beside main.py, through SQLAlchemy.

EXAMPLE_DATABASE_URL overrides it (an async URL, e.g. sqlite+aiosqlite:///tmp/x.db);
main.py gives the same database to the event bus as its outbox.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import Integer, String, create_engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import NullPool

DEFAULT_URL = f"sqlite+aiosqlite:///{Path(__file__).resolve().parents[3] / 'example.db'}"


def database_url() -> str:
    return os.environ.get("EXAMPLE_DATABASE_URL", DEFAULT_URL)


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    email: Mapped[str] = mapped_column(String(200))


def create_tables() -> None:
    """Create the users table if missing (main.py, at startup; a real app would use
    migrations)."""
    engine = create_engine(database_url().replace("+aiosqlite", ""))
    try:
        Base.metadata.create_all(engine)
    except OperationalError:  # another worker created it at the same moment
        Base.metadata.create_all(engine)
    finally:
        engine.dispose()


# SQLite connections are cheap to open: none is kept between requests, so none is left
# open when the app stops.
session = async_sessionmaker(
    create_async_engine(database_url(), poolclass=NullPool), class_=AsyncSession
)
