"""Wake the relay when a transaction that wrote outbox rows commits.

One pair of listeners on SQLAlchemy's ``Session`` class (installed when this package is
first used) serves every session, sync or the sync core of an ``AsyncSession``: an
outbox emit leaves its relay in ``session.info``; the commit takes it out and rings it,
a rollback takes it out silently. Sessions that wrote no outbox row pay one dict lookup
per commit.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

from sqlalchemy import event
from sqlalchemy.orm import Session

__all__ = ["Bell", "arm"]

_KEY = "fastapi_opinionated_eventbus.outbox.wake"
_installed = False
_install_lock = threading.Lock()


class Bell(Protocol):
    def ring(self) -> None:
        """Called on the committing thread, right after the commit: must be quick and
        thread-safe."""


def arm(session: Session, bell: Bell) -> bool:
    """Ring ``bell`` when ``session``'s current transaction commits (not on rollback).

    Returns True for the first outbox row of the transaction."""
    if not _installed:
        _install()
    bells: set[Bell] | None = session.info.get(_KEY)
    if bells is None:
        session.info[_KEY] = {bell}
        return True
    bells.add(bell)
    return False


def _install() -> None:
    global _installed
    with _install_lock:
        if not _installed:
            event.listen(Session, "after_commit", _after_commit)
            event.listen(Session, "after_rollback", _after_rollback)
            _installed = True


def _after_commit(session: Session) -> None:
    bells: set[Bell] | None = session.info.pop(_KEY, None)
    if bells:
        for bell in bells:
            bell.ring()


def _after_rollback(session: Session, *_: Any) -> None:
    # The rows are gone with the transaction: there is nothing to dispatch.
    session.info.pop(_KEY, None)
