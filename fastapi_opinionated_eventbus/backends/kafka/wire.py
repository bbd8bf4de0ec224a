"""An event as a Kafka record, and back.

::

    key      the partition key: the event id, or the typed event's ``__event_key__`` field
    value    the JSON body of the codec shared with Redis (never pickle)
    headers  eventbus-name, eventbus-id, eventbus-correlation-id, eventbus-attempt and,
             with tracing, the W3C trace context (traceparent, tracestate)

The body repeats the correlation id and the trace context: the headers are there for
tools that route or trace records without reading bodies.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from ..._codec import BODY, ID, NAME, Codec, MalformedEntry
from ..._core.envelope import EventEnvelope
from ..._core.errors import EventSerializationError

__all__ = [
    "ATTEMPT",
    "CORRELATION",
    "EVENT_ID",
    "EVENT_NAME",
    "Headers",
    "Outgoing",
    "Record",
    "fields_of",
    "header",
    "key_of",
    "to_record",
]

EVENT_NAME = "eventbus-name"
EVENT_ID = "eventbus-id"
CORRELATION = "eventbus-correlation-id"
ATTEMPT = "eventbus-attempt"

Headers = list[tuple[str, bytes]]
Record = tuple[bytes, bytes, Headers]
"""key, value, headers."""
Outgoing = tuple[bytes, bytes, Headers, bool]
"""key, value, headers, and whether the key is the event's own id (no other record
shares it, so any partition will do)."""

# The partition-key field of each typed event class (None: keyed by the event id). Weak:
# apps rebuilt in one process (tests) re-create their classes.
_key_fields: weakref.WeakKeyDictionary[type, str | None] = weakref.WeakKeyDictionary()


def key_field(model: type) -> str | None:
    """The field named by ``model.__event_key__``; checked once per class."""
    try:
        return _key_fields[model]
    except KeyError:
        pass
    field = getattr(model, "__event_key__", None)
    if field is not None and not (
        isinstance(field, str) and issubclass(model, BaseModel) and field in model.model_fields
    ):
        raise EventSerializationError(
            f"{model.__qualname__}.__event_key__ = {field!r} must name one of its fields "
            f"({', '.join(getattr(model, 'model_fields', {})) or 'it has none'}): events "
            "with equal values of that field share a partition and are handled in order"
        )
    _key_fields[model] = field
    return field


def key_of(envelope: EventEnvelope) -> bytes | None:
    """The partition key of a typed event with ``__event_key__``: that field as text."""
    args = envelope.args
    if len(args) == 1 and isinstance(args[0], BaseModel):
        field = key_field(type(args[0]))
        if field is not None:
            return str(getattr(args[0], field)).encode()
    return None


def to_record(codec: Codec, envelope: EventEnvelope) -> Outgoing:
    """Key, value and headers of ``envelope``; raises EventSerializationError."""
    fields = codec.encode(envelope)
    key = key_of(envelope)
    event_id, correlation, attempt = fields[ID], envelope.correlation_id, envelope.attempt
    headers: Headers = [
        (EVENT_NAME, fields[NAME]),
        (EVENT_ID, event_id),
        # A root event's correlation id is its own id, its attempt 1: not encoded again.
        (CORRELATION, event_id if correlation == envelope.id else correlation.encode()),
        (ATTEMPT, b"1" if attempt == 1 else str(attempt).encode()),
    ]
    trace = envelope.trace_context
    if trace:
        headers += [(name, value.encode()) for name, value in trace.items()]
    if key is None:
        return fields[ID], fields[BODY], headers, True
    return key, fields[BODY], headers, False


def header(headers: Sequence[tuple[str, bytes]], name: str) -> bytes | None:
    """The last value of header ``name``, or None."""
    found = None
    for key, value in headers:
        if key == name:
            found = value
    return found


def fields_of(value: bytes | None, headers: Sequence[tuple[str, bytes]]) -> dict[bytes, bytes]:
    """The codec fields of a record: what :meth:`Codec.decode` reads. Missing parts are
    left out, so that decoding names them."""
    fields: dict[bytes, bytes] = {}
    event_id, name = header(headers, EVENT_ID), header(headers, EVENT_NAME)
    if event_id is not None:
        fields[ID] = event_id
    if name is not None:
        fields[NAME] = name
    if value is not None:
        fields[BODY] = value
    return fields


def decode(codec: Codec, record: Any, deliveries: int) -> EventEnvelope:
    """The envelope of a consumed record; raises MalformedEntry saying what is wrong.

    ``current_event().attempt`` is the attempt the record carries (1 unless it was
    published again) plus this process's earlier deliveries of it.
    """
    headers = dict(record.headers or ())  # the last value of a repeated header wins
    name, event_id = headers.get(EVENT_NAME), headers.get(EVENT_ID)
    if name is None or event_id is None:
        missing = EVENT_NAME if name is None else EVENT_ID
        raise MalformedEntry(f"missing header {missing!r}")
    if record.value is None:
        raise MalformedEntry("the record has no value (a tombstone?)")
    carried = headers.get(ATTEMPT)
    if carried is None or carried == b"1":  # the common case, without int()
        first = 1
    else:
        try:
            first = max(int(carried), 1)
        except ValueError:
            first = 1
    fields = {ID: event_id, NAME: name, BODY: record.value}
    return codec.decode(fields, attempt=first + deliveries - 1)
