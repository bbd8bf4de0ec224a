"""The event envelope: what a handler can learn about the event it is running for."""

from __future__ import annotations

import itertools
import os
import time
import uuid
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Any

from .correlation import is_valid_correlation_id
from .errors import NoCurrentEvent

__all__ = [
    "EventEnvelope",
    "check_identity",
    "current_event",
    "current_var",
    "new_envelope",
    "received_envelope",
    "reset_current",
]


def _new_process_prefix() -> str:
    return uuid.uuid4().hex[:16]


# Event ids are "<random per-process prefix>-<sequence>": unique across processes and
# machines with overwhelming probability, and ~30x cheaper per emit than uuid4(). The
# prefix is renewed in forked children so two uvicorn workers never share a sequence.
_process_prefix = _new_process_prefix()
_sequence = itertools.count(1)


def _renew_prefix_after_fork() -> None:
    global _process_prefix, _sequence
    _process_prefix = _new_process_prefix()
    _sequence = itertools.count(1)


os.register_at_fork(after_in_child=_renew_prefix_after_fork)


# The extras of a root event emitted in this process: shared, never copied.
_ROOT_EXTRAS: tuple[tuple[str, ...], int, dict[str, str] | None] = ((), 1, None)


class EventEnvelope:
    """An immutable description of one emitted event.

    Built on every emit, so it is a plain ``__slots__`` object holding as little as it can:
    the id is made from a sequence number when first read, the ``datetime`` when read, and
    the rarely set parts (chain, attempt, trace context) share one tuple.
    """

    __slots__ = ("_args", "_correlation_id", "_emitted_at", "_extras", "_key", "_kwargs", "_name")
    # _key: the sequence number until the id is first read, then the id itself (an id given
    # at construction, e.g. a received event's, is kept as given).
    # _args and _kwargs are also read by the dispatcher, which calls handlers with them (and
    # by threads.py and solving.py, which do the same for sync handlers and handlers with
    # dependencies): a property there costs ~250 instructions per read on every emit
    # (callgrind).

    def __init__(
        self,
        name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        correlation_id: str | None = None,
        *,
        chain: tuple[str, ...] = (),
        attempt: int = 1,
        event_id: str | None = None,
        emitted_at: float | None = None,
        trace: dict[str, str] | None = None,
    ) -> None:
        self._name = name
        self._args = args
        self._kwargs = kwargs
        self._correlation_id = correlation_id
        self._key: int | str = next(_sequence) if event_id is None else event_id
        self._emitted_at = time.time() if emitted_at is None else emitted_at
        if chain or attempt != 1 or trace is not None:
            self._extras = (chain, attempt, trace)
        else:
            self._extras = _ROOT_EXTRAS

    @property
    def name(self) -> str:
        """The emitted event name (for a pattern handler: the name that matched)."""
        return self._name

    @property
    def id(self) -> str:
        """A unique, stable id: use it to make handlers idempotent."""
        key = self._key
        if type(key) is str:
            return key
        self._key = event_id = f"{_process_prefix}-{key:x}"
        return event_id

    @property
    def args(self) -> tuple[Any, ...]:
        return self._args

    @property
    def kwargs(self) -> dict[str, Any]:
        # A copy: the envelope is shared by every handler of the event.
        return dict(self._kwargs)

    @property
    def emitted_at(self) -> datetime:
        return datetime.fromtimestamp(self._emitted_at, UTC)

    @property
    def emitted_at_timestamp(self) -> float:
        return self._emitted_at

    @property
    def correlation_id(self) -> str:
        """The HTTP request's correlation id when emitted while serving one (inherited by
        chained events); otherwise the id of the root event of the chain."""
        return self._correlation_id or self.id

    @property
    def trace_context(self) -> dict[str, str] | None:
        """W3C trace context carried across processes (with tracing on)."""
        return self._extras[2]

    @property
    def attempt(self) -> int:
        """1 for the first run of a handler, 2 for its first retry, and so on."""
        return self._extras[1]

    @property
    def chain(self) -> tuple[str, ...]:
        """Names of the events whose handlers emitted this one, outermost first."""
        return self._extras[0]

    def describe(self) -> str:
        """How log lines name this event: name, id and correlation id."""
        return f"{self._name!r} (id={self.id}, correlation={self.correlation_id})"

    def with_attempt(self, attempt: int) -> EventEnvelope:
        """The same event (same id) at another attempt number."""
        return self._same_event(attempt, self.trace_context)

    def with_trace(self, trace: dict[str, str]) -> EventEnvelope:
        """The same event (same id) carrying ``trace``, the W3C trace context of its emit."""
        return self._same_event(self.attempt, trace)

    def _same_event(self, attempt: int, trace: dict[str, str] | None) -> EventEnvelope:
        return EventEnvelope(
            self._name,
            self._args,
            self._kwargs,
            self._correlation_id,
            chain=self.chain,
            attempt=attempt,
            event_id=self.id,
            emitted_at=self._emitted_at,
            trace=trace,
        )

    def child_chain(self) -> tuple[str, ...]:
        """The chain an event emitted by this event's handler carries."""
        return (*self.chain, self._name)

    def __repr__(self) -> str:
        return f"<EventEnvelope {self._name!r} id={self.id} attempt={self.attempt}>"


