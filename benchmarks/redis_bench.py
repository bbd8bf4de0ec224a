"""Redis Streams backend, end to end: emit in one process, handler done in another.

    .venv/bin/python -m benchmarks.redis_bench --url redis://127.0.0.1:6379/0 [--quick]

Compared with a bare redis-py floor measured in the same run, on the same Redis, with
the same entry fields and the same number of concurrent emitters:

* floor: C tasks each awaiting ``XADD`` (one acknowledged event at a time, like C callers
  of ``await emit()``) in one process; ``XREADGROUP COUNT b`` + one ``XACK`` per batch in
  another. No decoding, no handlers.
* ours: C tasks each awaiting ``bus.emit()`` in one process; a bus with one async handler
  in another (it decodes, dispatches, acknowledges).
* pipelined floor, for reference: one task sending ``XADD`` pipelines of C entries.

Throughput is events / (time the last handler finished - time the first emit started),
both taken with ``time.time()`` on this machine. Publish latency is of ``await emit()``
one at a time (no load) and under the throughput run's load. Call :func:`run` to get the
figures as a dict (the main benchmark does).

Verification: every consumer reports how many events it handled (ours: handler calls;
floor: entries acknowledged) once it stopped, and how many entries its group still has
pending. Anything but exactly N handled and 0 pending raises :class:`VerificationFailed`,
and no figure is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from benchmarks.broker_common import CONCURRENCY, interleaved, last_json, percentiles, shares

ROOT = Path(__file__).resolve().parent.parent
BATCH = 64
PAYLOAD = {"id": 12345, "name": "Jane Doe", "email": "jane@example.com", "plan": "pro"}
EVENT = "user.created"
OURS_GROUP = "eventbus"  # the bus's default redis_group


class VerificationFailed(RuntimeError):
    """A consumer did not handle exactly the events emitted (or left some pending)."""


def _timeout(n: int) -> float:
    """How long a run of n events may take: generous, but a lost event must not cost minutes."""
    return 20.0 + n / 1_000


async def _report_consumer(client: Any, stream: str, group: str, handled: int) -> None:
    """The consumer's last stdout line: what it handled and what its group left pending."""
    summary: Any = await client.xpending(stream, group)
    print(json.dumps({"handled": handled, "pending": int(summary["pending"])}))


# ====================================================================== roles (subprocesses)
async def _wait_key(client: Any, key: str, timeout: float = 60.0) -> bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await client.get(key)
        if value is not None:
            return bytes(value)
        await asyncio.sleep(0.01)
    raise TimeoutError(f"{key} was not set within {timeout}s")


def _bus(url: str, prefix: str, consumer: str) -> Any:
    import fastapi_opinionated.app  # noqa: F401 - the core sets up logging at import

    from fastapi_opinionated_eventbus import EventBus

    return EventBus(
        backend="redis",
        redis_url=url,
        redis_prefix=prefix,
        redis_consumer=consumer,
        redis_batch_size=BATCH,
        max_pending=1_000_000,
    )


async def ours_consumer(url: str, prefix: str, n: int) -> None:
    import redis.asyncio as aioredis

    control = aioredis.from_url(url)
    bus = _bus(url, prefix, "bench-consumer")
    done = asyncio.Event()
    count = 0

    async def handler(user: dict[str, Any]) -> None:
        nonlocal count
        count += 1
        if count == n:
            await control.set(f"{prefix}:done", repr(time.time()))
            done.set()

    bus.subscribe(EVENT, handler)
    await bus.start()
    await control.set(f"{prefix}:ready", "1")
    with contextlib.suppress(TimeoutError):  # reported below: handled != n
        await asyncio.wait_for(done.wait(), timeout=_timeout(n))
    await bus.aclose()  # flushes the acknowledgements
    await _report_consumer(control, f"{{{prefix}}}:events", OURS_GROUP, count)
    await control.aclose()


