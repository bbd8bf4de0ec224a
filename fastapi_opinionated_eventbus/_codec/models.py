"""The JSON of a Pydantic model, with its non-finite floats kept.

Pydantic's JSON mode writes ``inf``, ``-inf`` and ``nan`` as ``null`` (unless the model's
config says otherwise), and that cannot be undone on the consuming side: a ``float``
field then fails validation, a ``float | None`` field silently becomes ``None``. The codec
writes them as the ``Infinity``/``NaN`` constants instead, which Python's json and
Pydantic's JSON parser both read back as the same float.

Pydantic has no per-call switch for this, so the floats are put back afterwards: the
Python-mode dump of the same model (which keeps floats as they are) is walked beside
the JSON and each non-finite float goes where the JSON has ``null``. A float that cannot
be placed with certainty (a custom serializer reshaped its field), or that the model
would refuse on validation (``allow_inf_nan=False``), is refused by :class:`NotCarried`.
"""

from __future__ import annotations

import json
import math
from typing import Any

from pydantic import BaseModel, ValidationError

__all__ = ["NotCarried", "dump_model"]

Path = list[str | int]


class NotCarried(Exception):
    """A non-finite float that cannot travel faithfully; ``path`` leads to it in the model."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(problem)
        self.path = path
        self.problem = problem


def dump_model(model: BaseModel) -> str:
    """``model``'s JSON, with non-finite floats as JSON constants; raises NotCarried.

    Pydantic's own errors (a value it cannot serialize) propagate.
    """
    dumped = model.model_dump_json(by_alias=True, round_trip=True, exclude_computed_fields=True)
    if "null" not in dumped:
        return dumped  # no null, so no float written as one: the common case costs a scan
    # Optional fields left None are common; a float is never None, so without them a
    # non-finite float would still show as null. Cheaper than walking the Python dump.
    if "null" not in model.model_dump_json(round_trip=True, exclude_none=True):
        return dumped
    python = model.model_dump(by_alias=True, round_trip=True, exclude_computed_fields=True)
    if _non_finite(python) is None:
        return dumped
    restored = _restore(python, json.loads(dumped), [])
    text = json.dumps(restored, ensure_ascii=False, separators=(",", ":"))
    _check_accepted(model, text)
    return text


def _restore(python: Any, written: Any, path: Path) -> Any:
    """``written`` (the parsed JSON) with the non-finite floats of ``python`` where it
    has null. Containers are paired by position: a dump keeps the order of both."""
    if written is None and isinstance(python, float) and not math.isfinite(python):
        return python
    if isinstance(python, dict) and isinstance(written, dict):
        if len(python) != len(written):
            return _unplaced(python, written, path)
        return {
            key: _restore(value, item, [*path, key])
            for value, (key, item) in zip(python.values(), written.items(), strict=True)
        }
    if isinstance(python, list | tuple) and isinstance(written, list):
        if len(python) != len(written):
            return _unplaced(python, written, path)
        return [
            _restore(value, item, [*path, i])
            for i, (value, item) in enumerate(zip(python, written, strict=True))
        ]
    return _unplaced(python, written, path)


def _unplaced(python: Any, written: Any, path: Path) -> Any:
    """``written`` where it is not shaped like ``python``: fine unless it hides a float."""
    # A null-free form is the model's own choice (a serializer, ser_json_inf_nan="strings").
    value = _non_finite(python)
    if value is not None and _has_null(written):
        # Reshaped by a serializer, or a set (its dump is a copy, maybe in another order):
        # which null was which float is unknowable.
        how = "in a set" if isinstance(python, set | frozenset) else "through a custom serializer"
        raise NotCarried(
            path,
            f"holds the non-finite float {value!r}, which its model writes to JSON as null "
            f"{how}, so it cannot be sent unchanged",
        )
    return written


def _check_accepted(model: BaseModel, text: str) -> None:
    """Refuse what the consuming side would refuse: a model (or field) with
    ``allow_inf_nan=False`` can still hold inf if it was assigned without validation."""
    try:
        type(model).model_validate_json(text)
    except ValidationError as exc:
        for error in exc.errors():
            if error["type"] == "finite_number":
                raise NotCarried(
                    list(error["loc"]),
                    f"holds the non-finite float {error['input']!r}, which "
                    f"{type(model).__qualname__} does not accept (allow_inf_nan=False)",
                ) from None
        # Any other error is not about what the codec changed: the consumer reports it.


def _non_finite(value: Any) -> float | None:
    """A non-finite float in ``value`` (a Python-mode dump), or None."""
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                return item
        elif isinstance(item, dict):
            todo.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            todo.extend(item)
    return None


def _has_null(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, dict):
        return any(_has_null(v) for v in value.values())
    return isinstance(value, list) and any(_has_null(v) for v in value)
