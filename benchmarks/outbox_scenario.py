"""Scenarios 9-11: the transactional outbox on PostgreSQL (benchmarks.outbox_bench).

One run of :func:`benchmarks.outbox_bench.run`, on a private durable PostgreSQL cluster,
gives every row: the cost of ``outbox(session).emit`` against a plain INSERT of the same
row (9), commit-to-handler latency (10) and the throughput of two relay processes (11).
"""

from __future__ import annotations

from typing import Any

from benchmarks.harness import ERROR, FAILED, OK, UNSUPPORTED, Settings

COST, LATENCY, THROUGHPUT = "9", "10", "11"
INSERT = "plain-insert"
OURS = "ours"
LABELS = {
    INSERT: "floor: plain INSERT of the same row",
    OURS: "ours",
}


def _row(scenario: str, system: str, status: str, **kw: Any) -> dict[str, Any]:
    role = "floor" if system == INSERT else "ours"
    return {
        "scenario": scenario,
        "system": system,
        "label": LABELS[system],
        "role": role,
        "status": status,
        **kw,
    }


def measure(scenarios: list[str], settings: Settings) -> list[dict[str, Any]]:
    """One row (as Result keyword arguments) per system of the selected outbox scenarios."""
    wanted = [(COST, INSERT), (COST, OURS), (LATENCY, OURS), (THROUGHPUT, OURS)]
    wanted = [(sid, system) for sid, system in wanted if sid in scenarios]
    from benchmarks import outbox_bench

    try:
        figures = outbox_bench.run(settings.quick)
    except FileNotFoundError as exc:
        return [_row(sid, system, UNSUPPORTED, detail=str(exc)) for sid, system in wanted]
    except outbox_bench.VerificationFailed as exc:
        return [_row(sid, system, FAILED, detail=str(exc)) for sid, system in wanted]
    except Exception as exc:
        detail = " ".join(f"{type(exc).__name__}: {str(exc).strip()[-400:]}".split())
        return [_row(sid, system, ERROR, detail=detail) for sid, system in wanted]
    return [_figures_row(sid, system, figures) for sid, system in wanted]


def _figures_row(sid: str, system: str, figures: dict[str, Any]) -> dict[str, Any]:
    if sid == COST:
        cost = figures["emit_cost"]
        key = "insert" if system == INSERT else "emit"
        note = (
            f"{int(cost['ops'])} per transaction on asyncpg, rolled back; same session"
            if system == INSERT
            else "validate, encode (JSON codec), INSERT, arm the commit's wake-up"
        )
        return _row(
            sid,
            system,
            OK,
            median=cost[f"{key}_us"],
            min=cost[f"{key}_min_us"],
            n=int(cost["ops"]),
            reps=int(cost["rounds"]),
            note=note,
            extra={"ratio": cost["ratio"]} if system == OURS else {},
        )
    if sid == LATENCY:
        lat = figures["latency"]
        return _row(
            sid,
            system,
            OK,
            median=lat["p50_us"],
            min=lat["min_us"],
            n=int(lat["events"]),
            reps=1,
            note=(
                f"p50 (median column) {lat['p50_us']:,.0f} µs, p99 {lat['p99_us']:,.0f} µs; "
                "one event per transaction, relay woken by the commit"
            ),
            extra={"p50_us": lat["p50_us"], "p99_us": lat["p99_us"]},
        )
    put = figures["throughput"]
    return _row(
        sid,
        system,
        OK,
        median=1e6 / put["events_per_s"],
        min=1e6 / put["events_per_s"],
        n=int(put["events"]),
        reps=1,
        note=(
            f"{put['events_per_s']:,.0f} events/s: {int(put['events']):,} rows committed at "
            f"once, {int(put['relays'])} relay processes, one async handler each, until the "
            "table is empty"
        ),
        extra={"events_per_s": put["events_per_s"]},
    )
