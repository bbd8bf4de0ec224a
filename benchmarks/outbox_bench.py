"""The transactional outbox on PostgreSQL: what it costs, how fast it dispatches.

    .venv/bin/python -m benchmarks.outbox_bench [--quick] [--url postgresql+asyncpg://...]

Without ``--url`` a private, durable (fsync on) PostgreSQL cluster is started for the run
(tests/postgres_server.py, Debian's postgresql package) and removed afterwards.

* **emit cost**: inside one transaction, ``await outbox(session).emit(name, payload)``
  against a plain ``await session.execute(insert(table), row)`` of the same row (the row
  the outbox writes: an id of the same kind, name, JSON body, correlation id, time),
  prebuilt, through the same session; rounds alternate, each rolled back and the table
  truncated after it. µs per operation, median of rounds.
* **commit to handler**: one event per transaction, one at a time; the time from the
  commit's return to the handler's first line, in the same process (relay woken by the
  commit). p50 / p99.
* **relay throughput**: N rows committed in one transaction while two relay processes
  (each a bus with one async handler, the default batch size) wait; events/s from the
  commit until the table is empty (rows are deleted only after their handler ran). Each
  relay reports how many events it handled: anything but N in total is a failure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PAYLOAD = {"id": 12345, "name": "Jane Doe", "email": "jane@example.com", "plan": "pro"}
EVENT = "user.created"


class VerificationFailed(RuntimeError):
    """The relays did not handle exactly the events written."""


def _bus(url: str, table: str, **options: Any) -> Any:
    import fastapi_opinionated.app  # noqa: F401 - the core sets up logging at import

    from fastapi_opinionated_eventbus import EventBus

    return EventBus(outbox_url=url, outbox_table=table, shutdown_timeout=5.0, **options)


def _quiet() -> None:
    import logging

    logging.getLogger().setLevel(logging.WARNING)


# ====================================================================== emit cost
async def emit_cost(url: str, table: str, ops: int, rounds: int) -> dict[str, float]:
    from sqlalchemy import MetaData, insert, text
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    from fastapi_opinionated_eventbus.outbox import outbox_table

    bus = _bus(url, table)
    await bus.start()  # creates the table; its relay finds nothing (every round rolls back)
    engine = create_async_engine(url)
    statement = insert(outbox_table(MetaData(), table))
    plain: list[float] = []
    ours: list[float] = []
    try:
        async with AsyncSession(engine) as session:
            for index in range(rounds * 2 + 2):  # two warm-up rounds, then alternating
                measure_ours = index % 2 == 1
                async with session.begin():
                    outbox = bus.outbox(session)
                    sample = await outbox.emit(EVENT, PAYLOAD)  # the row to copy
                    body = (await session.execute(_body_of(table, sample.id))).scalar_one()
                    rows = [_row(sample, body) for _ in range(ops)]
                    t0 = time.perf_counter()
                    if measure_ours:
                        for _ in range(ops):
                            await outbox.emit(EVENT, PAYLOAD)
                    else:
                        for row in rows:
                            await session.execute(statement, row)
                    per_op = (time.perf_counter() - t0) / ops * 1e6
                    await session.rollback()
                async with session.begin():  # no dead rows from earlier rounds
                    await session.execute(text(f"TRUNCATE {table}"))
                if index >= 2:
                    (ours if measure_ours else plain).append(per_op)
    finally:
        await bus.aclose()
        await engine.dispose()
    return {
        "insert_us": statistics.median(plain),
        "insert_min_us": min(plain),
        "emit_us": statistics.median(ours),
        "emit_min_us": min(ours),
        "ratio": statistics.median(ours) / statistics.median(plain),
        "ops": float(ops),
        "rounds": float(rounds),
    }


def _body_of(table: str, event_id: str) -> Any:
    from sqlalchemy import MetaData, select

    from fastapi_opinionated_eventbus.outbox import outbox_table

    t = outbox_table(MetaData(), table)
    return select(t.c.body).where(t.c.event_id == event_id)


def _row(sample: Any, body: str) -> dict[str, Any]:
    """The row the outbox writes for ``sample``, with a new id of the same kind (the column
    is unique)."""
    from fastapi_opinionated_eventbus import EventEnvelope

    return {
        "event_id": EventEnvelope(EVENT, (), {}).id,
        "name": sample.name,
        "body": body,
        "correlation_id": sample.correlation_id,
        "created_at": sample.emitted_at,
    }


# ====================================================================== latency
async def latency(url: str, table: str, events: int) -> dict[str, float]:
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    bus = _bus(url, table)
    arrived: dict[str, float] = {}

    async def handler(payload: dict[str, Any]) -> None:
        from fastapi_opinionated_eventbus import current_event

        arrived[current_event().id] = time.perf_counter()

    bus.subscribe(EVENT, handler)
    await bus.start()
    engine = create_async_engine(url)
    samples: list[float] = []
    try:
        async with AsyncSession(engine) as session:
            for index in range(events + 50):
                async with session.begin():
                    envelope = await bus.outbox(session).emit(EVENT, PAYLOAD)
                committed = time.perf_counter()
                deadline = committed + 10.0
                while envelope.id not in arrived:
                    if time.perf_counter() > deadline:
                        raise VerificationFailed(f"event {envelope.id} not handled in 10 s")
                    await asyncio.sleep(0)
                if index >= 50:  # warm-up
                    samples.append((arrived[envelope.id] - committed) * 1e6)
    finally:
        await bus.aclose()
        await engine.dispose()
    samples.sort()
    return {
        "p50_us": samples[len(samples) // 2],
        "p99_us": samples[min(len(samples) - 1, int(len(samples) * 0.99))],
        "min_us": samples[0],
        "events": float(len(samples)),
    }


# ====================================================================== throughput
async def _relay_role(url: str, table: str) -> None:
    """A relay process: one async handler counting events; prints the count on SIGTERM."""
    _quiet()
    bus = _bus(url, table)
    handled = 0

    async def handler(payload: dict[str, Any]) -> None:
        nonlocal handled
        handled += 1

    bus.subscribe(EVENT, handler)
    await bus.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await bus.aclose()
    print(json.dumps({"handled": handled}), flush=True)


def _start_relays(url: str, table: str, count: int) -> list[subprocess.Popen[str]]:
    relays = [
        subprocess.Popen(
            [sys.executable, "-m", "benchmarks.outbox_bench", "--relay", url, table],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for _ in range(count)
    ]
    for relay in relays:
        assert relay.stdout is not None
        line = relay.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"a relay process did not start (said {line!r})")
    return relays


def _stop_relays(relays: list[subprocess.Popen[str]]) -> int:
    handled = 0
    for relay in relays:
        if relay.poll() is None:
            relay.send_signal(signal.SIGTERM)
        try:
            out, _ = relay.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            relay.kill()
            out, _ = relay.communicate(timeout=10)
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if lines:
            handled += int(json.loads(lines[-1])["handled"])
    return handled


async def throughput(url: str, table: str, events: int, relays: int = 2) -> dict[str, float]:
    from sqlalchemy import MetaData, func, select
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    from fastapi_opinionated_eventbus.outbox import outbox_table

    # The relays create the table as they start; the writer is never started (it writes).
    processes = await asyncio.to_thread(_start_relays, url, table, relays)
    writer = _bus(url, table)
    engine = create_async_engine(url)
    count = select(func.count()).select_from(outbox_table(MetaData(), table))
    try:
        async with AsyncSession(engine) as session, session.begin():
            outbox = writer.outbox(session)
            for _ in range(events):
                await outbox.emit(EVENT, PAYLOAD)
        committed = time.perf_counter()
        deadline = committed + 60.0 + events / 500
        async with engine.connect() as conn:
            while (await conn.execute(count)).scalar_one():
                await conn.rollback()
                if time.perf_counter() > deadline:
                    raise VerificationFailed("the relays did not empty the table in time")
                await asyncio.sleep(0.002)
        elapsed = time.perf_counter() - committed
    finally:
        handled = await asyncio.to_thread(_stop_relays, processes)
        await engine.dispose()
    if handled != events:
        raise VerificationFailed(f"the relays handled {handled} events, {events} were written")
    return {"events_per_s": events / elapsed, "events": float(events), "relays": float(relays)}


# ====================================================================== all of it
async def _measure(url: str, quick: bool) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    return {
        "emit_cost": await emit_cost(
            url, f"bench_cost_{tag}", 200 if quick else 500, 5 if quick else 9
        ),
        "latency": await latency(url, f"bench_latency_{tag}", 300 if quick else 2_000),
        "throughput": await throughput(url, f"bench_relay_{tag}", 10_000 if quick else 40_000),
    }


def run(quick: bool, url: str | None = None) -> dict[str, Any]:
    """Every figure, on ``url`` or on a private durable cluster started for the run."""
    _quiet()
    if url is not None:
        return asyncio.run(_measure(url, quick))
    sys.path.insert(0, str(ROOT / "tests"))
    from postgres_server import PostgresServer, installed

    if not installed():
        raise FileNotFoundError("PostgreSQL is not installed (apt-get install -y postgresql)")
    server = PostgresServer(durable=True)
    try:
        server.start()
        return asyncio.run(_measure(server.url(), quick))
    finally:
        server.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.outbox_bench")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--url", help="postgresql+asyncpg://... (default: a private cluster)")
    parser.add_argument("--relay", nargs=2, metavar=("URL", "TABLE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.relay:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_relay_role(*args.relay))
        return
    print(json.dumps(run(args.quick, args.url), indent=2))


if __name__ == "__main__":
    main()
