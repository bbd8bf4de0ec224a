"""Timing: calibrated repetitions of a verified batch of operations.

Every batch is checked afterwards: the handlers must have run exactly the expected number of
times (and unrelated handlers never), otherwise the measurement is a verification failure and
no time is reported for it.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

OK = "ok"
FAILED = "FAILED VERIFICATION"
ERROR = "error"
UNSUPPORTED = "n/a"
UNAVAILABLE = "unavailable"


class Counter:
    """What every handler does: one increment."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0


class VerificationError(Exception):
    """The handlers did not run the expected number of times."""


class Unsupported(Exception):
    """The system has no way to express the scenario; the message says why."""


@dataclass
class Case:
    """A prepared system: ``run(n)`` performs n operations and returns when they are done."""

    run: Callable[[int], Awaitable[None]]
    counter: Counter
    calls_per_op: int = 1
    stray: Counter | None = None  # handlers that must never run (crowded registry)
    close: Callable[[], Awaitable[None]] | None = None
    note: str = ""
    comparable: bool = True  # False: semantics differ, kept out of "best peer"


@dataclass
class PairedCase:
    """The same ASGI app hit with requests that emit one event and requests that do not."""

    with_event: Callable[[int], Awaitable[None]]
    without_event: Callable[[int], Awaitable[None]]
    counter: Counter
    close: Callable[[], Awaitable[None]] | None = None
    note: str = ""


@dataclass(frozen=True)
class Settings:
    quick: bool
    n: int  # operations per repetition, at most
    min_n: int  # operations per repetition, at least (slow systems)
    reps: int
    rep_budget_s: float  # a repetition is shortened to about this long
    calib_s: float  # warm-up/calibration stops once a batch takes this long
    case_timeout_s: float
    requests: int  # per repetition and variant, after-response scenario
    request_block: int  # requests per alternating block
    request_reps: int
    memory_events: int


FULL = Settings(
    quick=False,
    n=20_000,
    min_n=20,
    reps=5,
    rep_budget_s=0.2,
    calib_s=0.03,
    case_timeout_s=60.0,
    requests=1_500,
    request_block=20,
    request_reps=7,
    memory_events=1_000_000,
)
QUICK = Settings(
    quick=True,
    n=5_000,
    min_n=10,
    reps=3,
    rep_budget_s=0.06,
    calib_s=0.008,
    case_timeout_s=20.0,
    requests=300,
    request_block=20,
    request_reps=5,
    memory_events=100_000,
)


@dataclass
class Timing:
    samples_us: list[float]  # per operation, one per repetition
    n: int
    extra: dict[str, float] = field(default_factory=dict)
    note: str = ""

    @property
    def median_us(self) -> float:
        return statistics.median(self.samples_us)

    @property
    def min_us(self) -> float:
        return min(self.samples_us)


def _verify(case: Case, before: int, ops: int) -> None:
    got = case.counter.n - before
    want = ops * case.calls_per_op
    if got != want:
        raise VerificationError(f"handlers ran {got} times, expected {want}")
    if case.stray is not None and case.stray.n:
        raise VerificationError(f"{case.stray.n} calls of handlers that should not match")


async def _timed_batch(case: Case, ops: int, collect: bool = True) -> int:
    if collect:
        gc.collect()
    before = case.counter.n
    gc.disable()
    try:
        start = time.perf_counter_ns()
        await case.run(ops)
        elapsed = time.perf_counter_ns() - start
    finally:
        gc.enable()
    _verify(case, before, ops)
    return elapsed


async def measure(case: Case, settings: Settings) -> Timing:
    """Warm up while calibrating the batch size, then time ``settings.reps`` batches."""
    try:
        ops = 1
        while True:
            elapsed = await _timed_batch(case, ops, collect=False)
            if elapsed >= settings.calib_s * 1e9:
                # Once more at this size: the first batch may carry one-time costs (caches
                # filled on first use, a thread pool starting) that would shrink N for nothing.
                elapsed = min(elapsed, await _timed_batch(case, ops, collect=False))
            if elapsed >= settings.calib_s * 1e9 or ops >= settings.n:
                break
            ops = min(ops * 8, settings.n)
        per_op_ns = max(elapsed / ops, 1.0)
        n = int(settings.rep_budget_s * 1e9 / per_op_ns)
        n = max(settings.min_n, min(settings.n, n))
        samples = [await _timed_batch(case, n) / n / 1e3 for _ in range(settings.reps)]
        return Timing(samples, n)
    finally:
        if case.close is not None:
            await case.close()


async def measure_paired(case: PairedCase, settings: Settings) -> Timing:
    """Added time per request: (n requests emitting) - (n requests not emitting), per repetition.

    Within a repetition the two variants alternate in blocks of ``settings.request_block``
    requests, so that drift hits both alike; the repetition's figure is the median difference
    over its block pairs.
    """

    async def block(variant: Callable[[int], Awaitable[None]], size: int, emits: bool) -> int:
        before = case.counter.n
        start = time.perf_counter_ns()
        await variant(size)
        elapsed = time.perf_counter_ns() - start
        got, want = case.counter.n - before, size if emits else 0
        if got != want:
            raise VerificationError(f"handlers ran {got} times after {size} requests, not {want}")
        return elapsed

    try:
        size = settings.request_block
        warm = max(size, settings.requests // 10)
        await block(case.without_event, warm, False)
        await block(case.with_event, warm, True)
        blocks = max(1, settings.requests // size)
        added: list[float] = []
        base: list[float] = []
        for _ in range(settings.request_reps):
            pairs: list[float] = []
            t_without = 0
            gc.collect()
            gc.disable()
            try:
                for b in range(blocks):
                    if b % 2:
                        t_w = await block(case.with_event, size, True)
                        t_wo = await block(case.without_event, size, False)
                    else:
                        t_wo = await block(case.without_event, size, False)
                        t_w = await block(case.with_event, size, True)
                    pairs.append((t_w - t_wo) / size / 1e3)
                    t_without += t_wo
            finally:
                gc.enable()
            # The median over block pairs keeps a scheduler hiccup in one block from
            # deciding the repetition's figure.
            added.append(statistics.median(pairs))
            base.append(t_without / (blocks * size) / 1e3)
        return Timing(added, blocks * size, {"request_us": statistics.median(base)})
    finally:
        if case.close is not None:
            await case.close()


async def wait_for_count(counter: Counter, target: int, timeout_s: float = 10.0) -> None:
    """For systems that give no handle on completion: yield to the loop until handlers ran."""
    deadline = time.monotonic() + timeout_s
    spins = 0
    while counter.n < target:
        await asyncio.sleep(0)
        spins += 1
        if not spins & 1023 and time.monotonic() > deadline:
            raise VerificationError(
                f"handlers ran {counter.n} times, expected {target} (gave up after {timeout_s}s)"
            )


def run_isolated[T](factory: Callable[[], Awaitable[T]], timeout_s: float) -> T:
    """Run one measurement in a fresh event loop, so no system sees another's leftovers."""

    async def main() -> T:
        return await asyncio.wait_for(factory(), timeout_s)

    return asyncio.run(main())
