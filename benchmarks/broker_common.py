"""What the broker benchmarks (Redis, Kafka) share: percentiles, result lines, shares."""

from __future__ import annotations

import json
import statistics
from typing import Any

CONCURRENCY = 64


def shares(n: int) -> list[int]:
    """``n`` events split over CONCURRENCY emitters."""
    return [n // CONCURRENCY + (1 if i < n % CONCURRENCY else 0) for i in range(CONCURRENCY)]


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50 and p99 in µs of durations in seconds."""
    if not samples:
        return {"p50_us": 0.0, "p99_us": 0.0}
    ordered = sorted(samples)
    return {
        "p50_us": statistics.median(ordered) * 1e6,
        "p99_us": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e6,
    }


def last_json(out: str) -> dict[str, Any] | None:
    """The JSON object a role printed last (its report), or None."""
    lines = out.strip().splitlines()
    try:
        return dict(json.loads(lines[-1])) if lines else None
    except ValueError:
        return None
