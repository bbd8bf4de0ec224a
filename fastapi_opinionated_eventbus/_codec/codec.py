"""Encoding an envelope to stream fields and back (the package docstring is the spec)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Any

from pydantic import BaseModel, ValidationError

from .._core.envelope import EventEnvelope, check_identity, received_envelope
from .._core.errors import EventSerializationError
from .jsontext import dumps, loads_untagged
from .models import NotCarried, dump_model
from .registry import TypeRegistry, known_types, stable_name
from .text import clipped, shown
from .unknown import UnknownTypes

__all__ = ["BODY", "ID", "NAME", "TAG", "VERSION", "Codec", "MalformedEntry"]

VERSION = 1

TAG = "$eb"
TAG_BYTES = b'"$eb"'
ID, NAME, BODY = b"id", b"name", b"body"

_PLAIN = frozenset({str, int, float, bool, type(None)})
_NUMBER = (int, float)  # not int | float: that builds a union on each call

SchemaLookup = Callable[[str], "type[BaseModel] | None"]


class MalformedEntry(ValueError):
    """A received entry that is not an event this codec wrote (or no longer decodes)."""


class _Refused(Exception):
    """An unencodable value; ``path`` (``[1]``, ``['a']``, ``.f``, innermost first) grows
    while the error unwinds to the argument."""

    def __init__(self, value: object, problem: str = "", path: Sequence[str | int] = ()) -> None:
        self.value = value
        self.problem = problem
        self.path: list[str] = [_segment(p, attribute=True) for p in reversed(path)]


def _refusal(envelope: EventEnvelope, problem: str) -> EventSerializationError:
    return EventSerializationError(
        f"Event {envelope.name!r}: {problem}. Events crossing processes are JSON: use JSON "
        "types, datetime, date, time, UUID, Decimal, Enum or pydantic models (nothing was "
        "published)"
    )


class Codec:
    """Encodes envelopes to stream fields and back, for one bus."""

    def __init__(
        self,
        schema_for: SchemaLookup,
        registry: TypeRegistry = known_types,
        refresh: Callable[[], None] | None = None,
    ) -> None:
        """``schema_for(name)``: the schema of an event name; ``refresh()``: register more
        types (e.g. from handlers subscribed since), tried once per unknown type name while
        that name is remembered (see :class:`UnknownTypes`)."""
        self._schema_for = schema_for
        self._types = registry
        self._refresh = refresh
        self._unknown = UnknownTypes()

    # ------------------------------------------------------------------ encoding
    def encode(self, envelope: EventEnvelope) -> dict[bytes, bytes]:
        """The stream fields of ``envelope``; raises EventSerializationError."""
        args = envelope.args
        kwargs = envelope.kwargs
        try:
            where = "args"
            encoded_args = [self._value(a, i) for i, a in enumerate(args)]
            where = "kwargs"
            encoded_kwargs = self._dict(kwargs) if kwargs else {}
        except _Refused as refused:
            path = where + "".join(reversed(refused.path))
            problem = refused.problem or (
                f"is a {_type_name(refused.value)}, which cannot be sent to another process"
            )
            raise _refusal(envelope, f"{path} {problem}") from None
        except RecursionError:
            where = self._culprit(args, kwargs) or where
            raise _refusal(envelope, f"{where} is nested too deeply") from None
        body = {
            "v": VERSION,
            "args": encoded_args,
            "kwargs": encoded_kwargs,
            "at": envelope.emitted_at_timestamp,
            # The explicit one only: a root event's default (its own id) is rebuilt as is.
            "cid": cid if (cid := envelope.correlation_id) != envelope.id else None,
            "chain": list(envelope.chain),
            "trace": envelope.trace_context or {},
        }
        try:
            encoded = dumps(body).encode()
            return {ID: envelope.id.encode(), NAME: envelope.name.encode(), BODY: encoded}
        except (ValueError, RecursionError) as exc:
            # An int too long for json, a lone surrogate that is not UTF-8, ...
            culprit = self._culprit(args, kwargs)
            if culprit is None and (bad_text := _unencodable_text(envelope)) is not None:
                raise bad_text from None
            problem = f"{culprit or 'an argument'} cannot be encoded ({exc})"
            raise _refusal(envelope, problem) from None

    def _culprit(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        """Which argument fails to encode: found again one by one, on the failure path only."""
        named: list[tuple[str, int | str, Any]] = [(f"args[{i}]", i, a) for i, a in enumerate(args)]
        named += [(f"kwargs[{k!r}]", k, v) for k, v in kwargs.items()]
        for path, key, value in named:
            try:  # the key too: a kwargs name may be what fails
                json.dumps([key, self._value(value, key)], ensure_ascii=False).encode()
            except (_Refused, ValueError, RecursionError):
                return path
        return None

    def _value(self, value: Any, key: int | str | None) -> Any:
        # ``key`` names this value in its parent, for the error message only.
        try:
            kind = type(value)
            if kind in _PLAIN:
                return value
            if kind is list:
                return [self._value(item, i) for i, item in enumerate(value)]
            if kind is dict:
                return self._dict(value)
            return self._other(value)
        except _Refused as refused:
            if key is not None:
                refused.path.append(_segment(key))
            raise

    def _dict(self, value: Mapping[Any, Any]) -> Any:
        out: dict[str, Any] = {}
        for k, v in value.items():
            if type(k) is not str:
                k = _plain_key(value, k)
            # Plain values as _value() returns them, without the call: -0.1 µs each.
            out[k] = v if type(v) in _PLAIN else self._value(v, k)
        if len(out) != len(value):  # keys that differ only as str subclasses (see _plain_key)
            raise _Refused(value, _merged_keys(value))
        if TAG in out:  # a user's own "$eb" key: escape, so it is not read as a tag
            return {TAG: "dict", "v": [[k, v] for k, v in out.items()]}
        return out

    def _other(self, value: Any) -> Any:
        # Enum before str/int: StrEnum and IntEnum members are str and int too.
        if isinstance(value, Enum):
            name = self._types.name_of(type(value))
            try:
                return {TAG: "enum", "type": name, "v": self._value(value.value, None)}
            except _Refused as refused:
                refused.path.append(".value")
                raise
        if isinstance(value, BaseModel):
            try:
                dumped = dump_model(value)
            except NotCarried as exc:
                raise _Refused(value, exc.problem, exc.path) from None
            except Exception as exc:  # pydantic's serialization error
                problem = f"is a {_type_name(value)} that cannot be dumped: {exc}"
                raise _Refused(value, problem) from None
            return {TAG: "model", "type": self._types.name_of(type(value)), "json": dumped}
        # Subclasses travel as their base type, so the base's own methods turn them to text:
        # what a subclass's __str__ or isoformat says may not be its data.
        if isinstance(value, datetime):
            return {TAG: "datetime", "v": _iso(value, datetime.isoformat(value))}
        if isinstance(value, date):
            return {TAG: "date", "v": date.isoformat(value)}
        if isinstance(value, time):
            return {TAG: "time", "v": _iso(value, time.isoformat(value))}
        if isinstance(value, uuid.UUID):
            return {TAG: "uuid", "v": uuid.UUID.__str__(value)}
        if isinstance(value, Decimal):
            return {TAG: "decimal", "v": Decimal.__str__(value)}
        if isinstance(value, tuple):
            return {TAG: "tuple", "v": [self._value(item, i) for i, item in enumerate(value)]}
        if isinstance(value, list):
            return [self._value(item, i) for i, item in enumerate(value)]
        if isinstance(value, dict):
            return self._dict(value)
        if isinstance(value, int):
            return int.__int__(value)
        if isinstance(value, float):
            return float.__float__(value)
        if isinstance(value, str):
            return str.__str__(value)
        raise _Refused(value)

    # ------------------------------------------------------------------ decoding
    def decode(self, fields: Mapping[bytes, bytes], *, attempt: int = 1) -> EventEnvelope:
        """The envelope of a stream entry, at ``attempt``; raises MalformedEntry."""
        try:
            event_id = fields[ID].decode()
            name = fields[NAME].decode()
            raw_body = fields[BODY]
        except KeyError as exc:
            raise MalformedEntry(f"missing field {exc.args[0]!r}") from None
        except UnicodeDecodeError as exc:
            raise MalformedEntry(f"a field is not UTF-8: {clipped(str(exc))}") from None
        if not event_id or not name:
            raise MalformedEntry("empty event id or name")
        schema = self._schema_for(name)
        try:
            if TAG_BYTES in raw_body:
                body = json.loads(raw_body, object_hook=lambda obj: self._tagged(obj, schema))
            else:  # nothing tagged (at most a string with "$eb" in it looks tagged here)
                body = loads_untagged(raw_body)
        except MalformedEntry:
            raise
        except ValidationError as exc:
            raise MalformedEntry(f"a model no longer validates: {clipped(str(exc))}") from None
        except (ValueError, TypeError, KeyError, InvalidOperation, RecursionError) as exc:
            # RecursionError: a body nested deeper than json can parse is garbage too.
            raise MalformedEntry(f"bad body: {type(exc).__name__}: {clipped(str(exc))}") from None
        try:
            if body.get("v") != VERSION:
                raise MalformedEntry(f"unknown codec version {shown(body.get('v'))}")
            args, kwargs, at = body["args"], body["kwargs"], body["at"]
            chain, cid, trace = body.get("chain", []), body.get("cid"), body.get("trace", {})
            if not (
                isinstance(args, list)
                and isinstance(kwargs, dict)
                and isinstance(at, _NUMBER)
                and isinstance(chain, list)
                and (not chain or all(isinstance(c, str) for c in chain))
                and (cid is None or isinstance(cid, str))
                and isinstance(trace, dict)
            ):
                raise MalformedEntry("body fields of the wrong type")
        except (AttributeError, KeyError) as exc:
            problem = f"{type(exc).__name__}: {clipped(str(exc))}"
            raise MalformedEntry(f"body is not an event: {problem}") from None
        try:
            check_identity(name, event_id, cid, chain)
        except ValueError as exc:
            raise MalformedEntry(str(exc)) from None
        return received_envelope(
            name,
            tuple(args),
            kwargs,
            cid,
            tuple(chain),
            attempt,
            event_id,
            float(at),
            {str(k): str(v) for k, v in trace.items()} if trace else None,
        )

    def _tagged(self, obj: dict[str, Any], schema: type[BaseModel] | None) -> Any:
        tag = obj.get(TAG)
        if tag is None:
            return obj
        if tag == "datetime":
            return datetime.fromisoformat(obj["v"])
        if tag == "date":
            return date.fromisoformat(obj["v"])
        if tag == "time":
            return time.fromisoformat(obj["v"])
        if tag == "uuid":
            return uuid.UUID(obj["v"])
        if tag == "decimal":
            return Decimal(obj["v"])
        if tag == "tuple":
            return tuple(obj["v"])
        if tag == "dict":
            return {k: v for k, v in obj["v"]}
        if tag == "model":
            return self._model(obj["type"], obj["json"], schema)
        if tag == "enum":
            return self._enum(obj["type"], obj["v"])
        raise MalformedEntry(f"unknown value tag {shown(tag)}")

    def _model(self, name: str, dumped: str, schema: type[BaseModel] | None) -> Any:
        if schema is not None and name == stable_name(schema):
            return schema.model_validate_json(dumped)
        cls = self._resolve(name, quiet=schema is not None)
        if cls is None and schema is not None:
            # A typed event whose model travelled under another name: its schema is the
            # authority on the payload.
            cls = schema
        if isinstance(cls, type) and issubclass(cls, BaseModel):
            return cls.model_validate_json(dumped)
        return json.loads(dumped)

    def _enum(self, name: str, value: Any) -> Any:
        cls = self._resolve(name)
        if isinstance(cls, type) and issubclass(cls, Enum):
            return cls(value)
        return value

    def _resolve(self, name: str, *, quiet: bool = False) -> type | None:
        cls = self._types.get(name)
        if cls is not None or self._unknown.seen(name):
            return cls
        if self._refresh is not None:
            self._refresh()
            cls = self._types.get(name)
        if cls is None:
            self._unknown.add(name, warn=not quiet)
        return cls


def _unencodable_text(envelope: EventEnvelope) -> EventSerializationError | None:
    """The refusal of the envelope's own text that is not UTF-8 (a lone surrogate), if any:
    the event name, its ids, its chain or its trace context."""
    texts = [
        ("event name", envelope.name),
        ("event id", envelope.id),
        ("correlation id", envelope.correlation_id),
        *(("chain entry", name) for name in envelope.chain),
        *(("trace context", f"{k}={v}") for k, v in (envelope.trace_context or {}).items()),
    ]
    for what, text in texts:
        try:
            text.encode()
        except UnicodeEncodeError as exc:
            return EventSerializationError(
                f"Event {shown(envelope.name)}: the {what} {shown(text)} is not valid UTF-8 "
                f"text ({exc.reason}: {text[exc.start]!r} at position {exc.start}); nothing "
                "was published"
            )
    return None


def _iso(value: datetime | time, text: str) -> str:
    """``text``, unless fromisoformat would read it back wrong: Python 3.12 takes a UTC
    offset under a second (``+00:00:00.000001``) for UTC."""
    if "+00:00:00." in text or "-00:00:00." in text:
        raise _Refused(
            value,
            f"has the UTC offset {value.utcoffset()}, under a second, which the consuming "
            "side would read back as UTC",
        )
    return text


def _plain_key(mapping: Mapping[Any, Any], key: Any) -> str:
    """A str subclass key (a StrEnum member, ...) travels as its plain text, like a value."""
    if isinstance(key, str):
        return str.__str__(key)
    raise _Refused(mapping, f"has the {_type_name(key)} key {key!r}: JSON object keys must be str")


def _merged_keys(mapping: Mapping[Any, Any]) -> str:
    """Name two keys that became one plain str, which JSON would silently merge."""
    seen: dict[str, Any] = {}
    for key in mapping:
        text = str.__str__(key)
        if text in seen:
            return (
                f"has two keys equal to {text!r} as plain str ({seen[text]!r} and {key!r}): "
                "JSON object keys must be distinct"
            )
        seen[text] = key
    return "has keys that are not distinct as plain str"  # a Mapping that changed meanwhile


def _segment(key: str | int, *, attribute: bool = False) -> str:
    """``[1]``, ``['a']``, or ``.name`` for a model field (``attribute``)."""
    if isinstance(key, int):
        return f"[{key}]"
    return f".{key}" if attribute and key.isidentifier() else f"[{key!r}]"


def _type_name(value: object) -> str:
    kind = type(value)
    if kind.__module__ == "builtins":
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"
