"""What is measured: the scenarios, which systems take part, and how each entry is run."""

from __future__ import annotations

import dataclasses
import gc
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from benchmarks.harness import (
    ERROR,
    FAILED,
    OK,
    UNAVAILABLE,
    UNSUPPORTED,
    Case,
    Counter,
    PairedCase,
    Settings,
    Timing,
    Unsupported,
    VerificationError,
    measure,
    measure_paired,
    run_isolated,
)
from benchmarks.peers import ADAPTERS, EVENT, Adapter, async_handlers

# The standard cast, in table order: floors first, then ours, then the peers.
PEERS = ("blinker", "pyee", "fastapi-events", "fastapi-eventbus")


@dataclass(frozen=True)
class Entry:
    system: str  # key in peers.ADAPTERS
    method: str  # adapter method that prepares the case
    args: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Scenario:
    id: str
    title: str
    short: str  # for the chart
    unit: str
    kind: str  # "timed" | "paired" | "memory" | "redis" | "outbox" | "forwarding" | "kafka"
    entries: tuple[Entry, ...] = ()
    floor: str | None = None  # system whose figure is the floor ratio's denominator
    enabled: bool = True
    note: str = ""


@dataclass
class Result:
    scenario: str
    system: str
    label: str
    role: str
    status: str
    median: float | None = None
    min: float | None = None
    n: int = 0
    reps: int = 0
    note: str = ""
    detail: str = ""
    comparable: bool = True
    extra: dict[str, float] = field(default_factory=dict)


def _cast(method: str, floors: tuple[str, ...], *args: Any) -> tuple[Entry, ...]:
    return tuple(Entry(s, method, args) for s in (*floors, "ours", *PEERS))


SCENARIOS: list[Scenario] = [
    Scenario(
        "1",
        "one async handler, emit awaited",
        "one async handler,\nawaited",
        "µs/emit",
        "timed",
        _cast("awaited", ("direct-await", "direct-call"), 1),
        floor="direct-await",
    ),
    # The way an app calls the bus (benchmarks.user_call): measured together, alternating.
    Scenario(
        "1b",
        "one async handler, as an app calls it: eventbus_api().emit() in a started app",
        "one handler, as an app\ncalls it (vs blinker)",
        "µs/emit",
        "user-call",
        (Entry("floor", "user_call"), Entry("ours", "user_call"), Entry("blinker", "user_call")),
        floor="floor",
    ),
    Scenario(
        "2",
        "ten async handlers on one event, awaited",
        "ten async handlers,\nawaited",
        "µs/emit",
        "timed",
        _cast("awaited", ("direct-await", "gather"), 10),
        floor="direct-await",
    ),
    Scenario(
        "3",
        "one sync handler, emit awaited (worker thread)",
        "one sync handler\n(worker thread), awaited",
        "µs/emit",
        "timed",
        _cast("sync_handler", ("to-thread", "direct-call")),
        floor="to-thread",
    ),
    Scenario(
        "4",
        "one match among 10,000 exact + 1,000 pattern subscriptions, awaited",
        "1 match among 11,000\nsubscriptions, awaited",
        "µs/emit",
        "timed",
        _cast("crowded", ("direct-await",)),
        floor="direct-await",
    ),
    Scenario(
        "5",
        "background throughput: N emits, then wait for all",
        "background: N emits,\nthen wait for all",
        "µs/event",
        "timed",
        _cast("background", ("create-task",)),
        floor="create-task",
    ),
    Scenario(
        "6",
        "after-response inside an ASGI request (httpx ASGITransport, Starlette)",
        "after-response in an\nASGI request",
        "added µs/request",
        "paired",
        _cast("after_response", ("starlette-background",)),
        floor="starlette-background",
    ),
    Scenario(
        "7",
        "memory retained after drain, background emits",
        "memory after drain",
        "bytes/event",
        "memory",
        (Entry("ours", "memory"),),
    ),
    # FastAPI Depends in handlers (benchmarks.injection_bench).
    Scenario(
        "12",
        "one async handler with one async dependency (Depends), emit awaited",
        "one handler with\none Depends, awaited",
        "µs/emit",
        "timed",
        tuple(Entry(s, "injected") for s in ("direct-await", "ours", "fastapi-events")),
        floor="direct-await",
    ),
    # Redis Streams backend end to end, on a private redis-server (benchmarks.redis_scenario,
    # measured by benchmarks.redis_bench); all rows come from one run of it.
    Scenario(
        "8",
        "Redis Streams end to end: emit in one process, handled in another",
        "Redis end to end",
        "µs/event",
        "redis",
        (
            Entry("redis-py", "redis"),
            Entry("redis-py-pipelined", "redis"),
            Entry("ours", "redis"),
        ),
        floor="redis-py",
    ),
    # The transactional outbox on PostgreSQL (benchmarks.outbox_scenario, measured by
    # benchmarks.outbox_bench); one run gives the rows of 9, 10 and 11.
    Scenario(
        "9",
        "outbox(session).emit in a transaction vs a plain INSERT of the same row (PostgreSQL)",
        "outbox emit",
        "µs/op",
        "outbox",
        (Entry("plain-insert", "outbox"), Entry("ours", "outbox")),
        floor="plain-insert",
    ),
    Scenario(
        "10",
        "outbox: commit to handler, same process (PostgreSQL)",
        "outbox latency",
        "µs",
        "outbox",
        (Entry("ours", "outbox"),),
    ),
    Scenario(
        "11",
        "outbox: relay throughput, two relay processes (PostgreSQL)",
        "outbox relays",
        "µs/event",
        "outbox",
        (Entry("ours", "outbox"),),
    ),
    # Forwarding to SQS (moto's server) against a bare aiobotocore loop, one run gives every
    # row: benchmarks.forwarding_bench.
    Scenario(
        "13",
        "forwarding to SQS (moto's server): emit_nowait N events, all accepted",
        "SQS forwarding",
        "µs/event",
        "forwarding",
        (
            Entry("aiobotocore", "forwarding"),
            Entry("ours", "forwarding"),
            Entry("ours-concurrency-1", "forwarding"),
        ),
        floor="aiobotocore",
    ),
    # Kafka backend end to end, on a private tansu broker (benchmarks.kafka_scenario,
    # measured by benchmarks.kafka_bench); all rows come from one run of it.
    Scenario(
        "14",
        "Kafka end to end: emit in one process, handled in another",
        "Kafka end to end",
        "µs/event",
        "kafka",
        (Entry("aiokafka", "kafka"), Entry("aiokafka-batched", "kafka"), Entry("ours", "kafka")),
        floor="aiokafka",
    ),
]


