"""The JSON form of an event crossing a process boundary: never pickle, never eval.

An event becomes three flat fields (readable with ``redis-cli XRANGE``)::

    id    the envelope id: stable across redeliveries (not the stream entry id)
    name  the event name
    body  JSON {"v": 1, "args": [...], "kwargs": {...}, "at": <epoch seconds>,
                "cid": <correlation id or null>, "chain": [...], "trace": {...}}

``trace`` carries the W3C trace context of the emit (with tracing on), so the consuming
process's handler spans join the emitter's trace.

Values: ``str``, ``int``, ``float``, ``bool``, ``None``, lists and dicts with ``str`` keys
travel as themselves; a few more types travel as tagged objects ``{"$eb": <tag>, ...}``:

* ``datetime`` and ``time``: ISO 8601. Naive stays naive. Of an aware one only the UTC
  offset survives, not the time zone: a ``ZoneInfo`` datetime arrives with a fixed
  ``timezone(offset)``, the same instant, equal to the original except in a repeated or
  skipped hour, where datetimes of different zones compare unequal (PEP 495); ``fold``
  is not kept. A ``time`` whose zone gives no fixed offset (``ZoneInfo``) arrives naive.
  A UTC offset under a second is refused (``fromisoformat`` would read it as UTC).
* ``date`` (ISO 8601), ``UUID``, ``Decimal`` (as text, exact: ``NaN``, ``-0`` and
  exponents kept), ``tuple`` (stays a tuple).
* Pydantic models: their JSON dump, re-validated on the consuming side with the schema
  registered for the event name (typed events), else with the model type registered
  under the tag's stable name (:func:`register_type`, or found in a subscribed handler's
  annotations). A model type is never imported from a name found in a message. With no
  type to validate with, the model arrives as the dict of its fields, with a warning (once
  per type name among the last few thousand, at most a few a minute).
  Non-finite floats in a model travel as the JSON constants ``NaN``/``Infinity`` (where
  Pydantic would write ``null``); one that cannot be put back with certainty (in a set,
  or reshaped by a custom serializer) or that the model does not accept
  (``allow_inf_nan=False``) is refused at emit, naming its field (``args[0].f``).
* Enums: their value, tagged with the enum's stable name. Decoded to the enum member when
  that enum type is registered (same rules as models), else left as the plain value.

Subclasses of list, tuple, dict, str, int, float, datetime, date, time, UUID and Decimal
arrive as the base type, holding the same data (never what an overridden ``__str__`` says).
That holds for dict keys too: a ``str`` subclass key, such as a ``StrEnum`` member, arrives
as a plain ``str``; a dict with two keys that are then the same ``str`` is refused, as is a
key of any other type. Text that is not valid UTF-8 (a lone surrogate) is refused too,
in an argument or in the event's name, ids, chain or trace context. Anything else is
refused at emit with :class:`EventSerializationError` naming the argument (``args[1]``,
``kwargs['user']['tags'][0]``) and its type, and nothing is published.

What a received entry says is never logged raw: type names, tags and error texts in log
lines and in :class:`MalformedEntry` are escaped (no line breaks or control characters)
and cut short.
"""

from __future__ import annotations

from .codec import BODY, ID, NAME, TAG, VERSION, Codec, MalformedEntry
from .registry import TypeRegistry, known_types, register_type, stable_name

__all__ = [
    "BODY",
    "ID",
    "NAME",
    "TAG",
    "VERSION",
    "Codec",
    "MalformedEntry",
    "TypeRegistry",
    "known_types",
    "register_type",
    "stable_name",
]
