"""Typed events: Pydantic models that carry their event name."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

__all__ = ["TypedEvent", "event_name_of", "validate_payload"]


class TypedEvent(BaseModel):
    """Base class for an event with a schema::

        class UserCreated(TypedEvent):
            __event_name__ = "user.created"
            id: int
            name: str

        await eventbus_api().emit(UserCreated(id=1, name="Jane"))

    Any ``BaseModel`` with a ``__event_name__`` class attribute works the same; this base
    only adds immutability, since one instance is shared by every handler.

    .. versionadded:: 0.2.0
    """

    model_config = ConfigDict(frozen=True)
    __event_name__: ClassVar[str]


def event_name_of(model: type[BaseModel]) -> str:
    name = getattr(model, "__event_name__", None)
    if not isinstance(name, str) or not name:
        raise TypeError(
            f"{model.__qualname__} is used as a typed event but has no event name: give it "
            f'a class attribute such as `__event_name__: ClassVar[str] = "user.created"`.'
        )
    return name


def validate_payload(
    schema: type[BaseModel], event: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, ...]:
    """Turn an emit's arguments into one validated model instance (raises ValidationError)."""
    if not kwargs and len(args) == 1:
        (payload,) = args
        if isinstance(payload, schema):
            return args
        if isinstance(payload, Mapping):
            return (schema.model_validate(payload),)
    elif kwargs and not args:
        return (schema.model_validate(kwargs),)
    raise TypeError(
        f"Event {event!r} has the schema {schema.__qualname__}: emit one "
        f"{schema.__qualname__} instance, one dict, or its fields as keyword arguments."
    )
