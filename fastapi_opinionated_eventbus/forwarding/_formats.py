"""The wire formats of forwarded events: the documented JSON, and fastapi-events' pair.

``eventbus`` (the default), one JSON object per event, built by the Redis backend's codec
(so every value the codec carries travels the same way, tagged values included)::

    {"v": 1, "id": "...", "name": "order.paid", "correlation_id": "...",
     "emitted_at": "2026-11-23T10:00:00.123456+00:00",
     "args": [...], "kwargs": {...}, "chain": [...], "trace": {...}}

``fastapi-events``: ``["order.paid", payload]``, what fastapi-events' ``SQSForwardHandler``
sends, for consumers migrating from that library. The payload is the event's one
positional argument, or the dict of its keyword arguments, or ``null`` without
arguments; values in Pydantic's JSON form (a model as the dict of its fields, datetimes
in ISO 8601). An event with several positional arguments (or positional and keyword ones)
has no single payload and is refused.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, TypeAdapter

from .._codec import BODY, Codec, MalformedEntry, TypeRegistry, known_types
from .._core.envelope import EventEnvelope
from .._core.errors import EventSerializationError

__all__ = [
    "WIRE_VERSION",
    "WireFormat",
    "decode_event",
    "encode_batch",
    "encode_event",
    "event_key",
]

WIRE_VERSION = 1


class WireFormat(StrEnum):
    """How a forwarder writes each event."""

    EVENTBUS = "eventbus"
    """The documented JSON object (see the module docstring): every field of the event."""
    FASTAPI_EVENTS = "fastapi-events"
    """``["name", payload]``, as fastapi-events' forward handlers send it."""


def _no_schema(name: str) -> None:
    return None


# Encoding reads no schema and keeps no state: one codec serves every forwarder.
_encoder = Codec(_no_schema)
# Pydantic's JSON mode for any value (models, datetimes, UUIDs...): the fastapi-events format.
_ANY: TypeAdapter[Any] = TypeAdapter(Any)


def encode_event(envelope: EventEnvelope, format: WireFormat | str = WireFormat.EVENTBUS) -> str:
    """The JSON text of ``envelope`` in ``format`` (ASCII only: any transport takes it).

    :raises EventSerializationError: an argument the format cannot carry, named.
    """
    if WireFormat(format) is WireFormat.FASTAPI_EVENTS:
        return _fastapi_events_json(envelope)
    body = json.loads(_encoder.encode(envelope)[BODY])
    document = {
        "v": WIRE_VERSION,
        "id": envelope.id,
        "name": envelope.name,
        "correlation_id": envelope.correlation_id,
        "emitted_at": envelope.emitted_at.isoformat(),
        "args": body["args"],
        "kwargs": body["kwargs"],
        "chain": body["chain"],
        "trace": body["trace"],
    }
    return json.dumps(document, separators=(",", ":"))


def encode_batch(
    envelopes: Sequence[EventEnvelope], format: WireFormat
) -> tuple[list[tuple[EventEnvelope, str]], dict[str, str]]:
    """Each event's JSON, and the reason of each that cannot be written (by event id): one
    such event fails alone (see PartialBatchFailure), not its whole batch."""
    encoded: list[tuple[EventEnvelope, str]] = []
    refused: dict[str, str] = {}
    for envelope in envelopes:
        try:
            encoded.append((envelope, encode_event(envelope, format)))
        except EventSerializationError as exc:
            refused[envelope.id] = str(exc)
    return encoded, refused


def _fastapi_events_json(envelope: EventEnvelope) -> str:
    args, kwargs = envelope.args, envelope.kwargs
    payload: Any
    if len(args) == 1 and not kwargs:
        payload = args[0]
    elif not args:
        payload = kwargs or None
    else:
        raise EventSerializationError(
            f"Event {envelope.name!r} has {len(args)} positional and {len(kwargs)} keyword "
            "argument(s), but the fastapi-events format carries one payload: emit one "
            "argument (a dict or a model) or keyword arguments only, or forward it in the "
            "eventbus format"
        )
    try:
        document = [envelope.name, _ANY.dump_python(payload, mode="json")]
    except ValueError as exc:  # pydantic's PydanticSerializationError
        raise EventSerializationError(
            f"Event {envelope.name!r}: its payload cannot be written as JSON ({exc})"
        ) from None
    return json.dumps(document, separators=(",", ":"))


def decode_event(
    text: str | bytes | Mapping[str, Any],
    *,
    schema_for: Callable[[str], type[BaseModel] | None] | None = None,
    types: TypeRegistry = known_types,
) -> EventEnvelope:
    """The event of one ``eventbus``-format JSON object (its text, or the object already
    parsed, e.g. an item of a webhook's array), as the consuming service reads it: tagged
    values (dates, UUIDs, models...) rebuilt as the Redis backend does.

    ``schema_for(name)`` gives a typed event's model (validated from its JSON); models
    and enums named in the event are rebuilt only when registered in ``types``
    (:func:`~fastapi_opinionated_eventbus.register_type`), never imported by name.

    :raises ValueError: (``MalformedEntry``) text that is not such an event.
    """
    if isinstance(text, Mapping):
        document: Any = text
    else:
        try:
            document = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise MalformedEntry(f"not JSON: {type(exc).__name__}") from None
    if not isinstance(document, dict) or document.get("v") != WIRE_VERSION:
        raise MalformedEntry("not an event in the eventbus wire format (version 1)")
    try:
        event_id, name = document["id"], document["name"]
        emitted_at = datetime.fromisoformat(document["emitted_at"])
        correlation_id = document.get("correlation_id")
        body = {
            "v": 1,
            "args": document["args"],
            "kwargs": document["kwargs"],
            "at": emitted_at.astimezone(UTC).timestamp(),
            "cid": None if correlation_id == event_id else correlation_id,
            "chain": document.get("chain", []),
            "trace": document.get("trace", {}),
        }
        fields = {b"id": event_id.encode(), b"name": name.encode(), BODY: json.dumps(body).encode()}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        problem = f"a field is missing or of the wrong type: {type(exc).__name__}"
        raise MalformedEntry(problem) from None
    return _decoder(schema_for or _no_schema, types).decode(fields)


@lru_cache(maxsize=16)
def _decoder(schema_for: Callable[[str], type[BaseModel] | None], types: TypeRegistry) -> Codec:
    # One codec per lookup: it remembers unknown type names, so each is warned about once.
    return Codec(schema_for, types)


def event_key(envelope: EventEnvelope) -> str | None:
    """The key of a typed event: the value of the field its class names in
    ``__event_key__`` (e.g. ``__event_key__ = "order_id"``), as text; None otherwise."""
    if len(envelope.args) != 1 or envelope.kwargs:
        return None
    payload = envelope.args[0]
    field = getattr(type(payload), "__event_key__", None)
    if field is None or not isinstance(payload, BaseModel):
        return None
    if not isinstance(field, str) or not hasattr(payload, field):
        raise EventSerializationError(
            f"{type(payload).__qualname__}.__event_key__ must name one of its fields, got {field!r}"
        )
    value = getattr(payload, field)
    return value if isinstance(value, str) else str(value)
