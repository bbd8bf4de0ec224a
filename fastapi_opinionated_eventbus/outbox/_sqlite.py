"""SQLite: one relaying process per database file, elected with a lock file.

SQLite has no row locks to share the work safely (``SKIP LOCKED``), so two relays would
dispatch the same rows. The relay of a file database holds an exclusive ``flock`` on
``<database>.eventbus-relay.lock``: another process (a second uvicorn worker) finds it
taken, says so once, and stands by, trying again at every poll. The lock goes with the
process that holds it, so a crashed relay is replaced within a poll interval.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from sqlalchemy.engine import URL

__all__ = ["RelayLock", "sqlite_file"]


def sqlite_file(url: URL) -> Path | None:
    """The database file of a SQLite URL (None for an in-memory database)."""
    database = url.database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        return None
    if database.startswith("file:"):  # a URI filename: file:path?mode=...
        database = database[len("file:") :].partition("?")[0]
    return Path(database).resolve()


class RelayLock:
    """An exclusive, non-blocking lock on ``<database>.eventbus-relay.lock``."""

    def __init__(self, database: Path) -> None:
        self.path = database.with_name(database.name + ".eventbus-relay.lock")
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; True when this process holds it."""
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None
