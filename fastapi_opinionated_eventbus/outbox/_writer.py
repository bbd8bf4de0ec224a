"""``outbox(session).emit(...)``: one row in the session's own transaction.

The event is prepared exactly as ``emit`` prepares it (name checked, typed payload
validated, chain and correlation id taken from the caller) and encoded with the JSON
codec at once, so a bad argument raises in the caller and nothing is written.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from fastapi_opinionated.shared.logger import ns_logger
from pydantic import BaseModel
from sqlalchemy import Table, insert
from sqlalchemy.engine import URL, Engine
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from .._core.envelope import EventEnvelope
from .._core.registry import Plan
from .._core.typed import event_name_of
from .._secrets import mask_url
from ._database import same_database
from ._wake import Bell, arm

__all__ = ["AsyncOutbox", "Outbox", "OutboxWriter"]

logger = ns_logger("EventBus.outbox")

Prepare = Callable[
    [str | BaseModel, tuple[Any, ...], dict[str, Any]], "tuple[EventEnvelope, Plan, bool] | None"
]
Encode = Callable[[EventEnvelope], dict[bytes, bytes]]


class OutboxWriter:
    """Turns an emit into an outbox row; shared by every binding of one bus."""

    def __init__(
        self,
        table: Table,
        *,
        prepare: Prepare,
        encode: Encode,
        trace_carrier: Callable[[], dict[str, str]] | None,
        bell: Bell,
        relay_url: URL,
    ) -> None:
        self.insert = insert(table)
        self._prepare = prepare
        self._encode = encode
        self._carrier = trace_carrier
        self._bell = bell
        self._relay_url = relay_url
        self._checked: weakref.WeakSet[Engine] = weakref.WeakSet()

    def row(
        self, event: str | BaseModel, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[EventEnvelope, dict[str, Any] | None]:
        """The envelope and its row (None when the bus is disabled: nothing is written)."""
        if "strict" in kwargs:
            raise TypeError(
                "outbox(session).emit() takes no 'strict': the handlers run after the commit, "
                "not during the emit ('strict' is reserved, as in emit())"
            )
        prepared = self._prepare(event, args, kwargs)
        if prepared is None:
            name = event if isinstance(event, str) else event_name_of(type(event))
            return EventEnvelope(name, args, kwargs), None
        envelope = prepared[0]
        if self._carrier is not None:
            # The handlers' spans join the trace of the request that wrote the row.
            envelope = envelope.with_trace(self._carrier())
        body = self._encode(envelope)[b"body"]  # EventSerializationError: nothing written
        return envelope, {
            "event_id": envelope.id,
            "name": envelope.name,
            "body": body.decode(),
            "correlation_id": envelope.correlation_id,
            "created_at": envelope.emitted_at,
        }

    def written(self, session: Session) -> None:
        """A row was written in ``session``'s transaction: wake the relay at its commit."""
        if arm(session, self._bell):
            self._check_database(session)

    def _check_database(self, session: Session) -> None:
        """Warn once per engine whose database is not the one the relay reads."""
        try:
            engine = session.get_bind().engine
        except Exception:  # several binds and no default one: nothing to compare
            return
        if engine in self._checked:
            return
        self._checked.add(engine)
        if not same_database(engine.url, self._relay_url):
            logger.warning(
                f"outbox(session): the session writes to {mask_url(str(engine.url))} but "
                f"the relay reads {mask_url(str(self._relay_url))} (outbox_url): rows written "
                "there are dispatched only by a relay reading that database"
            )


class Outbox:
    """The outbox bound to a synchronous ``Session``: ``emit`` is a plain call.

    Returned by ``eventbus_api().outbox(session)``. Each ``emit`` adds one row through
    the session's connection, in its transaction; the event is dispatched after the
    commit, never if it rolls back.
    """

    __slots__ = ("_session", "_writer")

    def __init__(self, writer: OutboxWriter, session: Session) -> None:
        self._writer = writer
        self._session = session

    @property
    def session(self) -> Session:
        return self._session

    def emit(self, event: str | BaseModel, /, *args: Any, **kwargs: Any) -> EventEnvelope:
        """Write ``event`` (what ``emit`` takes) to the outbox in the session's transaction;
        returns its envelope, whose ``id`` the handlers will see.

        :raises EventSerializationError: an argument cannot be encoded (nothing written).
        """
        envelope, row = self._writer.row(event, args, kwargs)
        if row is not None:
            self._session.execute(self._writer.insert, row)
            self._writer.written(self._session)
        return envelope


class AsyncOutbox:
    """The outbox bound to an ``AsyncSession``: ``emit`` is awaited. See :class:`Outbox`."""

    __slots__ = ("_session", "_writer")

    def __init__(self, writer: OutboxWriter, session: AsyncSession) -> None:
        self._writer = writer
        self._session = session

    @property
    def session(self) -> AsyncSession:
        return self._session

    async def emit(self, event: str | BaseModel, /, *args: Any, **kwargs: Any) -> EventEnvelope:
        """Write ``event`` (what ``emit`` takes) to the outbox in the session's transaction;
        returns its envelope, whose ``id`` the handlers will see.

        :raises EventSerializationError: an argument cannot be encoded (nothing written).
        """
        envelope, row = self._writer.row(event, args, kwargs)
        if row is not None:
            await self._session.execute(self._writer.insert, row)
            self._writer.written(self._session.sync_session)
        return envelope
