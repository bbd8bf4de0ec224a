"""Check the example's activity: was every event handled exactly once by each handler?

    curl -s localhost:8000/users/activity | python check_activity.py -   # one process
    python check_activity.py /tmp/activity.jsonl     # the log several workers share (Redis, Kafka)

Each record names the event it handled (``event_id``), so this checks by id, not by
counting lines: an event handled twice by one handler, or missing one of its handlers,
is named. Exit code 0 when every event was handled exactly once by each of its handlers,
1 otherwise. (Across processes the bus delivers at least once: after a crash an event may
legitimately run twice; this is how you would see it.)
"""

from __future__ import annotations

import json
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

# The example's handlers, by the event they handle (app/domains/user/handlers.py).
HANDLERS = {"user.created": {"welcome", "audit"}, "payment.processed": {"payment"}}


def read(source: str) -> list[dict[str, Any]]:
    """Records from a JSON-lines file, or a JSON list (GET /users/activity) on stdin."""
    text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        records: list[dict[str, Any]] = json.loads(text)
        return records
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def problems(records: list[dict[str, Any]]) -> list[str]:
    kinds: dict[str, Counter[str]] = defaultdict(Counter)
    names: dict[str, str] = {}
    for record in records:
        kinds[record["event_id"]][record["kind"]] += 1
        names[record["event_id"]] = record["event"]
    found = []
    for event_id, counts in kinds.items():
        name = names[event_id]
        for kind, count in sorted(counts.items()):
            if count > 1:
                found.append(f"{name} {event_id}: handled {count} times by {kind}")
        for kind in sorted(HANDLERS.get(name, set()) - set(counts)):
            found.append(f"{name} {event_id}: never handled by {kind}")
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    records = read(argv[0])
    found = problems(records)
    for problem in found:
        print(problem)
    events = len({record["event_id"] for record in records})
    processes = len({record["pid"] for record in records})
    if found:
        print(f"{len(found)} problem(s) in {events} event(s)")
        return 1
    print(
        f"{events} event(s), each handled exactly once by each of its handlers, "
        f"in {processes} process(es)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