async def ours_producer(url: str, prefix: str, n: int, latency_samples: int) -> None:
    import redis.asyncio as aioredis

    control = aioredis.from_url(url)
    bus = _bus(url, prefix, "bench-producer")  # no handlers: it does not consume
    await bus.start()
    await _wait_key(control, f"{prefix}:ready")
    loaded: list[float] = []

    async def emitter(count: int) -> None:
        for _ in range(count):
            started = time.perf_counter()
            await bus.emit(EVENT, PAYLOAD)
            loaded.append(time.perf_counter() - started)

    t0 = time.time()
    await asyncio.gather(*(emitter(c) for c in shares(n)))
    published = time.time()
    done = float(await _wait_key(control, f"{prefix}:done", timeout=_timeout(n)))
    # Then latency without load: one emit at a time, an event name nobody handles.
    sequential = []
    for _ in range(latency_samples):
        started = time.perf_counter()
        await bus.emit("bench.latency", PAYLOAD)
        sequential.append(time.perf_counter() - started)
    await bus.aclose()
    await control.aclose()
    print(
        json.dumps(
            {
                "t0": t0,
                "published": published,
                "done": done,
                "sequential": percentiles(sequential),
                "loaded": percentiles(loaded),
            }
        )
    )


def _fields() -> dict[bytes, bytes]:
    """The entry our codec writes for the benchmark's event: the floor sends the same."""
    from fastapi_opinionated_eventbus._codec import Codec
    from fastapi_opinionated_eventbus._core.envelope import EventEnvelope

    return Codec(lambda name: None).encode(EventEnvelope(EVENT, (PAYLOAD,), {}))


async def floor_consumer(url: str, prefix: str, n: int) -> None:
    import redis.asyncio as aioredis

    client = aioredis.from_url(url)
    stream = f"{{{prefix}}}:events"
    await client.xgroup_create(stream, "floor", id="0", mkstream=True)
    await client.set(f"{prefix}:ready", "1")
    count = 0
    deadline = time.monotonic() + _timeout(n)
    while count < n and time.monotonic() < deadline:
        reply: Any = await client.xreadgroup("floor", "c", {stream: ">"}, count=BATCH, block=1000)
        if not reply:
            continue
        ids = [entry_id for entry_id, _ in reply[0][1]]
        await client.xack(stream, "floor", *ids)
        count += len(ids)
    if count == n:
        await client.set(f"{prefix}:done", repr(time.time()))
    await _report_consumer(client, stream, "floor", count)
    await client.aclose()


async def floor_producer(url: str, prefix: str, n: int, pipelined: bool) -> None:
    import redis.asyncio as aioredis

    client = aioredis.from_url(url, max_connections=CONCURRENCY + 4)
    stream = f"{{{prefix}}}:events"
    fields: Any = _fields()
    await _wait_key(client, f"{prefix}:ready")
    t0 = time.time()
    if pipelined:
        for start in range(0, n, CONCURRENCY):
            pipe = client.pipeline(transaction=False)
            for _ in range(min(CONCURRENCY, n - start)):
                pipe.xadd(stream, fields, maxlen=1_000_000, approximate=True)
            await pipe.execute()
    else:

        async def emitter(count: int) -> None:
            for _ in range(count):
                await client.xadd(stream, fields, maxlen=1_000_000, approximate=True)

        await asyncio.gather(*(emitter(c) for c in shares(n)))
    published = time.time()
    done = float(await _wait_key(client, f"{prefix}:done", timeout=_timeout(n)))
    await client.aclose()
    print(json.dumps({"t0": t0, "published": published, "done": done}))


