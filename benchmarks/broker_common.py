"""What the broker benchmarks (Redis, Kafka) share: percentiles, result lines, shares,
and the interleaved rounds of ours against two floors."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
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


Figures = dict[str, Any]


def interleaved(
    rounds: int,
    floor: Callable[[], Figures],
    ours: Callable[[], Figures],
    other_floor: Callable[[], Figures],
    other_name: str,
) -> Figures:
    """Run the floor, ours and the other floor in turn ``rounds`` times (so a noisy moment
    hurts them alike) and compare the best round of each; ``other_name`` names the other
    floor in the keys (``"pipelined"`` gives ``pipelined_floor_events_per_s``, ...)."""
    other = f"{other_name}_floor"
    runs: dict[str, list[Figures]] = {"floor": [], "ours": [], other: []}
    for _ in range(rounds):
        for name, measure in (("floor", floor), ("ours", ours), (other, other_floor)):
            runs[name].append(measure())
    best = {name: max(found, key=lambda f: f["events_per_s"]) for name, found in runs.items()}
    mine = best["ours"]["events_per_s"]
    # CPU per event of each process, in each best round (where the roles measure it).
    cpu = {
        name: {"producer": f["producer_cpu_us"], "consumer": f["consumer_cpu_us"]}
        for name, f in best.items()
        if "producer_cpu_us" in f
    }
    return {
        **({"cpu_us_per_event": cpu} if cpu else {}),
        "rounds": rounds,
        "ours_events_per_s": mine,
        "floor_events_per_s": best["floor"]["events_per_s"],
        f"{other}_events_per_s": best[other]["events_per_s"],
        "ratio_to_floor": mine / best["floor"]["events_per_s"],
        f"ratio_to_{other}": mine / best[other]["events_per_s"],
        "emit_latency_us": best["ours"]["sequential"],
        "emit_latency_under_load_us": best["ours"]["loaded"],
        "all_rounds_events_per_s": {
            name: [round(f["events_per_s"]) for f in found] for name, found in runs.items()
        },
    }