def _result(scenario: Scenario, entry: Entry, adapter: Adapter, status: str, **kw: Any) -> Result:
    return Result(scenario.id, entry.system, adapter.label, adapter.role, status, **kw)


def run_entry(scenario: Scenario, entry: Entry, settings: Settings) -> Result:
    """Measure one system in one scenario; any failure becomes the row's status, never a crash."""
    adapter = ADAPTERS[entry.system]()
    if adapter.unavailable:
        return _result(scenario, entry, adapter, UNAVAILABLE, detail=adapter.unavailable)
    prepared: list[Case | PairedCase] = []

    async def go() -> Timing:
        if scenario.kind == "memory":
            return await measure_memory(adapter, settings)
        case = await getattr(adapter, entry.method)(*entry.args)
        prepared.append(case)
        if isinstance(case, PairedCase):
            return await measure_paired(case, settings)
        return await measure(case, settings)

    try:
        timing = run_isolated(go, settings.case_timeout_s)
    except Unsupported as exc:
        return _result(scenario, entry, adapter, UNSUPPORTED, detail=str(exc))
    except VerificationError as exc:
        return _result(scenario, entry, adapter, FAILED, detail=str(exc), note=_note(prepared))
    except TimeoutError:
        detail = f"timed out after {settings.case_timeout_s:.0f} s"
        return _result(scenario, entry, adapter, ERROR, detail=detail, note=_note(prepared))
    except Exception as exc:
        detail = f"{type(exc).__name__}: {exc}"
        return _result(scenario, entry, adapter, ERROR, detail=detail, note=_note(prepared))
    comparable = all(getattr(c, "comparable", True) for c in prepared)
    reps = settings.request_reps if scenario.kind == "paired" else len(timing.samples_us)
    return _result(
        scenario,
        entry,
        adapter,
        OK,
        median=timing.median_us,
        min=timing.min_us,
        n=timing.n,
        reps=reps,
        note=_note(prepared) or timing.note,
        comparable=comparable,
        extra=timing.extra,
    )


def _note(prepared: list[Case | PairedCase]) -> str:
    return prepared[0].note if prepared else ""