_new_instance = object.__new__


def new_envelope(
    name: str, args: tuple[Any, ...], kwargs: dict[str, Any], correlation_id: str | None
) -> EventEnvelope:
    """``EventEnvelope(name, args, kwargs, correlation_id)`` for emit's hot path: the same
    object without a keyword-parsing ``__init__`` (callgrind: -1,400 instructions, about
    7% of an awaited emit)."""
    envelope = _new_instance(EventEnvelope)
    envelope._name = name
    envelope._args = args
    envelope._kwargs = kwargs
    envelope._correlation_id = correlation_id
    envelope._key = next(_sequence)
    envelope._emitted_at = time.time()
    envelope._extras = _ROOT_EXTRAS
    return envelope


def received_envelope(
    name: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    correlation_id: str | None,
    chain: tuple[str, ...],
    attempt: int,
    event_id: str,
    emitted_at: float,
    trace: dict[str, str] | None,
) -> EventEnvelope:
    """``EventEnvelope(name, args, kwargs, correlation_id, chain=chain, attempt=attempt,
    event_id=event_id, emitted_at=emitted_at, trace=trace)`` for the codec's decoding: the
    same object without keyword parsing (0.9 -> 0.5 µs per received event)."""
    envelope = _new_instance(EventEnvelope)
    envelope._name = name
    envelope._args = args
    envelope._kwargs = kwargs
    envelope._correlation_id = correlation_id
    envelope._key = event_id
    envelope._emitted_at = emitted_at
    if chain or attempt != 1 or trace is not None:
        envelope._extras = (chain, attempt, trace)
    else:
        envelope._extras = _ROOT_EXTRAS
    return envelope


current_var: ContextVar[EventEnvelope | None] = ContextVar("eventbus_current_event", default=None)
"""The event the running handler was called for (set by whoever runs the handler)."""


def reset_current(token: Token[EventEnvelope | None]) -> None:
    """Restore the previous current event after a handler ran."""
    try:  # noqa: SIM105 - try is free on the hot path, contextlib.suppress() is not
        current_var.reset(token)
    except ValueError:
        # An unfinished handler closed by the garbage collector (its loop is gone) runs its
        # finally clause in whatever context is current: there is nothing left to restore.
        pass


def current_event() -> EventEnvelope:
    """The envelope of the event the calling handler is running for.

    Works in async handlers and in sync handlers running in worker threads.

    :raises NoCurrentEvent: when called outside an event handler.
    """
    event = current_var.get()
    if event is None:
        raise NoCurrentEvent(
            "current_event() was called outside an event handler: it only has a value "
            "while a handler subscribed with @OnInternalEvent (or bus.subscribe) runs."
        )
    return event


_MAX_ID_LENGTH = 256


def _check_text(what: str, text: str) -> None:
    if not text or text.strip() != text or not text.isprintable():
        raise ValueError(f"its {what} is empty, has surrounding spaces or holds control characters")


def check_identity(
    name: str, event_id: str, correlation_id: str | None, chain: tuple[str, ...] | list[str]
) -> None:
    """Refuse (ValueError) an event received from outside whose name, id, correlation id
    or chain could not have been emitted here: each of them reaches log lines as it is.

    The message never quotes the bad value.
    """
    _check_text("event name", name)
    for entry in chain:  # no tuple of (what, text) pairs built per call: -0.3 µs
        _check_text("chain entry", entry)
    # split() splits at exactly the characters isspace() names: a non-empty id holds none
    # of them iff it comes back whole (0.1 µs; any(c.isspace() for c in ...) took 0.75).
    if not (0 < len(event_id) <= _MAX_ID_LENGTH and event_id.isprintable()) or (
        event_id.split() != [event_id]
    ):
        raise ValueError(
            f"its event id is empty, longer than {_MAX_ID_LENGTH} characters, or holds spaces "
            "or control characters"
        )
    if correlation_id is not None and not is_valid_correlation_id(correlation_id):
        raise ValueError(
            "its correlation id is not one this bus writes (at most 128 characters of "
            "A-Z a-z 0-9 . _ : -)"
        )
