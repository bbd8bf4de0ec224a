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


def key_of(envelope: EventEnvelope) -> bytes:
    """The partition key: the typed event's key field as text, else the event id."""
    args = envelope.args
    if len(args) == 1 and isinstance(args[0], BaseModel):
        field = key_field(type(args[0]))
        if field is not None:
            return str(getattr(args[0], field)).encode()
    return envelope.id.encode()


def to_record(codec: Codec, envelope: EventEnvelope) -> Record:
    """Key, value and headers of ``envelope``; raises EventSerializationError."""
    fields = codec.encode(envelope)
    key = key_of(envelope)
    headers: Headers = [
        (EVENT_NAME, fields[NAME]),
        (EVENT_ID, fields[ID]),
        (CORRELATION, envelope.correlation_id.encode()),
        (ATTEMPT, str(envelope.attempt).encode()),
    ]
    trace = envelope.trace_context
    if trace:
        headers += [(name, value.encode()) for name, value in trace.items()]
    return key, fields[BODY], headers


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
    headers = record.headers or ()
    for required in (EVENT_NAME, EVENT_ID):
        if header(headers, required) is None:
            raise MalformedEntry(f"missing header {required!r}")
    if record.value is None:
        raise MalformedEntry("the record has no value (a tombstone?)")
    carried = header(headers, ATTEMPT)
    try:
        first = max(int(carried), 1) if carried is not None else 1
    except ValueError:
        first = 1
    return codec.decode(fields_of(record.value, headers), attempt=first + deliveries - 1)