async def measure_memory(adapter: Adapter, settings: Settings) -> Timing:
    """N ``emit_nowait`` then ``drain()``, under tracemalloc, then a second round of N/4.

    The figure is the memory still allocated after round 1, per event. Round 2 tells a leak
    (it grows again) from a high-water mark (containers that keep their grown capacity).
    ``extra`` also has the peak per pending event and the emit rate (slowed by tracemalloc, so
    not comparable to scenario 5).
    """
    ours: Any = adapter
    if not hasattr(ours, "EventBus"):
        raise Unsupported("memory scenario is for ours only")
    n = settings.memory_events
    n2 = max(1, n // 4)
    counter = Counter()
    bus, note = ours._bus(max_pending=2 * n)
    (handler,) = async_handlers(counter, 1)
    bus.subscribe(EVENT, handler)
    await bus.start()

    async def round_trip(count: int) -> tuple[int, float]:
        emit = bus.emit_nowait
        t0 = time.perf_counter()
        for _ in range(count):
            emit(EVENT, 1)
        rate = count / (time.perf_counter() - t0)
        lost = await bus.drain(timeout=max(60.0, settings.case_timeout_s))
        if lost:
            raise VerificationError(f"drain() reported {lost} lost events")
        gc.collect()
        return tracemalloc.get_traced_memory()[0], rate

    try:
        for _ in range(1_000):  # warm every lazy structure before tracing starts
            bus.emit_nowait(EVENT, 1)
        await bus.drain(timeout=30.0)
        counter.n = 0
        gc.collect()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            after_1, rate = await round_trip(n)
            peak = tracemalloc.get_traced_memory()[1]
            if counter.n != n:
                raise VerificationError(f"handlers ran {counter.n} times, expected {n}")
            after_2, _ = await round_trip(n2)
        finally:
            tracemalloc.stop()
    finally:
        await bus.aclose()
    if counter.n != n + n2:
        raise VerificationError(f"handlers ran {counter.n} times, expected {n + n2}")
    extra = {
        "peak_per_event": (peak - base) / n,
        "emit_per_s": rate,
        "round2_per_event": (after_2 - after_1) / n2,
        "round2_events": n2,
    }
    return Timing([(after_1 - base) / n], n, extra, note)


def select(ids: list[str] | None, systems: list[str] | None) -> list[Scenario]:
    chosen = [s for s in SCENARIOS if ids is None or s.id in ids]
    if systems is None:
        return chosen
    out = []
    for s in chosen:
        if s.kind in ("redis", "user-call", "outbox", "forwarding", "kafka"):  # one run: all
            entries = s.entries if "ours" in systems else ()
        else:
            entries = tuple(e for e in s.entries if e.system in systems)
        out.append(dataclasses.replace(s, entries=entries))
    return out


def run_redis(scenario: Scenario, settings: Settings, skip: str | None) -> list[Result]:
    """Scenario 8: one redis_bench run gives every row (floors and ours measured together)."""
    from benchmarks import redis_scenario

    systems = [e.system for e in scenario.entries]
    if "ours" not in systems:
        return []
    rows = redis_scenario.measure(systems, settings, skip)
    return [Result(scenario.id, **row) for row in rows]


def run_user_call(scenario: Scenario, settings: Settings) -> list[Result]:
    """Scenario 1b: one run alternates the floor, ours and blinker (benchmarks.user_call)."""
    from benchmarks import user_call

    systems = [e.system for e in scenario.entries]
    if "ours" not in systems:
        return []
    return [Result(scenario.id, **row) for row in user_call.measure(systems, settings)]


def run_outbox(scenarios: list[Scenario], settings: Settings) -> list[Result]:
    """Scenarios 9-11: one outbox_bench run gives every row of the selected ones."""
    from benchmarks import outbox_scenario

    ids = [s.id for s in scenarios if s.kind == "outbox" and s.enabled and s.entries]
    return [Result(**row) for row in outbox_scenario.measure(ids, settings)] if ids else []


def run_forwarding(scenario: Scenario, settings: Settings) -> list[Result]:
    """Scenario 13: one forwarding_bench run gives every row."""
    from benchmarks import forwarding_bench

    systems = [e.system for e in scenario.entries]
    if "ours" not in systems:
        return []
    return [Result(scenario.id, **row) for row in forwarding_bench.measure(systems, settings)]


def run_kafka(scenario: Scenario, settings: Settings, skip: str | None) -> list[Result]:
    """Scenario 14: one kafka_bench run gives every row (floors and ours measured together)."""
    from benchmarks import kafka_scenario

    systems = [e.system for e in scenario.entries]
    if "ours" not in systems:
        return []
    rows = kafka_scenario.measure(systems, settings, skip)
    return [Result(scenario.id, **row) for row in rows]


def run_all(
    scenarios: list[Scenario],
    settings: Settings,
    progress: Callable[[Result, float], None] | None = None,
    redis_skip: str | None = None,
) -> list[Result]:
    """Every entry of every enabled scenario; ``redis_skip``: why scenario 8 is not run."""
    results: list[Result] = []
    outbox_done = False
    for scenario in scenarios:
        if not scenario.enabled or (scenario.kind == "outbox" and outbox_done):
            continue
        if scenario.kind in ("redis", "user-call", "outbox", "forwarding", "kafka"):
            start = time.perf_counter()
            if scenario.kind == "forwarding":
                rows = run_forwarding(scenario, settings)
            elif scenario.kind == "outbox":
                outbox_done = True
                rows = run_outbox(scenarios, settings)
            elif scenario.kind == "kafka":
                rows = run_kafka(scenario, settings, None)
            elif scenario.kind == "user-call":
                rows = run_user_call(scenario, settings)
            else:
                rows = run_redis(scenario, settings, redis_skip)
            results.extend(rows)
            if progress is not None:
                for row in rows:
                    progress(row, time.perf_counter() - start)
            continue
        for entry in scenario.entries:
            start = time.perf_counter()
            result = run_entry(scenario, entry, settings)
            results.append(result)
            if progress is not None:
                progress(result, time.perf_counter() - start)
    return results
