"""What a forwarder is: an object that sends a batch of events to another service."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from .._core.envelope import EventEnvelope
from .._core.errors import ConfigurationError
from .._text import loggable

__all__ = ["Forwarder", "check_forwarder", "forwarder_name", "require_extra"]


@runtime_checkable
class Forwarder(Protocol):
    """Sends events to another service (a queue, a webhook, a partner's API).

    One method is required::

        async def send_many(self, envelopes: Sequence[EventEnvelope]) -> None

    It returns once the other side **accepted** every event of the batch (it may then
    be acknowledged), and raises otherwise: any exception fails the whole batch, and
    :class:`~fastapi_opinionated_eventbus.forwarding.PartialBatchFailure` ``({event_id:
    reason})`` fails only the events it names (the others count as accepted and are not
    sent again). Each failed event is retried in a later batch per the subscription's
    retry policy, then dead-lettered with the reason. Batches are at most the
    subscription's ``batch_size``; up to ``concurrency`` run at once.

    Optional members, used when present:

    - ``name: str``: how logs, dead letters, metrics and the introspection endpoint name
      the forwarder (default: its class name). Never put a secret in it.
    - ``ordered: bool``: True makes ``concurrency`` default to 1, so that batches leave
      one after another (a FIFO queue); otherwise it defaults to 4.
    - ``async def aclose(self) -> None``: release connections; called once at shutdown,
      after the last batch. A forwarder used again afterwards (the app restarted) must
      reconnect by itself.

    Exceptions it raises end up in logs and dead letters: never put a credential in
    their messages.
    """

    async def send_many(self, envelopes: Sequence[EventEnvelope]) -> None: ...


def check_forwarder(forwarder: object) -> Forwarder:
    """Refuse what cannot forward, saying what is missing."""
    send_many = getattr(forwarder, "send_many", None)
    if send_many is None or not callable(send_many):
        raise TypeError(
            f"a forwarder needs an `async def send_many(self, envelopes)` method; "
            f"{type(forwarder).__qualname__} has none"
        )
    if not inspect.iscoroutinefunction(send_many):
        raise TypeError(
            f"{type(forwarder).__qualname__}.send_many must be an async def (it is awaited "
            "for every batch)"
        )
    assert isinstance(forwarder, Forwarder)
    return forwarder


def forwarder_name(forwarder: Forwarder) -> str:
    """The forwarder's own ``name``, or its class name; one printable line."""
    name = getattr(forwarder, "name", None)
    if not isinstance(name, str) or not name:
        name = type(forwarder).__qualname__
    return loggable(name, 120)


def require_extra(module: str, extra: str, forwarder: str) -> None:
    """Refuse to build ``forwarder`` when the client library of its extra is missing."""
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise ConfigurationError(
            f"{forwarder} needs the {extra} extra: pip install "
            f"'fastapi-opinionated-eventbus[{extra}]' ({exc})"
        ) from None
