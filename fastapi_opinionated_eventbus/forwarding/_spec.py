"""``Forward``: one forwarding subscription as a value (the plugin option, declarations)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypedDict

from pydantic import BaseModel

from .._core.registry import check_subscription_options
from .._core.retry import RetryPolicy
from ._protocol import Forwarder, check_forwarder

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_MAX_WAIT",
    "DEFAULT_SEND_TIMEOUT",
    "FORWARD_RETRY",
    "Forward",
    "ForwardOptions",
    "as_forwards",
]

DEFAULT_BATCH_SIZE = 10
DEFAULT_MAX_WAIT = 0.05
DEFAULT_SEND_TIMEOUT = 30.0
FORWARD_RETRY = RetryPolicy(max_attempts=3, initial_delay=0.5, max_delay=10.0)
"""A forwarder's retry policy when neither ``forward(retry=...)`` nor the plugin's
``retry`` option gives one: a remote queue fails transiently, unlike in-process code."""


class ForwardOptions(TypedDict, total=False):
    """The keyword options of ``forward()``, ``forward_events()`` and ``Forward``."""

    priority: int
    retry: RetryPolicy | None
    timeout: float | None
    batch_size: int
    max_wait: float
    concurrency: int | None
    send_timeout: float


@dataclass(frozen=True, slots=True)
class Forward:
    """Forward the events ``event`` matches (a name, a pattern or a typed event class)
    through ``forwarder``, with subscription options (``priority``, ``retry``,
    ``timeout``: as for handlers) and batching options:

    - ``batch_size`` (10): the most events one ``send_many`` call gets;
    - ``max_wait`` (0.05 s): the longest an event waits for its batch to fill;
    - ``concurrency`` (4, or 1 for an ``ordered`` forwarder such as a FIFO queue's):
      batches in flight at once;
    - ``send_timeout`` (30 s): a batch not accepted by then has failed.
    """

    event: str | type[BaseModel]
    forwarder: Forwarder
    priority: int = 0
    retry: RetryPolicy | None = None
    timeout: float | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    max_wait: float = DEFAULT_MAX_WAIT
    concurrency: int | None = None
    send_timeout: float = DEFAULT_SEND_TIMEOUT

    def __post_init__(self) -> None:
        check_subscription_options(
            self.event, priority=self.priority, retry=self.retry, timeout=self.timeout
        )
        check_forwarder(self.forwarder)
        _check_count("batch_size", self.batch_size, most=10_000)
        if self.concurrency is not None:
            _check_count("concurrency", self.concurrency, most=1_000)
        _check_seconds("max_wait", self.max_wait, zero=True)
        _check_seconds("send_timeout", self.send_timeout, zero=False)

    @property
    def batches_in_flight(self) -> int:
        if self.concurrency is not None:
            return self.concurrency
        return 1 if getattr(self.forwarder, "ordered", False) is True else 4


def _check_count(option: str, value: object, *, most: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{option} must be an int, got {value!r}")
    if not 1 <= value <= most:
        raise ValueError(f"{option} must be between 1 and {most}, got {value!r}")


def _check_seconds(option: str, value: object, *, zero: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{option} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero) or value > 3600:
        bound = ">= 0" if zero else "> 0"
        raise ValueError(f"{option} must be {bound} and at most 3600 seconds, got {value!r}")


def as_forwards(value: Any) -> tuple[Forward, ...]:
    """The plugin option ``forward``: ``Forward`` objects or ``(event, forwarder)`` pairs."""
    if isinstance(value, str | bytes):
        raise ValueError(
            "forwarders are objects built in code: pass forward=[Forward('order.*', "
            "SQSForwarder(...)), ...] to App.configurePlugin (it cannot come from an "
            "environment variable)"
        )
    if isinstance(value, Forward):
        value = [value]
    if not isinstance(value, Iterable):
        raise ValueError(f"must be a list of Forward(...) or (event, forwarder) pairs: {value!r}")
    forwards: list[Forward] = []
    for index, item in enumerate(value):
        try:
            if isinstance(item, Forward):
                forwards.append(item)
            elif isinstance(item, tuple) and len(item) == 2:
                forwards.append(Forward(item[0], item[1]))
            else:
                raise TypeError(f"expected Forward(...) or an (event, forwarder) pair: {item!r}")
        except (TypeError, ValueError) as exc:
            raise ValueError(f"item {index}: {exc}") from None
    return tuple(forwards)
