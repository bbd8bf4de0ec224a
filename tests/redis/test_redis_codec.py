"""The JSON codec: what crosses a process boundary, and what is refused."""

from __future__ import annotations

import enum
import json
import logging
import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel, ConfigDict, Field, field_serializer
from redis_support import Make

from fastapi_opinionated_eventbus import EventSerializationError, TypedEvent
from fastapi_opinionated_eventbus._codec import Codec, MalformedEntry, TypeRegistry
from fastapi_opinionated_eventbus._codec.unknown import UnknownTypes, WarningBudget
from fastapi_opinionated_eventbus._core.envelope import EventEnvelope


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Address(BaseModel):
    city: str
    since: date


class User(BaseModel):
    id: int
    name: str
    address: Address
    tags: list[str] = []


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: int

    @property
    def doubled(self) -> int:
        return self.value * 2


class UserCreated(TypedEvent):
    __event_name__: ClassVar[str] = "user.created"
    id: int
    when: datetime


def codec(schemas: dict[str, type[BaseModel]] | None = None, **kw: Any) -> Codec:
    return Codec((schemas or {}).get, **kw)


def round_trip(c: Codec, *args: Any, name: str = "thing.happened", **kwargs: Any) -> Any:
    envelope = EventEnvelope(name, args, kwargs)
    decoded = c.decode(c.encode(envelope))
    assert decoded.id == envelope.id and decoded.name == name
    return decoded


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        -(2**70),
        1.5,
        "text with ünïcode and \"quotes\" and '$eb'",
        [1, [2, [3]]],
        {"nested": {"list": [1, "a", None]}},
        {"$eb": "a user's own key", "v": 1},  # must not be read as a tag
        (1, "two", (3.0,)),
        datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC),
        datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone(timedelta(hours=-3))),
        datetime(2024, 5, 6, 7, 8, 9),  # naive stays naive
        date(2024, 2, 29),
        time(23, 59, 1),
        uuid.UUID("12345678-1234-5678-1234-567812345678"),
        Decimal("12345678901234567890.000000001"),
    ],
)
def test_values_round_trip_with_their_type(value: Any) -> None:
    decoded = round_trip(codec(), value, key=[value])
    assert decoded.args == (value,)
    assert type(decoded.args[0]) is type(value)
    assert decoded.kwargs == {"key": [value]}


def test_envelope_metadata_round_trips() -> None:
    c = codec()
    envelope = EventEnvelope(
        "order.paid",
        (1,),
        {},
        correlation_id="req-42",
        chain=("order.created", "payment.settled"),
        trace={"traceparent": "00-abc-def-01"},
    )
    decoded = c.decode(c.encode(envelope), attempt=3)
    assert decoded.id == envelope.id
    assert decoded.correlation_id == "req-42"
    assert decoded.chain == ("order.created", "payment.settled")
    assert decoded.emitted_at_timestamp == envelope.emitted_at_timestamp
    assert decoded.trace_context == {"traceparent": "00-abc-def-01"}
    assert decoded.attempt == 3


def test_the_entry_is_plain_json_text() -> None:
    fields = codec().encode(EventEnvelope("a.b", (uuid.uuid4(), Color.RED), {"n": 1}))
    assert set(fields) == {b"id", b"name", b"body"}
    body = json.loads(fields[b"body"])
    assert body["kwargs"] == {"n": 1} and body["v"] == 1


def test_enums_are_rebuilt_when_registered_else_stay_values() -> None:
    registry = TypeRegistry()
    producer = codec(registry=registry)
    fields = producer.encode(EventEnvelope("a.b", (Color.BLUE, Level.HIGH), {}))
    assert codec(registry=TypeRegistry()).decode(fields).args == ("blue", 2)
    registry.register(Color)
    registry.register(Level)
    decoded = codec(registry=registry).decode(fields).args
    assert decoded == (Color.BLUE, Level.HIGH)
    assert type(decoded[1]) is Level


