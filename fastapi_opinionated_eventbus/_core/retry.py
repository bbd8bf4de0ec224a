"""Retry policies for failing handlers."""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["RetryPolicy"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often, and how patiently, to re-run a failing handler.

    Only the failing handler is retried; handlers that succeeded run once. The delay before
    attempt ``n + 1`` is ``initial_delay * backoff_factor ** (n - 1)``, capped at
    ``max_delay``, then spread by up to ``jitter`` (a fraction: 0.1 means +-10%).

    .. versionadded:: 0.2.0
    """

    max_attempts: int = 3
    initial_delay: float = 0.1
    backoff_factor: float = 2.0
    max_delay: float = 30.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise TypeError("RetryPolicy.max_attempts must be an int")
        if self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts must be >= 1 (1 means no retry)")
        for field in ("initial_delay", "max_delay", "jitter"):
            if getattr(self, field) < 0:
                raise ValueError(f"RetryPolicy.{field} must be >= 0")
        if self.backoff_factor < 1:
            raise ValueError("RetryPolicy.backoff_factor must be >= 1")
        if self.jitter > 1:
            raise ValueError("RetryPolicy.jitter is a fraction and must be <= 1")

    def delay_before(self, attempt: int) -> float:
        """Seconds to wait before ``attempt`` (2 for the first retry)."""
        base = min(self.initial_delay * self.backoff_factor ** (attempt - 2), self.max_delay)
        if self.jitter:
            base *= 1 + random.uniform(-self.jitter, self.jitter)
        return max(base, 0.0)
