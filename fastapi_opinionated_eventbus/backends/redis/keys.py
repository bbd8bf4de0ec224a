"""Where one app's events live in Redis: three keys sharing a Redis Cluster hash tag."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..._core.errors import ConfigurationError

__all__ = ["StreamKeys", "default_prefix"]

_NOT_SLUG = re.compile(r"[^a-z0-9]+")


def default_prefix(title: str) -> str:
    """The key prefix of an app titled ``title``: ``"Orders API"`` -> ``"orders-api"``.

    Two apps on one Redis keep apart as long as their titles differ; set the
    ``redis_prefix`` option when they do not (e.g. both keep FastAPI's default title).
    """
    return _NOT_SLUG.sub("-", title.lower()).strip("-") or "eventbus"


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