def test_a_typed_event_is_revalidated_with_the_schema_of_its_name() -> None:
    c = codec({"user.created": UserCreated}, registry=TypeRegistry())
    event = UserCreated(id=7, when=datetime(2024, 1, 1, tzinfo=UTC))
    decoded = round_trip(c, event, name="user.created")
    assert decoded.args == (event,)
    assert type(decoded.args[0]) is UserCreated


def test_models_come_from_the_registry_by_stable_name_never_by_import() -> None:
    user = User(id=1, name="Jane", address=Address(city="Oslo", since=date(2020, 1, 2)))
    registry = TypeRegistry()
    registry.register(User)
    decoded = round_trip(codec(registry=registry), user, users=[user])
    assert decoded.args == (user,) and decoded.kwargs == {"users": [user]}
    # Unknown on the consuming side: the fields arrive as plain data.
    plain = round_trip(codec(registry=TypeRegistry()), user)
    assert plain.args == (json.loads(user.model_dump_json()),)


def test_a_forged_type_name_cannot_import_anything() -> None:
    c = codec(registry=TypeRegistry())
    body = {
        "v": 1,
        "args": [{"$eb": "model", "type": "os:system", "json": '{"command": "true"}'}],
        "kwargs": {},
        "at": 0,
        "chain": [],
    }
    fields = {b"id": b"x-1", b"name": b"a.b", b"body": json.dumps(body).encode()}
    assert c.decode(fields).args == ({"command": "true"},)


def test_handler_annotations_register_their_models() -> None:
    registry = TypeRegistry()

    def handler(user: User, colors: list[Color] | None = None) -> None: ...

    registry.register_annotations(handler)
    assert registry.get("test_redis_codec:User") is User
    assert registry.get("test_redis_codec:Color") is Color


def test_computed_properties_do_not_break_strict_models() -> None:
    registry = TypeRegistry()
    registry.register(Strict)
    assert round_trip(codec(registry=registry), Strict(value=2)).args == (Strict(value=2),)


class Opaque:
    pass


@pytest.mark.parametrize(
    ("args", "kwargs", "where", "type_name"),
    [
        ((1, {2}), {}, "args[1]", "set"),
        ((), {"user": Opaque()}, "kwargs['user']", "test_redis_codec.Opaque"),
        (({"a": [1, b"raw"]},), {}, "args[0]['a'][1]", "bytes"),
        (([timedelta(1)],), {}, "args[0][0]", "datetime.timedelta"),
        ((), {"f": lambda: None}, "kwargs['f']", "function"),
    ],
)
def test_unsupported_values_are_refused_naming_the_argument(
    args: tuple[Any, ...], kwargs: dict[str, Any], where: str, type_name: str
) -> None:
    with pytest.raises(EventSerializationError) as caught:
        codec().encode(EventEnvelope("a.b", args, kwargs))
    message = str(caught.value)
    assert f"{where} is a {type_name}," in message
    assert "nothing was published" in message


def test_non_string_dict_keys_are_refused() -> None:
    with pytest.raises(EventSerializationError, match=r"args\[0\] has the int key 1"):
        codec().encode(EventEnvelope("a.b", ({1: "one"},), {}))


@pytest.mark.parametrize(
    "fields",
    [
        {b"name": b"a.b", b"body": b"{}"},
        {b"id": b"x", b"name": b"a.b"},
        {b"id": b"x", b"name": b"a.b", b"body": b"not json"},
        {b"id": b"x", b"name": b"a.b", b"body": b"[1, 2]"},
        {b"id": b"x", b"name": b"a.b", b"body": b'{"v": 99, "args": [], "kwargs": {}, "at": 0}'},
        {b"id": b"x", b"name": b"a.b", b"body": b'{"v": 1, "args": {}, "kwargs": {}, "at": 0}'},
        {b"id": b"x", b"name": b"\xff\xfe", b"body": b"{}"},
        {
            b"id": b"x",
            b"name": b"a.b",
            b"body": b'{"v": 1, "args": [{"$eb": "pickle", "v": "x"}], "kwargs": {}, "at": 0}',
        },
        {
            b"id": b"x",
            b"name": b"a.b",
            b"body": b'{"v": 1, "args": [{"$eb": "datetime", "v": "nope"}], "kwargs": {}, "at": 0}',
        },
    ],
)
def test_malformed_entries_are_reported_not_crashing(fields: dict[bytes, bytes]) -> None:
    with pytest.raises(MalformedEntry):
        codec().decode(fields)


