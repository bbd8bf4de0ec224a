"""The performance targets, judged on the results of the same run (no figure is fixed here
except the targets themselves)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from benchmarks.harness import OK
from benchmarks.scenarios import Result

MET = "MET"
MISSED = "MISSED"
NOT_MEASURED = "not measured"


@dataclass
class Target:
    name: str
    goal: str
    measured: str = ""
    verdict: str = NOT_MEASURED
    margin: str = ""
    why: str = ""  # for a miss: the explanation under the table


def _ok(results: list[Result], sid: str, system: str) -> Result | None:
    for r in results:
        if r.scenario == sid and r.system == system and r.status == OK and r.median is not None:
            return r
    return None


def _missing(results: list[Result], sid: str, system: str) -> str:
    for r in results:
        if r.scenario == sid and r.system == system:
            return f"scenario {sid} {r.label}: {r.status}" + (f" ({r.detail})" if r.detail else "")
    return f"scenario {sid} {system}: not run"


def _best_peer(results: list[Result], sid: str) -> Result | None:
    peers = [
        r
        for r in results
        if r.scenario == sid
        and r.role == "peer"
        and r.comparable
        and r.status == OK
        and r.median is not None
        and r.median > 0
    ]
    return min(peers, key=lambda r: r.median or 0.0) if peers else None


def _us(x: float) -> str:
    return f"{x:,.0f} µs" if abs(x) >= 100 else f"{x:.2f} µs"


def _verdict(met: bool) -> str:
    return MET if met else MISSED


# ---------------------------------------------------------------------------- the targets
def one_handler(results: list[Result], cpus: int) -> Target:
    t = Target("one async handler (1)", "best peer's µs / ours' µs ≥ 2")
    ours, best = _ok(results, "1", "ours"), _best_peer(results, "1")
    if ours is None or best is None or not ours.median or not best.median:
        t.measured = _missing(results, "1", "ours") if ours is None else "no peer measured"
        return t
    ratio = best.median / ours.median
    t.measured = f"{best.label} {_us(best.median)} / ours {_us(ours.median)} = {ratio:.2f}x"
    t.verdict = _verdict(ratio >= 2)
    if ratio >= 2:
        t.margin = f"{ratio / 2:.2f}x beyond the target"
    else:
        t.margin = (
            f"short by {2 / ratio:.2f}x: ours would need ≤ {_us(best.median / 2)}, "
            f"is {_us(ours.median)}"
        )
        t.why = (
            "every emit builds an envelope (unique id, timestamp, correlation id) and sets "
            "current_event() for the handler, work blinker's send_async does not do: blinker "
            "gives no event id, no failure isolation and no current_event(); see (1b) for the "
            "instruction accounting"
        )
        if best.system != "blinker":
            t.why = f"missed by {t.margin}"
    return t


def app_call(results: list[Result], cpus: int) -> Target:
    t = Target("one handler, as an app calls it (1b)", "ours ≤ 0.5x blinker, same run")
    ours, blinker = _ok(results, "1b", "ours"), _ok(results, "1b", "blinker")
    if ours is None or blinker is None or not ours.min or not blinker.min:
        t.measured = _missing(results, "1b", "ours" if ours is None else "blinker")
        return t
    ratio = ours.min / blinker.min
    t.measured = f"ours {_us(ours.min)} / blinker {_us(blinker.min)} = {ratio:.2f}x (min of rounds)"
    t.verdict = _verdict(ratio <= 0.5)
    if ratio <= 0.5:
        t.margin = f"{0.5 / ratio:.2f}x beyond the target"
    else:
        t.margin = f"short: ours would need ≤ {_us(blinker.min / 2)}, is {_us(ours.min)}"
        t.why = f"{t.margin}; {APP_CALL_FLOOR}"
    return t


# Counted with callgrind (one emit, PYTHONHASHSEED=0, gc off; see BENCHMARKS.md): the costs
# every emit keeps whatever the bus does, against blinker's whole send_async.
APP_CALL_FLOOR = (
    "counted in CPU instructions per emit (callgrind, Python 3.12.1), blinker's send_async with "
    "one receiver costs about 18,200 and ours about 18,800 (24,000 before step 6c); of ours, "
    "the user's own async def h(*args, **kwargs) coroutine costs about 4,300, the one coroutine "
    "of ours that awaits it about 3,650, eventbus_api() about 640, the envelope (unique id, time, "
    "correlation id) about 2,500 and setting and resetting current_event()'s contextvar about "
    "2,000: about 13,100 instructions, 0.72x blinker, before any lookup or failure isolation, "
    "so 0.5x is out of reach in pure CPython without dropping a promised feature"
)


def ten_handlers(results: list[Result], cpus: int) -> Target:
    t = Target("ten async handlers, concurrent (2)", "best peer's µs / ours' µs > 1")
    ours, best = _ok(results, "2", "ours"), _best_peer(results, "2")
    if ours is None or best is None or not ours.median or not best.median:
        t.measured = _missing(results, "2", "ours") if ours is None else "no peer measured"
        return t
    ratio = best.median / ours.median
    t.measured = f"{best.label} {_us(best.median)} / ours {_us(ours.median)} = {ratio:.2f}x"
    t.verdict = _verdict(ratio > 1)
    if ratio > 1:
        t.margin = f"ours {ratio - 1:.0%} faster"
    else:
        t.margin = f"ours {1 / ratio - 1:.0%} slower ({_us(ours.median - best.median)} per emit)"
        t.why = f"missed by {t.margin}"
    return t


def sync_handler(results: list[Result], cpus: int) -> Target:
    t = Target("sync handler (3)", "ours / bare asyncio.to_thread ≤ 1.3x (median)")
    ours, floor = _ok(results, "3", "ours"), _ok(results, "3", "to-thread")
    if ours is None or floor is None or not floor.median or not floor.min:
        t.measured = _missing(results, "3", "ours" if ours is None else "to-thread")
        return t
    assert ours.median is not None and ours.min is not None
    med, low = ours.median / floor.median, ours.min / floor.min
    t.measured = (
        f"median {med:.2f}x ({_us(ours.median)} / {_us(floor.median)}), "
        f"min {low:.2f}x ({_us(ours.min)} / {_us(floor.min)})"
    )
    t.verdict = _verdict(med <= 1.3)
    if med <= 1.3:
        t.margin = f"{1.3 - med:.2f}x under the limit"
    else:
        t.margin = f"{med - 1.3:.2f}x over the limit (min ratio {low:.2f}x)"
        t.why = (
            f"thread hand-off on {cpus} shared cores varies run to run; compare the min ratio "
            f"({low:.2f}x, {'within' if low <= 1.3 else 'also over'} 1.3x)"
        )
    return t


def crowded(results: list[Result], cpus: int) -> Target:
    t = Target(
        "10,000 subscriptions + 1,000 patterns (4)",
        "ours' scenario 4 / ours' scenario 1 ≤ 1.10",
    )
    four, one = _ok(results, "4", "ours"), _ok(results, "1", "ours")
    if four is None or one is None or not one.median:
        t.measured = _missing(results, "4" if four is None else "1", "ours")
        return t
    assert four.median is not None
    ratio = four.median / one.median
    t.measured = f"{_us(four.median)} / {_us(one.median)} = {ratio:.2f}x ({ratio - 1:+.0%})"
    t.verdict = _verdict(ratio <= 1.10)
    if ratio <= 1.10:
        t.margin = f"{(1.10 - ratio) * 100:.0f} points under the +10% limit"
    else:
        t.margin = f"{(ratio - 1.10) * 100:.0f} points over the +10% limit"
        t.why = f"missed by {t.margin}"
    return t


BACKGROUND_RATE = 600_000  # events/s (step 6c; was 400,000)


def background(results: list[Result], cpus: int) -> Target:
    t = Target(
        "background throughput (5)", "ours ≥ 3x the best peer's events/s, and ≥ 600,000 events/s"
    )
    ours, best = _ok(results, "5", "ours"), _best_peer(results, "5")
    if ours is None or best is None or not ours.median or not best.median:
        t.measured = _missing(results, "5", "ours") if ours is None else "no peer measured"
        return t
    mine, theirs = 1e6 / ours.median, 1e6 / best.median
    ratio = mine / theirs
    t.measured = f"ours {mine:,.0f} events/s, {best.label} {theirs:,.0f} events/s = {ratio:.2f}x"
    fast, enough = ratio >= 3, mine >= BACKGROUND_RATE
    t.verdict = _verdict(fast and enough)
    parts = [
        f"{ratio / 3:.2f}x beyond 3x" if fast else f"short of 3x by {3 / ratio:.2f}x",
        f"{mine - BACKGROUND_RATE:,.0f} events/s above {BACKGROUND_RATE:,}"
        if enough
        else f"{BACKGROUND_RATE - mine:,.0f} events/s short of {BACKGROUND_RATE:,}",
    ]
    t.margin = "; ".join(parts)
    if not (fast and enough):
        t.why = "missed by " + "; ".join(
            p for p, good in zip(parts, (fast, enough), strict=True) if not good
        )
        if not enough:
            t.why += (
                " (409,000 before step 6c): each event still gets its own envelope, its own "
                "copy of the emitter's context (current_event() and the correlation id stay "
                "per event) and runs the user's coroutine, about 22,400 CPU instructions "
                "(callgrind)"
            )
    return t


def after_response(results: list[Result], cpus: int) -> Target:
    t = Target(
        "after-response (6)",
        "fastapi-events' added µs / ours' ≥ 3, and ours ≤ 10 µs per request",
    )
    ours, peer = _ok(results, "6", "ours"), _ok(results, "6", "fastapi-events")
    if ours is None or peer is None or ours.median is None or not peer.median:
        t.measured = _missing(results, "6", "ours" if ours is None else "fastapi-events")
        return t
    mine = ours.median
    ratio = peer.median / mine if mine > 0 else float("inf")
    shown = f"{ratio:.1f}x" if mine > 0 else "ours ≤ 0"
    t.measured = f"fastapi-events {_us(peer.median)} / ours {_us(mine)} = {shown}"
    cheaper, small = ratio >= 3, mine <= 10
    t.verdict = _verdict(cheaper and small)
    parts = [
        f"{ratio / 3:.1f}x beyond 3x" if cheaper else f"short of 3x by {3 / ratio:.2f}x",
        f"{10 - mine:.2f} µs under 10 µs" if small else f"{mine - 10:.2f} µs over 10 µs",
    ]
    if mine <= 0:
        parts[0] = "ours ≤ 0 µs"
    t.margin = "; ".join(parts)
    why = []
    if not small:
        why.append(f"{parts[1]}: the figure includes drain() of the handler work at each block end")
    if not cheaper:
        why.append(f"missed by {parts[0]}")
    t.why = "; ".join(why)
    return t


def redis(results: list[Result], cpus: int) -> Target:
    t = Target(
        "Redis end to end (8)",
        "ours ≥ 70% of the bare redis-py floor's events/s (judged against the stronger floor)",
    )
    ours = _ok(results, "8", "ours")
    floor, piped = _ok(results, "8", "redis-py"), _ok(results, "8", "redis-py-pipelined")
    if ours is None or floor is None or piped is None:
        t.measured = _missing(results, "8", "ours")
        return t
    mine = ours.extra["events_per_s"]
    awaited, pipelined = floor.extra["events_per_s"], piped.extra["events_per_s"]
    r_awaited, r_piped = ours.extra["ratio_to_floor"], ours.extra["ratio_to_pipelined_floor"]
    strong, name = (r_piped, "pipelined") if pipelined >= awaited else (r_awaited, "awaited")
    strong_eps = max(awaited, pipelined)
    t.measured = (
        f"ours {mine:,.0f} events/s = {r_awaited:.0%} of the awaited-XADD floor "
        f"({awaited:,.0f}), {r_piped:.0%} of the pipelined floor ({pipelined:,.0f}); "
        f"judged against the {name} floor, the stronger"
        + (f" (best of {ours.reps} rounds each)" if ours.reps > 1 else " (one round each)")
    )
    t.verdict = _verdict(strong >= 0.70)
    if strong >= 0.70:
        t.margin = f"{(strong - 0.70) * 100:.0f} points above 70%"
    else:
        t.margin = (
            f"{(0.70 - strong) * 100:.0f} points below 70% "
            f"(needs {0.70 * strong_eps:,.0f} events/s)"
        )
        t.why = f"missed by {t.margin}"
    return t


def memory(results: list[Result], cpus: int) -> Target:
    t = Target("memory (7)", "flat: retained bytes per event after drain ~0 (< 1 B)")
    ours = _ok(results, "7", "ours")
    if ours is None or ours.median is None:
        t.measured = _missing(results, "7", "ours")
        return t
    retained = ours.median
    again = ours.extra.get("round2_per_event", 0.0)
    t.measured = (
        f"{retained:.2f} B/event retained after {ours.n:,} events; a second round adds "
        f"{again:.2f} B/event"
    )
    flat = abs(retained) < 1 and abs(again) < 1
    t.verdict = _verdict(flat)
    worst = max(abs(retained), abs(again))
    t.margin = (
        f"{1 - worst:.2f} B/event under the 1 B/event limit"
        if flat
        else f"{worst - 1:.2f} B/event over the 1 B/event limit"
    )
    if not flat:
        t.why = f"missed by {t.margin}"
    return t


def _judge(t: Target, met: bool, margin: str) -> Target:
    t.verdict, t.margin = _verdict(met), margin
    if not met:
        t.why = f"missed by {margin}"
    return t


def outbox_cost(results: list[Result], cpus: int) -> Target:
    t = Target("outbox emit (9)", "outbox(session).emit ≤ 1.2x a plain INSERT of the same row")
    ours, floor = _ok(results, "9", "ours"), _ok(results, "9", "plain-insert")
    if ours is None or floor is None or not ours.median or not floor.median:
        t.measured = _missing(results, "9", "ours")
        return t
    ratio = ours.median / floor.median
    t.measured = f"{_us(ours.median)} vs {_us(floor.median)} = {ratio:.2f}x"
    where = "under" if ratio <= 1.2 else "over"
    return _judge(t, ratio <= 1.2, f"{abs(1.2 - ratio):.2f}x {where} the limit")


def outbox_latency(results: list[Result], cpus: int) -> Target:
    t = Target("outbox latency (10)", "commit to handler p50 ≤ 5 ms")
    ours = _ok(results, "10", "ours")
    if ours is None:
        t.measured = _missing(results, "10", "ours")
        return t
    p50, p99 = ours.extra["p50_us"], ours.extra["p99_us"]
    t.measured = f"p50 {_us(p50)}, p99 {_us(p99)}"
    where = "under" if p50 <= 5_000 else "over"
    return _judge(t, p50 <= 5_000, f"{abs(5_000 - p50):,.0f} µs {where} 5 ms")


def outbox_relays(results: list[Result], cpus: int) -> Target:
    t = Target("outbox relays (11)", "two relay processes ≥ 5,000 events/s")
    ours = _ok(results, "11", "ours")
    if ours is None:
        t.measured = _missing(results, "11", "ours")
        return t
    rate = ours.extra["events_per_s"]
    t.measured = f"{rate:,.0f} events/s"
    where = "above" if rate >= 5_000 else "below"
    return _judge(t, rate >= 5_000, f"{abs(rate - 5_000):,.0f} events/s {where}")


def injected(results: list[Result], cpus: int) -> Target:
    t = Target("one handler with one Depends (12)", "fastapi-events' µs / ours' µs ≥ 3")
    ours, peer = _ok(results, "12", "ours"), _ok(results, "12", "fastapi-events")
    if ours is None or peer is None or not ours.median or not peer.median:
        t.measured = _missing(results, "12", "ours" if ours is None else "fastapi-events")
        return t
    ratio = peer.median / ours.median
    t.measured = f"fastapi-events {_us(peer.median)} / ours {_us(ours.median)} = {ratio:.1f}x"
    return _judge(t, ratio >= 3, f"{ratio / 3:.1f}x beyond" if ratio >= 3 else f"{ratio:.1f}x")


def forwarding(results: list[Result], cpus: int) -> Target:
    t = Target("SQS forwarding (13)", "ours ≥ 80% of a bare aiobotocore SendMessageBatch loop")
    ours, floor = _ok(results, "13", "ours"), _ok(results, "13", "aiobotocore")
    if ours is None or floor is None:
        t.measured = _missing(results, "13", "ours")
        return t
    ratio = ours.extra["ratio_to_floor"]
    t.measured = (
        f"ours {ours.extra['events_per_s']:,.0f} events/s = {ratio:.0%} of the loop's "
        f"{floor.extra['events_per_s']:,.0f} (best of {ours.reps} rounds each)"
    )
    where = "above" if ratio >= 0.80 else "below"
    return _judge(t, ratio >= 0.80, f"{abs(ratio - 0.80) * 100:.0f} points {where} 80%")


def _median_ratios(results: list[Result], ours: Result) -> str:
    """The same ratios on median rounds: one lucky floor round must not decide alone."""
    floor, batched = _ok(results, "14", "aiokafka"), _ok(results, "14", "aiokafka-batched")
    mine = ours.extra.get("median_events_per_s")
    if floor is None or batched is None or not mine:
        return ""
    return (
        f"; median rounds: {mine / floor.extra['median_events_per_s']:.0%} and "
        f"{mine / batched.extra['median_events_per_s']:.0%}"
    )


def kafka(results: list[Result], cpus: int) -> Target:
    t = Target("Kafka end to end (14)", "ours ≥ 70% of a bare aiokafka loop's events/s")
    ours = _ok(results, "14", "ours")
    if ours is None or "ratio_to_floor" not in ours.extra:
        t.measured = _missing(results, "14", "ours")
        return t
    ratio = ours.extra["ratio_to_floor"]
    t.measured = (
        f"ours {ours.extra['events_per_s']:,.0f} events/s = {ratio:.0%} of the bare loop "
        f"(64 tasks awaiting send(), getmany() + commit()), "
        f"{ours.extra.get('ratio_to_batched_floor', 0.0):.0%} of one task batching every "
        f"send() (best of {ours.reps} rounds each){_median_ratios(results, ours)}"
    )
    met = ratio >= 0.70
    where = "above" if met else "below"
    _judge(t, met, f"{abs(ratio - 0.70) * 100:.0f} points {where} 70%")
    if not met:
        t.why += (
            f": on {cpus} cores shared by the producer, the consumer and the broker, the JSON "
            "codec and per-record dispatch cost CPU the bare loop does not spend (it neither "
            "decodes nor runs a handler)"
        )
    return t


TARGETS: tuple[Callable[[list[Result], int], Target], ...] = (
    one_handler,
    app_call,
    ten_handlers,
    sync_handler,
    crowded,
    background,
    after_response,
    redis,
    memory,
    outbox_cost,
    outbox_latency,
    outbox_relays,
    injected,
    forwarding,
    kafka,
)


def evaluate(results: list[Result], cpus: int) -> list[Target]:
    return [target(results, cpus) for target in TARGETS]


def markdown(targets: list[Target]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = [
        "## Targets",
        "",
        "Judged on the results above, of this run.",
        "",
        "| target | goal | measured | result | margin |",
        "|---|---|---|---|---|",
    ]
    for t in targets:
        verdict = f"**{t.verdict}**" if t.verdict in (MET, MISSED) else t.verdict
        lines.append(
            f"| {cell(t.name)} | {cell(t.goal)} | {cell(t.measured)} | {verdict} "
            f"| {cell(t.margin) or '—'} |"
        )
    missed = [t for t in targets if t.verdict == MISSED]
    lines += ["", "### Why the misses", ""]
    if not missed:
        lines.append("No target was missed in this run.")
    for t in missed:
        lines.append(f"- **{t.name}**: {t.why}.")
    met = sum(t.verdict == MET for t in targets)
    lines += ["", f"{met} of {len(targets)} targets met in this run."]
    return "\n".join(lines)
