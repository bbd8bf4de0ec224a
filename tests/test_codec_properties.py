"""Property: the codec never changes a value.

``Codec.decode(Codec.encode(e))`` gives back every argument of ``e`` unchanged, or in the
documented base form (a str subclass arrives as str, an aware datetime with a fixed
``timezone`` of its UTC offset, ...), or ``encode`` refuses the event with
``EventSerializationError``, and only for a value that cannot travel (a lone surrogate,
two dict keys that are one str, a UTC offset under a second). Never a silent change. No
Redis needed.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import math
import operator
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from fastapi_opinionated_eventbus import EventSerializationError
from fastapi_opinionated_eventbus._codec import Codec, TypeRegistry
from fastapi_opinionated_eventbus._core.envelope import EventEnvelope


class Color(enum.Enum):
    RED = "red"
    PAIR = (1, "two")


class Mood(enum.StrEnum):
    HAPPY = "happy"
    SAD = "sad"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2**70


class Perm(enum.Flag):
    R = 4
    W = 2
    X = 1


class Tag(str):
    def __str__(self) -> str:  # what str() says is not the data
        return "not the data"


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
    when: datetime | None = None
    amount: Decimal | None = None


registry = TypeRegistry()
for _cls in (Color, Mood, Level, Perm, Reading, MaybeReading, Series):
    registry.register(_cls)
codec = Codec(lambda name: None, registry)


def _zones() -> list[tzinfo]:
    zones: list[tzinfo] = [UTC, timezone(timedelta(hours=-3, minutes=-30))]
    for key in ("Europe/Oslo", "America/New_York", "Australia/Lord_Howe"):
        with contextlib.suppress(zoneinfo.ZoneInfoNotFoundError):  # no time zone data
            zones.append(zoneinfo.ZoneInfo(key))
    return zones


offsets = st.timedeltas(min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23))
zones = st.sampled_from(_zones()) | st.builds(timezone, offsets)

floats = st.floats(allow_nan=True, allow_infinity=True)
texts = (
    st.text(max_size=8)
    | st.text(st.characters(exclude_categories=()), max_size=3)  # surrogates too, rarely
    | st.sampled_from(["\udc80", "a.\ud800b"])
)
decimals = st.decimals(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [Decimal("-0"), Decimal("1E+5"), Decimal("-NaN123"), Decimal("sNaN"), Decimal("0.100")]
)


@dataclass(frozen=True)
class Later:
    """A value built in the test, not drawn: hypothesis 6.170 re-encodes drawn values by
    type and fails on a str or int subclass (KeyError), so those are drawn as recipes."""

    make: Callable[[Any], Any]
    arg: Any


def built(value: Any) -> Any:
    if isinstance(value, Later):
        return value.make(value.arg)
    if isinstance(value, list | tuple):
        return type(value)(built(v) for v in value)
    if isinstance(value, dict):
        return {built(k): built(v) for k, v in value.items()}
    return value


def _member(i: int) -> enum.Enum:
    members: list[enum.Enum] = [*Color, *Mood, *Level]
    return members[i]


def _flag(chosen: list[Perm]) -> Perm:
    return functools.reduce(operator.or_, chosen, Perm(0))


members = st.builds(Later, st.just(_member), st.integers(0, 5))
moods = st.builds(Later, st.just(_member), st.integers(2, 3))
tags = st.builds(Later, st.just(Tag), texts)
flags = st.builds(Later, st.just(_flag), st.lists(st.sampled_from(list(Perm)), max_size=3))
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | floats
    | st.sampled_from([0.0, -0.0, math.inf, -math.inf, math.nan])
    | texts
    | tags
    | st.datetimes(timezones=st.none() | zones, allow_imaginary=True)
    | st.dates()
    | st.times(timezones=st.none() | zones)
    | st.uuids()
    | decimals
    | members
    | flags
)
readings = st.builds(Reading, f=floats)
maybe_readings = st.builds(MaybeReading, f=st.none() | floats)
series = st.builds(
    Series,
    first=readings,
    values=st.lists(floats, max_size=4),
    by_name=st.dictionaries(st.text(max_size=4), floats, max_size=3),
    Peak=floats,
    maybe=st.none() | maybe_readings,
    when=st.none() | st.datetimes(timezones=st.just(UTC)),
    amount=st.none() | st.decimals(allow_nan=False, allow_infinity=False),
)
models = readings | maybe_readings | series
keys = st.text(max_size=6) | st.just("$eb") | moods | tags
values = st.recursive(
    scalars | models,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(keys, inner, max_size=4)
    ),
    max_leaves=12,
)


# ---------------------------------------------------------------- the documented form
def expected(value: Any) -> Any:
    """``value`` as the consuming side gets it back (the README's conversions)."""
    if isinstance(value, enum.Enum | BaseModel):  # registered: rebuilt as themselves
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, datetime):
        offset = value.utcoffset()
        fixed = None if offset is None else timezone(offset)
        return value.replace(tzinfo=fixed, fold=0)  # only the UTC offset survives
    if isinstance(value, time):
        offset = value.utcoffset()
        return value.replace(tzinfo=None if offset is None else timezone(offset), fold=0)
    if isinstance(value, tuple):
        return tuple(expected(v) for v in value)
    if isinstance(value, list):
        return [expected(v) for v in value]
    if isinstance(value, dict):
        return {str.__str__(k): expected(v) for k, v in value.items()}
    return value