def test_a_model_that_no_longer_validates_is_malformed() -> None:
    registry = TypeRegistry()
    registry.register(User)
    fields = codec(registry=registry).encode(
        EventEnvelope("a.b", (Strict(value=1),), {})
    )  # travels as test_redis_codec:Strict
    registry.register(User, name="test_redis_codec:Strict")  # a different model under it
    with pytest.raises(MalformedEntry, match="no longer validates"):
        codec(registry=registry).decode(fields)


# ---------------------------------------------------------------- non-finite floats in models
INF, NAN = float("inf"), float("nan")


class Reading(BaseModel):
    f: float


class MaybeReading(BaseModel):
    f: float | None = None


class Series(BaseModel):
    first: Reading
    values: list[float] = []
    by_name: dict[str, float] = {}
    peak: float = Field(0.0, alias="Peak")
    maybe: MaybeReading | None = None


class Constants(BaseModel):
    model_config = ConfigDict(ser_json_inf_nan="strings")
    f: float


class Measured(TypedEvent):
    __event_name__: ClassVar[str] = "sensor.measured"
    value: float
    history: list[float] = Field(default_factory=list)


def registry_of(*types: type) -> TypeRegistry:
    registry = TypeRegistry()
    for cls in types:
        registry.register(cls)
    return registry


@pytest.mark.parametrize(
    "value",
    [
        Reading(f=INF),
        Reading(f=-INF),
        Reading(f=NAN),
        MaybeReading(f=NAN),
        MaybeReading(f=None),
        Series(
            first=Reading(f=NAN),
            values=[1.0, INF, -INF, NAN],
            by_name={"x": NAN, "y": 2.0},
            Peak=INF,
            maybe=MaybeReading(f=-INF),
        ),
        Constants(f=-INF),
    ],
    ids=repr,
)
def test_non_finite_floats_in_models_arrive_unchanged(value: BaseModel) -> None:
    """Pydantic's JSON writes inf and nan as null: the consumer then refused the model
    (dead letter), or took None for a float | None field. The codec never changes a value."""
    c = codec(registry=registry_of(type(value), Reading, MaybeReading))
    (got,) = round_trip(c, value).args
    assert type(got) is type(value)
    assert repr(got) == repr(value)  # repr compares nan as equal, and tells -0.0 from 0.0


def test_non_finite_floats_in_a_typed_event_arrive_unchanged() -> None:
    c = codec({"sensor.measured": Measured}, registry=TypeRegistry())
    event = Measured(value=NAN, history=[INF, 0.5])
    (got,) = round_trip(c, event, name="sensor.measured").args
    assert type(got) is Measured and repr(got) == repr(event)


def test_non_finite_floats_of_an_unregistered_model_arrive_as_floats() -> None:
    (got,) = round_trip(codec(registry=TypeRegistry()), MaybeReading(f=-INF)).args
    assert got == {"f": -INF}


class Wrapped(BaseModel):
    f: float

    @field_serializer("f", when_used="json")
    def _wrap(self, value: float) -> dict[str, Any]:
        return {"value": value, "unit": "m"}


class Finite(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False)
    f: float


def test_a_non_finite_float_its_model_writes_as_null_elsewhere_is_refused() -> None:
    with pytest.raises(EventSerializationError, match=r"args\[0\]\.f .*non-finite"):
        codec().encode(EventEnvelope("a.b", (Wrapped(f=INF),), {}))


def test_a_non_finite_float_its_model_forbids_is_refused() -> None:
    finite = Finite(f=1.0)
    finite.f = INF  # no validate_assignment: the model now holds what it cannot validate
    with pytest.raises(EventSerializationError, match=r"kwargs\['m'\]\.f"):
        codec().encode(EventEnvelope("a.b", (), {"m": finite}))


