"""What the handlers did, kept in memory so GET /users/activity can show it."""

from __future__ import annotations

import threading
from typing import Any

_lock = threading.Lock()  # the sync handler writes from a worker thread
_entries: list[dict[str, Any]] = []


def record(kind: str, **details: Any) -> None:
    with _lock:
        _entries.append({"kind": kind, **details})


def entries() -> list[dict[str, Any]]:
    with _lock:
        return list(_entries)