def same(got: Any, want: Any) -> bool:
    """Equal, of the same type, nan equal to nan, -0.0 not equal to 0.0."""
    if type(got) is not type(want):
        return False
    if isinstance(want, float):
        if math.isnan(want):
            return math.isnan(got)
        return got == want and math.copysign(1, got) == math.copysign(1, want)
    if isinstance(want, Decimal):
        return bool(got.compare_total(want) == 0)  # exact: NaN payloads, -0, exponents
    if isinstance(want, datetime | time):
        return bool(got == want and got.utcoffset() == want.utcoffset() and got.fold == want.fold)
    if isinstance(want, enum.Enum):
        return got is want
    if isinstance(want, BaseModel):  # Pydantic's JSON: the same conversions (fold, zone)
        return same(dict(got), {field: expected(v) for field, v in want})
    if isinstance(want, list | tuple):
        return len(got) == len(want) and all(map(same, got, want))
    if isinstance(want, dict):
        return list(got) == list(want) and all(same(got[k], want[k]) for k in want)
    return bool(got == want)


def may_be_refused(value: Any) -> bool:
    """Only values that cannot travel: a lone surrogate, dict keys that are one str, a UTC
    offset under a second (Python 3.12 reads it back as UTC)."""
    if isinstance(value, str):
        return any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, datetime | time):
        offset = value.utcoffset()
        return offset is not None and timedelta(0) < abs(offset) < timedelta(seconds=1)
    if isinstance(value, list | tuple):
        return any(may_be_refused(v) for v in value)
    if isinstance(value, dict):
        plain = [str.__str__(k) for k in value]
        return len(set(plain)) < len(plain) or any(map(may_be_refused, [*value, *value.values()]))
    return False


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(args=st.lists(values, max_size=3), kwargs=st.dictionaries(st.text(max_size=5), values))
def test_every_value_arrives_unchanged_or_is_refused(
    args: list[Any], kwargs: dict[str, Any]
) -> None:
    args, kwargs = built(args), built(kwargs)
    envelope = EventEnvelope("thing.happened", tuple(args), kwargs)
    try:
        fields = codec.encode(envelope)
    except EventSerializationError:
        assert may_be_refused(args) or may_be_refused(kwargs)
        return
    decoded = codec.decode(fields)
    assert same(list(decoded.args), expected(args))
    assert same(decoded.kwargs, expected(kwargs))


def test_the_documented_forms_hold_for_a_zoneinfo_datetime() -> None:
    """The UTC offset survives, the zone does not; in a repeated hour the fold is lost."""
    try:
        oslo = zoneinfo.ZoneInfo("Europe/Oslo")
    except zoneinfo.ZoneInfoNotFoundError:
        pytest.skip("no time zone data on this machine")
    late = datetime(2024, 10, 27, 2, 30, fold=1, tzinfo=oslo)  # the second 02:30
    (got,) = codec.decode(codec.encode(EventEnvelope("a.b", (late,), {}))).args
    assert got.tzinfo == timezone(timedelta(hours=1)) and got.utcoffset() == late.utcoffset()
    assert got.timestamp() == late.timestamp()
    assert got != late  # an inter-zone comparison in a fold is always unequal (PEP 495)
    assert same(got, expected(late)) and date(2024, 10, 27) == got.date()