# ====================================================================== orchestration
def _spawn(
    role: str, url: str, prefix: str, n: int, out: Any, err: Any, *extra: str
) -> subprocess.Popen[bytes]:
    """A role in a subprocess; its stdout and stderr go to files (no pipe to fill up)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "benchmarks.redis_bench", "--role", role, "--url", url),
            *("--prefix", prefix, "--n", str(n), *extra),
        ],
        cwd=ROOT,
        env=env,
        stdout=out,
        stderr=err,
    )


def _read(file: Any) -> str:
    file.seek(0)
    return str(file.read().decode("utf-8", "replace"))


def _pair(url: str, consumer: str, producer: str, n: int, *extra: str) -> dict[str, Any]:
    prefix = f"bench-{uuid.uuid4().hex[:10]}"
    limit = _timeout(n) + 60
    with contextlib.ExitStack() as stack:
        files = [stack.enter_context(tempfile.TemporaryFile()) for _ in range(4)]
        procs = [
            _spawn(consumer, url, prefix, n, files[0], files[1]),
            _spawn(producer, url, prefix, n, files[2], files[3], *extra),
        ]
        try:
            procs[1].wait(timeout=limit)
            procs[0].wait(timeout=limit)
            (consumer_out, consumer_err, out, err) = (_read(f) for f in files)
            report = last_json(consumer_out)
            if report is not None and (report["handled"] != n or report["pending"]):
                raise VerificationFailed(
                    f"{consumer}: {report['handled']} of {n} events handled, "
                    f"{report['pending']} left pending"
                )
            failed = procs[1].returncode != 0 or procs[0].returncode != 0 or report is None
            figures = last_json(out)
            if failed or figures is None:
                raise RuntimeError(
                    f"{producer}/{consumer} failed:\n{err[-3000:]}\n{consumer_err[-3000:]}"
                )
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            _cleanup(url, prefix)
    seconds = figures["done"] - figures["t0"]
    figures["seconds"] = seconds
    figures["events_per_s"] = n / seconds
    return figures


def _cleanup(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*")) + list(
            client.scan_iter(match=f"{{{prefix}}}:*")
        )
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def run(url: str, quick: bool) -> dict[str, Any]:
    """Measure; returns the figures (events/s, ratio to the floor, emit latency in µs)."""
    n = 4_000 if quick else 20_000
    samples = 300 if quick else 2_000
    figures = interleaved(
        1 if quick else 3,
        lambda: _pair(url, "floor-consumer", "floor-producer", n),
        lambda: _pair(url, "ours-consumer", "ours-producer", n, "--samples", str(samples)),
        lambda: _pair(url, "floor-consumer", "floor-producer", n, "--pipelined"),
        "pipelined",
    )
    return {
        "events": n,
        "concurrency": CONCURRENCY,
        "batch": BATCH,
        **figures,
        "ours_us_per_event": 1e6 / figures["ours_events_per_s"],
        "floor_us_per_event": 1e6 / figures["floor_events_per_s"],
        # Every round of every system handled exactly `events` with nothing left pending
        # (otherwise VerificationFailed was raised and there is no dict).
        "verified": True,
    }


def _format(figures: dict[str, Any]) -> str:
    lat, loaded = figures["emit_latency_us"], figures["emit_latency_under_load_us"]
    return "\n".join(
        [
            f"Redis Streams end to end: {figures['events']} events, {figures['concurrency']} "
            f"concurrent emitters, best of {figures['rounds']}",
            f"  ours             {figures['ours_events_per_s']:>10,.0f} events/s",
            f"  floor (redis-py) {figures['floor_events_per_s']:>10,.0f} events/s",
            f"  pipelined floor  {figures['pipelined_floor_events_per_s']:>10,.0f} events/s",
            f"  ours / floor     {figures['ratio_to_floor']:>10.0%}",
            f"  ours / pipelined {figures['ratio_to_pipelined_floor']:>10.0%}",
            f"  await emit()     p50 {lat['p50_us']:.0f} µs, p99 {lat['p99_us']:.0f} µs "
            f"(one at a time); under load p50 {loaded['p50_us']:.0f} µs, "
            f"p99 {loaded['p99_us']:.0f} µs",
            f"  all rounds       {figures['all_rounds_events_per_s']}",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.redis_bench", description=__doc__)
    parser.add_argument("--url", required=True, help="redis:// URL of a Redis to use")
    parser.add_argument("--quick", action="store_true", help="fewer events, one round")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--samples", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--pipelined", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role:
        roles: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {
            "ours-consumer": lambda: ours_consumer(args.url, args.prefix, args.n),
            "ours-producer": lambda: ours_producer(args.url, args.prefix, args.n, args.samples),
            "floor-consumer": lambda: floor_consumer(args.url, args.prefix, args.n),
            "floor-producer": lambda: floor_producer(args.url, args.prefix, args.n, args.pipelined),
        }
        asyncio.run(roles[args.role]())
        return
    try:
        figures = run(args.url, args.quick)
    except VerificationFailed as exc:
        print(f"FAILED VERIFICATION: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    print(json.dumps(figures, indent=2) if args.json else _format(figures))


if __name__ == "__main__":
    main()
