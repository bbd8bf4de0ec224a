"""Wake the relay when a transaction that wrote outbox rows commits.

One pair of listeners on SQLAlchemy's ``Session`` class (installed when this package is
first used) serves every session, sync or the sync core of an ``AsyncSession``: an
outbox emit leaves its relay in ``session.info``; the commit takes it out and rings it;
the end of the outermost transaction without a commit (a rollback) takes it out
silently. A rolled-back savepoint does not: the outer transaction may still commit
earlier rows. Sessions that wrote no outbox row pay a dict lookup or two per transaction.
"""

from __future__ import annotations

import threading
from typing import Protocol

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

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
            event.listen(Session, "after_transaction_end", _after_transaction_end)
            _installed = True


def _after_commit(session: Session) -> None:
    bells: set[Bell] | None = session.info.pop(_KEY, None)
    if bells:
        for bell in bells:
            bell.ring()


def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    # After a commit the bells are already rung and gone; otherwise the outermost
    # transaction rolled back, and its rows with it: there is nothing to dispatch.
    if transaction.parent is None:
        session.info.pop(_KEY, None)
