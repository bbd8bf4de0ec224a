"""The model and enum types a consuming process may rebuild, by a stable name.

A type is never imported from a name found in a message: only types this process
registered (:func:`register_type`), or named in a subscribed handler's annotations, are
rebuilt.
"""

from __future__ import annotations

import typing
import weakref
from collections.abc import Callable, Iterator
from enum import Enum
from typing import Any

from pydantic import BaseModel

__all__ = ["TypeRegistry", "known_types", "register_type", "stable_name"]


def stable_name(cls: type) -> str:
    """The name a model or enum type travels under: ``module:qualname``."""
    return f"{cls.__module__}:{cls.__qualname__}"


class TypeRegistry:
    """Model and enum types the consuming side may rebuild, keyed by a stable name."""

    def __init__(self) -> None:
        self._by_name: dict[str, type] = {}
        # Weak: apps rebuilt in one process (tests) re-create their classes.
        self._names: weakref.WeakKeyDictionary[type, str] = weakref.WeakKeyDictionary()

    def register(self, cls: type, name: str | None = None) -> None:
        if not (isinstance(cls, type) and issubclass(cls, BaseModel | Enum)):
            raise TypeError(f"only pydantic models and enums can be registered, got {cls!r}")
        key = name or stable_name(cls)
        self._by_name[key] = cls
        self._names[cls] = key

    def name_of(self, cls: type) -> str:
        return self._names.get(cls) or stable_name(cls)

    def get(self, name: str) -> type | None:
        return self._by_name.get(name)

    def register_annotations(self, handler: Callable[..., Any]) -> None:
        """Register the models and enums named in ``handler``'s annotations.

        They are types the consuming app imported itself, which is what makes rebuilding
        them safe. Annotations that cannot be resolved are skipped.
        """
        try:
            hints = typing.get_type_hints(handler)
        except Exception:  # forward references, a callable object, ...
            return
        for hint in hints.values():
            for cls in _types_in(hint):
                if cls not in self._names:
                    self.register(cls)


def _types_in(hint: Any) -> Iterator[type]:
    """Models and enums in an annotation, including inside ``list[...]``, ``X | None``."""
    if isinstance(hint, type) and issubclass(hint, BaseModel | Enum):
        yield hint
    for arg in typing.get_args(hint):
        yield from _types_in(arg)


known_types = TypeRegistry()
"""The process-wide registry of model and enum types (see :func:`register_type`)."""


def register_type(cls: type, name: str | None = None) -> None:
    """Let events carry ``cls`` (a Pydantic model or an Enum) between processes.

    Needed only for models and enums that are neither an event's schema nor named in a
    subscribed handler's annotations. ``name`` defaults to ``module:qualname``; give one
    when the producing and the consuming code import the type under different modules.
    """
    known_types.register(cls, name)
