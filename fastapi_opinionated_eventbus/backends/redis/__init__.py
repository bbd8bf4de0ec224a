"""The Redis Streams backend (``backend="redis"``, the ``[redis]`` extra)."""

from __future__ import annotations

from .backend import RedisHealth, RedisStreamsBackend

__all__ = ["RedisHealth", "RedisStreamsBackend"]
