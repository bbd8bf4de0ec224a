"""What the broker backends (Redis, Kafka) do alike around publishing."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .._codec import known_types
from .._core.errors import BackendUnavailable, EventSerializationError
from .base import BackendPort

if TYPE_CHECKING:
    from .._core.envelope import EventEnvelope

__all__ = ["encode_batch", "not_started", "register_handler_types"]


def register_handler_types(port: BackendPort) -> None:
    """Models and enums named in handlers' annotations may be rebuilt from events."""
    for sub in port.subscriptions():
        known_types.register_annotations(sub.handler)


def encode_batch[T](
    batch: Sequence[tuple[EventEnvelope, Any]], encode: Callable[[EventEnvelope], T]
) -> list[T]:
    """Every event of a batch encoded before anything is sent; an error names the item."""
    encoded = []
    for index, (envelope, _) in enumerate(batch):
        try:
            encoded.append(encode(envelope))
        except EventSerializationError as exc:
            raise EventSerializationError(f"event {index} of the batch: {exc}") from None
    return encoded


def not_started(backend: str, envelope: EventEnvelope | None = None) -> BackendUnavailable:
    """The error of publishing (``envelope``) or reading dead letters before start.

    ``backend`` names it without secrets, e.g. ``"the Kafka backend (host:9092)"``.
    """
    if envelope is None and backend:
        return BackendUnavailable(f"{backend} is not started: start the bus first")
    what = f"{envelope.name!r}" if envelope is not None else "events"
    return BackendUnavailable(
        f"cannot publish {what}: {backend} is not started; start the bus first "
        "(`await bus.start()`, which the plugin does at app startup)"
    )