class Bag(BaseModel):
    items: set[float]


def test_a_non_finite_float_in_a_set_is_refused() -> None:
    """A set's dump may be in another order than its JSON: its nulls cannot be placed."""
    with pytest.raises(EventSerializationError, match=r"args\[0\]\.items .*in a set"):
        codec().encode(EventEnvelope("a.b", (Bag(items={1.0, INF}),), {}))


# ---------------------------------------------------------------- subclasses of str, int, float
class Mood(enum.StrEnum):
    HAPPY = "happy"


class Token(str):  # equal to itself only: a dict may hold it beside the same plain str
    __eq__ = object.__eq__
    __hash__ = object.__hash__


class Shouty(str):
    def __str__(self) -> str:
        return self.upper()


class Zero(int):
    def __int__(self) -> int:
        return 0


class Half(float):
    def __float__(self) -> float:
        return 0.5


class Stamp(datetime):
    def isoformat(self, sep: str = "T", timespec: str = "auto") -> str:
        return "a moment"


class Ticket(uuid.UUID):
    def __str__(self) -> str:
        return "ticket"


def test_subclasses_arrive_as_their_data_not_what_their_str_says() -> None:
    ticket = Ticket(int=7)
    decoded = round_trip(codec(), Shouty("quiet"), Zero(7), Half(2.0), Stamp(2024, 1, 2), ticket)
    assert decoded.args == ("quiet", 7, 2.0, datetime(2024, 1, 2), uuid.UUID(int=7))
    assert [type(a) for a in decoded.args] == [str, int, float, datetime, uuid.UUID]


def test_str_subclass_keys_travel_as_plain_str() -> None:
    (got,) = round_trip(codec(), {Mood.HAPPY: 1, Shouty("k"): 2, "$eb": 3}).args
    assert got == {"happy": 1, "k": 2, "$eb": 3}
    assert all(type(k) is str for k in got)


def test_keys_equal_as_str_are_refused_rather_than_merged() -> None:
    value = {Token("a"): 1, "a": 2}
    assert len(value) == 2
    with pytest.raises(EventSerializationError, match=r"args\[0\] has two keys equal to 'a'"):
        codec().encode(EventEnvelope("a.b", (value,), {}))


# ---------------------------------------------------------------- names that are not UTF-8
@pytest.mark.parametrize(
    ("envelope", "what"),
    [
        (EventEnvelope("user.\udc80", (1,), {}), "event name"),
        (EventEnvelope("user.x", (1,), {}, event_id="id-\ud800"), "event id"),
        (EventEnvelope("user.x", (1,), {}, correlation_id="req-\udfff"), "correlation id"),
        (EventEnvelope("user.x", (1,), {}, chain=("a.\udc80",)), "chain"),
        (EventEnvelope("user.x", (1,), {}, trace={"traceparent": "\udc80"}), "trace"),
    ],
)
def test_unencodable_envelope_text_is_a_serialization_error(
    envelope: EventEnvelope, what: str
) -> None:
    with pytest.raises(EventSerializationError, match=f"{what} .*not valid UTF-8") as caught:
        codec().encode(envelope)
    assert "surrogate" in str(caught.value)


async def test_emitting_a_lone_surrogate_name_on_redis_is_a_clear_name_error(
    make_bus: Make,
) -> None:
    """It was a UnicodeEncodeError; the name is now refused before the codec sees it, as
    on every backend (the codec's own refusal is tested above, at the codec level)."""
    bus = make_bus()
    await bus.start()
    with pytest.raises(ValueError, match="event name to emit must be printable text"):
        await bus.emit("user.\udc80", 1)
    with pytest.raises(ValueError, match="event name to emit must be printable text"):
        bus.emit_nowait("user.\udc80", 1)


