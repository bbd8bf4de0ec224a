"""Where one app's events live in Redis: three keys sharing a Redis Cluster hash tag."""

from __future__ import annotations

from dataclasses import dataclass

from ..._core.errors import ConfigurationError
from ..naming import default_prefix

__all__ = ["StreamKeys", "default_prefix"]


@dataclass(frozen=True, slots=True)
class StreamKeys:
    """``{prefix}:events`` and friends: the braces are a Redis Cluster hash tag, so every
    key of an app lands in one slot and a pipeline may touch them all."""

    prefix: str

    def __post_init__(self) -> None:
        if not self.prefix or "{" in self.prefix or "}" in self.prefix:
            raise ConfigurationError(
                f"redis_prefix must be a non-empty string without braces, got {self.prefix!r}"
            )

    @property
    def events(self) -> str:
        """The events stream, read by the app's consumer group and by broadcast readers."""
        return f"{{{self.prefix}}}:events"

    @property
    def dead(self) -> str:
        """The dead-letter stream."""
        return f"{{{self.prefix}}}:dead"
