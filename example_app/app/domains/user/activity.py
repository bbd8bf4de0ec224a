"""What the handlers did, kept in memory so GET /users/activity can show it.

Every record names the event it handled (``event``, ``event_id``, ``attempt``) and the
process that handled it (``pid``), so "each event handled once by each handler" can be
checked by id (``python check_activity.py``), not merely by counting lines.

With several workers (a broker backend: Redis or Kafka), each process only sees what its
own handlers did; set EXAMPLE_ACTIVITY_LOG=<file> to also append every record to one
JSON-lines file shared by all workers.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

from fastapi_opinionated_eventbus import current_event

_lock = threading.Lock()  # the sync handler writes from a worker thread
_entries: list[dict[str, Any]] = []


def record(kind: str, **details: Any) -> None:
    """Record what a handler did; called from inside the handler, which names the event."""
    event = current_event()
    entry = {
        "kind": kind,
        "event": event.name,
        "event_id": event.id,
        "attempt": event.attempt,
        "pid": os.getpid(),
        **details,
    }
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