# ---------------------------------------------------------------- unknown type names
def entry_of_type(type_name: str, n: int = 0) -> dict[bytes, bytes]:
    body = {"v": 1, "args": [{"$eb": "enum", "type": type_name, "v": n}], "kwargs": {}, "at": 0}
    return {b"id": f"x-{n}".encode(), b"name": b"a.b", b"body": json.dumps(body).encode()}


def test_unknown_type_names_are_remembered_boundedly_and_warned_about_sparingly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    refreshed: list[int] = []
    c = codec(registry=TypeRegistry(), refresh=lambda: refreshed.append(1))
    with caplog.at_level(logging.WARNING):
        for n in range(20_000):
            assert c.decode(entry_of_type(f"hostile:Type{n}", n)).args == (n,)
    assert len(c._unknown) <= 4096
    warnings = [r for r in caplog.records if "not registered" in r.getMessage()]
    assert 1 <= len(warnings) <= 10
    assert len(refreshed) == 20_000  # each new name may be a handler's type subscribed since


def test_a_type_name_from_a_message_is_logged_escaped_and_short(
    caplog: pytest.LogCaptureFixture,
) -> None:
    name = "evil:T\nERROR forged line\r\x1b[31m\u2028" + "A" * 10_000
    with caplog.at_level(logging.WARNING):
        codec(registry=TypeRegistry()).decode(entry_of_type(name))
    (record,) = [r for r in caplog.records if "not registered" in r.getMessage()]
    message = record.getMessage()
    assert not any(c in message for c in "\n\r\x1b\u2028")
    assert "forged line" in message and len(message) < 600


def test_a_known_unknown_name_is_neither_refreshed_nor_warned_about_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    refreshed: list[int] = []
    c = codec(registry=TypeRegistry(), refresh=lambda: refreshed.append(1))
    with caplog.at_level(logging.WARNING):
        for n in range(3):
            c.decode(entry_of_type("gone:Type", n))
    assert len(refreshed) == 1
    assert len([r for r in caplog.records if "not registered" in r.getMessage()]) == 1


def test_held_back_warnings_are_counted_in_the_next_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    budget = WarningBudget(burst=2, period=10, clock=lambda: now[0])
    unknown = UnknownTypes(capacity=3, budget=budget)
    with caplog.at_level(logging.WARNING):
        for n in range(5):
            unknown.add(f"a:T{n}")
        now[0] = 10.0
        unknown.add("a:Late")
    messages = [r.getMessage() for r in caplog.records if "not registered" in r.getMessage()]
    assert len(messages) == 3
    assert "3 more such warnings were held back" in messages[-1]
    assert len(unknown) == 3 and unknown.seen("a:Late") and not unknown.seen("a:T0")


@pytest.mark.parametrize(
    "arg",
    [
        {"$eb": "evil\nERROR forged\x1b[0m" * 500, "v": 1},
        {"$eb": "datetime", "v": "not\na\ndate" * 500},
    ],
    ids=["tag", "value"],
)
def test_what_a_malformed_entry_says_is_one_short_line(arg: dict[str, Any]) -> None:
    body = {"v": 1, "args": [arg], "kwargs": {}, "at": 0}
    fields = {b"id": b"x-1", b"name": b"a.b", b"body": json.dumps(body).encode()}
    with pytest.raises(MalformedEntry) as caught:
        codec().decode(fields)
    message = str(caught.value)
    assert "\n" not in message and "\x1b" not in message and len(message) < 800


@pytest.mark.parametrize(
    "value",
    [
        datetime(2000, 1, 1, tzinfo=timezone(timedelta(microseconds=1))),
        time(1, 2, tzinfo=timezone(-timedelta(microseconds=999_999))),
    ],
)
def test_a_utc_offset_under_a_second_is_refused_not_read_back_as_utc(value: Any) -> None:
    """datetime.fromisoformat (3.12) reads "+00:00:00.000001" as UTC: refuse, never change."""
    with pytest.raises(EventSerializationError, match=r"args\[0\] has the UTC offset .* second"):
        codec().encode(EventEnvelope("a.b", (value,), {}))
