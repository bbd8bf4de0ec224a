"""Scenario 1b: one awaited handler, called the way an app calls it.

Ours: ``await eventbus_api().emit("bench.event", payload)`` inside a running app -- the
plugin enabled, ``App.create()`` and its lifespan run, the handler declared with
``@OnInternalEvent`` in a module under ``app/domains``, with the signature
``async def h(*args, **kwargs)``. Blinker: ``await signal.send_async(payload)`` with one
``async def r(sender, **kwargs)`` receiver (the payload as the sender, how blinker users
pass one object). The floor: ``await h(payload)``.

All three run in the same process and loop, in alternating rounds (floor, ours, blinker,
floor, ours, ...); each row reports the minimum and the median of its rounds, in µs per
emit. Alternating keeps a drifting machine from favouring whoever ran first.
"""

from __future__ import annotations

import asyncio
import gc
import tempfile
import textwrap
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from benchmarks.harness import ERROR, OK, Counter, Settings

EVENT = "bench.event"
ROUNDS = 5

HANDLERS_SRC = """\
from fastapi_opinionated_eventbus import OnInternalEvent


class Count:
    n = 0


COUNT = Count()


@OnInternalEvent("bench.event")
async def on_event(*args, **kwargs):
    COUNT.n += 1
"""

LABELS = {
    "floor": "floor: direct await",
    "ours": "ours",
    "blinker": "blinker",
}
ROLES = {"floor": "floor", "ours": "ours", "blinker": "peer"}
NOTES = {
    "floor": "await h(payload), h(*args, **kwargs)",
    "ours": "await eventbus_api().emit(name, payload) in a started app; "
    "@OnInternalEvent handler under app/domains, h(*args, **kwargs)",
    "blinker": "await signal.send_async(payload); receiver r(sender, **kwargs)",
}

Run = Callable[[int], Awaitable[None]]


def _write_app(root: Path) -> None:
    from fastapi_opinionated_eventbus.plugin import PLUGIN_PATH

    (root / ".fastapi_opinionated").mkdir(parents=True)
    (root / ".fastapi_opinionated" / "enabled_plugins.py").write_text(
        f"ENABLED_PLUGINS = [{PLUGIN_PATH!r}]\n"
    )
    domain = root / "app" / "domains" / "bench"
    domain.mkdir(parents=True)
    for package in (root / "app", root / "app" / "domains", domain):
        (package / "__init__.py").write_text("")
    (domain / "handlers.py").write_text(textwrap.dedent(HANDLERS_SRC))


async def _timed(run: Run, counter: Any, ops: int) -> float:
    before = counter.n
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter_ns()
        await run(ops)
        elapsed = time.perf_counter_ns() - start
    finally:
        gc.enable()
    if counter.n - before != ops:
        raise RuntimeError(f"handler ran {counter.n - before} times, expected {ops}")
    return elapsed / ops / 1e3


async def _measure_all(settings: Settings) -> dict[str, list[float]]:
    import sys

    from blinker import Signal

    from fastapi_opinionated_eventbus import eventbus_api
    from fastapi_opinionated_eventbus.testing import create_app, isolated_core, running

    payload = {"id": 1, "name": "Jane"}
    samples: dict[str, list[float]] = {key: [] for key in LABELS}
    with tempfile.TemporaryDirectory() as tmp, isolated_core(tmp):
        root = Path(tmp)
        _write_app(root)
        app = create_app(root)
        async with running(app):
            handlers = sys.modules["app.domains.bench.handlers"]
            ours_count = handlers.COUNT
            on_event = handlers.on_event

            async def ours(n: int) -> None:
                for _ in range(n):
                    await eventbus_api().emit(EVENT, payload)

            floor_count = Counter()

            async def h(*args: Any, **kwargs: Any) -> None:
                floor_count.n += 1

            async def floor(n: int) -> None:
                for _ in range(n):
                    await h(payload)

            blinker_count = Counter()

            async def receiver(sender: Any, **kwargs: Any) -> None:
                blinker_count.n += 1

            signal = Signal()
            signal.connect(receiver)
            send = signal.send_async

            async def blinker(n: int) -> None:
                for _ in range(n):
                    await send(payload)

            cases: dict[str, tuple[Run, Any]] = {
                "floor": (floor, floor_count),
                "ours": (ours, ours_count),
                "blinker": (blinker, blinker_count),
            }
            assert on_event is not None
            ops = settings.n
            for run, counter in cases.values():  # warm up every path once
                await _timed(run, counter, min(ops, 2_000))
            for _ in range(ROUNDS):
                for key, (run, counter) in cases.items():
                    samples[key].append(await _timed(run, counter, ops))
    return samples


def measure(systems: list[str], settings: Settings) -> list[dict[str, Any]]:
    """Rows for scenario 1b (``systems`` filters them; the three are measured together)."""
    try:
        samples = asyncio.run(asyncio.wait_for(_measure_all(settings), settings.case_timeout_s))
    except Exception as exc:
        return [
            _row(key, ERROR, detail=f"{type(exc).__name__}: {exc}")
            for key in LABELS
            if key in systems
        ]
    rows = []
    for key, values in samples.items():
        if key not in systems and key != "floor":
            continue
        ordered = sorted(values)
        rows.append(
            _row(
                key,
                OK,
                median=ordered[len(ordered) // 2],
                min=ordered[0],
                n=settings.n,
                reps=len(values),
                note=NOTES[key],
            )
        )
    return rows


def _row(key: str, status: str, **fields: Any) -> dict[str, Any]:
    return {"system": key, "label": LABELS[key], "role": ROLES[key], "status": status, **fields}
