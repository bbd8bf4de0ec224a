"""What the handlers did, kept in memory so GET /users/activity can show it.

With several workers (a broker backend: Redis or Kafka), each process only sees what its
own handlers did; set EXAMPLE_ACTIVITY_LOG=<file> to also append every record, with its
process id, to one JSON-lines file shared by all workers.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

_lock = threading.Lock()  # the sync handler writes from a worker thread
_entries: list[dict[str, Any]] = []


def record(kind: str, **details: Any) -> None:
    entry = {"kind": kind, "pid": os.getpid(), **details}
    with _lock:
        _entries.append(entry)
        log = os.environ.get("EXAMPLE_ACTIVITY_LOG")
        if log:
            # One short line per O_APPEND write: processes do not interleave them.
            with open(log, "a", encoding="utf-8") as out:
                out.write(json.dumps(entry) + "\n")


def entries() -> list[dict[str, Any]]:
    with _lock:
        return list(_entries)
