"""Kafka backend, end to end: emit in one process, handler done in another.

    .venv/bin/python -m benchmarks.kafka_bench --servers 127.0.0.1:9092 [--quick]

Compared with a bare aiokafka floor measured in the same run, on the same broker, with
the same records (value, headers, and a distinct key per record as ours has: the event
id) and the same number of concurrent emitters:

* floor: C tasks each awaiting an acknowledged ``send()`` (the producer batches them, as
  it does ours) in one process; ``getmany()`` + one ``commit()`` per batch in another,
  in a consumer group. No decoding, no handlers.
* ours: C tasks each awaiting ``bus.emit()`` in one process; a bus with one async handler
  in another (it decodes, dispatches, tracks per-key order and commits).
* batched floor, for reference: one task handing all records to ``send()`` at once and
  waiting for them together.

Throughput is events / (time the last handler finished - time the first emit started),
both taken with ``time.time()`` on this machine, after the consumer's group has its
partitions. Each process also reports its CPU time per event over the run (producer:
until its last emit returned; consumer: until its last event was handled).

Rounds have 50,000 events (about 2 s): tansu answers a fetch that finds no new records
only after sleeping, for half of the consumer's max wait (aiokafka's default: 500 ms, so
250 ms; tansu-broker/src/broker/fetch.rs), where Apache Kafka answers once records arrive.
A consumer that catches up with the producer near the end of a round therefore finishes
up to 250 ms late, whichever it is: with 20,000 events (0.8 s) that alone moved a round's
figure by up to a third.

Publish latency is of ``await emit()`` one at a time (no load) and under the
throughput run's load. Verification: the consumer reports how many events it handled and
the offsets its group committed; anything but exactly N of both raises
:class:`VerificationFailed`, and no figure is reported.
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
PARTITIONS = 6
PAYLOAD = {"id": 12345, "name": "Jane Doe", "email": "jane@example.com", "plan": "pro"}
EVENT = "user.created"
GROUP_TIMINGS = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 500}


class VerificationFailed(RuntimeError):
    """A consumer did not handle (and commit) exactly the events emitted."""


def _timeout(n: int) -> float:
    return 30.0 + n / 1_000


def _write(path: Path, text: str) -> None:
    """Whole or not at all: the other role polls for the file."""
    partial = path.with_suffix(".partial")
    partial.write_text(text)
    partial.replace(path)


def _read(path: Path) -> str | None:
    return path.read_text() if path.exists() else None


async def _wait_file(path: Path, timeout: float = 60.0) -> str:
    """The roles signal each other with files (ready, done): polled, off the timed path."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = _read(path)
        if text is not None:
            return text
        await asyncio.sleep(0.01)
    raise TimeoutError(f"{path.name} did not appear within {timeout}s")


async def _committed(servers: str, topic: str, group: str) -> int:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    inspector = AIOKafkaConsumer(bootstrap_servers=servers, group_id=group)
    await inspector.start()
    try:
        offsets = [await inspector.committed(TopicPartition(topic, p)) for p in range(PARTITIONS)]
        return sum(o or 0 for o in offsets)
    finally:
        await inspector.stop()


def _bus(servers: str, topic: str) -> Any:
    import fastapi_opinionated.app  # noqa: F401 - the core sets up logging at import

    from fastapi_opinionated_eventbus import EventBus

    return EventBus(
        backend="kafka",
        kafka_bootstrap_servers=servers,
        kafka_topic=topic,
        kafka_group_id=f"{topic}.ours",
        kafka_partitions=PARTITIONS,
        kafka_consumer_options=GROUP_TIMINGS,
        max_pending=1_000_000,
    )


# ====================================================================== roles (subprocesses)
async def ours_consumer(servers: str, topic: str, n: int, files: Path, samples: int) -> None:
    from fastapi_opinionated_eventbus.backends.kafka import KafkaBackend

    bus = _bus(servers, topic)
    done = asyncio.Event()
    count = 0

    async def handler(user: dict[str, Any]) -> None:
        nonlocal count
        count += 1
        if count == n:
            _write(files / "done", repr(time.time()))
            done.set()

    bus.subscribe(EVENT, handler)
    await bus.start()
    backend = bus.backend
    assert isinstance(backend, KafkaBackend)
    while not backend.assigned_partitions:  # noqa: ASYNC110 - aiokafka offers no event
        await asyncio.sleep(0.05)
    _write(files / "ready", "1")
    cpu = time.process_time()
    with contextlib.suppress(TimeoutError):  # reported below: handled != n
        await asyncio.wait_for(done.wait(), timeout=_timeout(n))
        cpu = time.process_time() - cpu
        # The producer's latency samples follow (no handler: committed all the same).
        await _wait_file(files / "latency-done", timeout=60)
    await asyncio.sleep(1.0)  # the last commits
    await bus.aclose()
    committed = await _committed(servers, topic, f"{topic}.ours") - samples
    print(json.dumps({"handled": count, "committed": committed, "cpu_s": cpu}))


async def ours_producer(servers: str, topic: str, n: int, files: Path, samples: int) -> None:
    bus = _bus(servers, topic)  # no handlers: it joins no group
    await bus.start()
    await _wait_file(files / "ready")
    loaded: list[float] = []

    async def emitter(count: int) -> None:
        for _ in range(count):
            started = time.perf_counter()
            await bus.emit(EVENT, PAYLOAD)
            loaded.append(time.perf_counter() - started)

    t0, cpu = time.time(), time.process_time()
    await asyncio.gather(*(emitter(c) for c in shares(n)))
    cpu = time.process_time() - cpu
    done = float(await _wait_file(files / "done", timeout=_timeout(n)))
    sequential = []
    for _ in range(samples):  # latency without load: one emit at a time
        started = time.perf_counter()
        await bus.emit("bench.latency", PAYLOAD)
        sequential.append(time.perf_counter() - started)
    _write(files / "latency-done", "1")
    await bus.aclose()
    result = {"t0": t0, "done": done, "cpu_s": cpu, "sequential": percentiles(sequential)}
    print(json.dumps(result | {"loaded": percentiles(loaded)}))


def _record() -> tuple[bytes, bytes, list[tuple[str, bytes]], bool]:
    """The record our backend writes for the benchmark's event: the floor sends the same."""
    from fastapi_opinionated_eventbus._codec import Codec
    from fastapi_opinionated_eventbus._core.envelope import EventEnvelope
    from fastapi_opinionated_eventbus.backends.kafka import wire

    return wire.to_record(Codec(lambda name: None), EventEnvelope(EVENT, (PAYLOAD,), {}))


async def floor_consumer(servers: str, topic: str, n: int, files: Path) -> None:
    from aiokafka import AIOKafkaConsumer

    group = f"{topic}.floor"
    consumer = AIOKafkaConsumer(
        bootstrap_servers=servers,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **GROUP_TIMINGS,
    )
    await consumer.start()
    consumer.subscribe([topic])
    while not consumer.assignment():
        await consumer.getmany(timeout_ms=100)
    _write(files / "ready", "1")
    cpu = time.process_time()
    count = 0
    deadline = time.monotonic() + _timeout(n)
    while count < n and time.monotonic() < deadline:
        batches = await consumer.getmany(timeout_ms=1000)
        if not batches:
            continue
        count += sum(len(records) for records in batches.values())
        await consumer.commit({tp: records[-1].offset + 1 for tp, records in batches.items()})
    cpu = time.process_time() - cpu
    if count == n:
        _write(files / "done", repr(time.time()))
    await consumer.stop()
    committed = await _committed(servers, topic, group)
    print(json.dumps({"handled": count, "committed": committed, "cpu_s": cpu}))


async def floor_producer(servers: str, topic: str, n: int, files: Path, batched: bool) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=servers, acks="all")
    await producer.start()
    _, value, headers, _ = _record()
    # Keys spread over the partitions like ours (the event id), not one key for all,
    # which would put every record in one partition and one batch.
    keys = iter([f"{uuid.uuid4().hex[:16]}-{i:x}".encode() for i in range(n)])
    await _wait_file(files / "ready")
    t0, cpu = time.time(), time.process_time()
    if batched:
        sent = [
            await producer.send(topic, value, key=next(keys), headers=headers) for _ in range(n)
        ]
        await asyncio.gather(*sent)
    else:

        async def emitter(count: int) -> None:
            for _ in range(count):
                await (await producer.send(topic, value, key=next(keys), headers=headers))

        await asyncio.gather(*(emitter(c) for c in shares(n)))
    cpu = time.process_time() - cpu
    done = float(await _wait_file(files / "done", timeout=_timeout(n)))
    await producer.stop()
    print(json.dumps({"t0": t0, "done": done, "cpu_s": cpu}))


# ====================================================================== orchestration
def _create_topic(servers: str, topic: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    async def create() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=servers)
        await admin.start()
        try:
            await admin.create_topics(
                [NewTopic(topic, PARTITIONS, 1), NewTopic(f"{topic}.dlq", 1, 1)]
            )
        finally:
            await admin.close()

    asyncio.run(create())


def _pair(servers: str, consumer: str, producer: str, n: int, *extra: str) -> dict[str, Any]:
    topic = f"bench-{uuid.uuid4().hex[:10]}"
    _create_topic(servers, topic)
    limit = _timeout(n) + 60
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        outs = [stack.enter_context(tempfile.TemporaryFile()) for _ in range(4)]
        base = (sys.executable, "-m", "benchmarks.kafka_bench", "--servers", servers)
        common = ("--topic", topic, "--n", str(n), "--files", tmp)
        procs = [
            subprocess.Popen(
                [*base, "--role", role, *common, *args],
                cwd=ROOT,
                env=env,
                stdout=outs[2 * i],
                stderr=outs[2 * i + 1],
            )
            for i, (role, args) in enumerate([(consumer, extra), (producer, extra)])
        ]
        try:
            for proc in reversed(procs):
                proc.wait(timeout=limit)
            texts = []
            for out in outs:
                out.seek(0)
                texts.append(out.read().decode("utf-8", "replace"))
            report, figures = last_json(texts[0]), last_json(texts[2])
            if report is not None and (report["handled"] != n or report["committed"] != n):
                raise VerificationFailed(
                    f"{consumer}: {report['handled']} of {n} events handled, "
                    f"{report['committed']} committed"
                )
            if any(p.returncode for p in procs) or report is None or figures is None:
                raise RuntimeError(
                    f"{producer}/{consumer} failed:\n{texts[3][-3000:]}\n{texts[1][-3000:]}"
                )
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    figures["events_per_s"] = n / (figures["done"] - figures["t0"])
    figures["producer_cpu_us"] = figures["cpu_s"] / n * 1e6
    figures["consumer_cpu_us"] = report["cpu_s"] / n * 1e6
    return figures


def run(servers: str, quick: bool) -> dict[str, Any]:
    """Measure; returns the figures (events/s, ratio to the floor, emit latency in µs)."""
    n = 5_000 if quick else 50_000
    samples = 300 if quick else 2_000
    return {
        "events": n,
        "concurrency": CONCURRENCY,
        "partitions": PARTITIONS,
        **interleaved(
            1 if quick else 3,
            lambda: _pair(servers, "floor-consumer", "floor-producer", n),
            lambda: _pair(servers, "ours-consumer", "ours-producer", n, "--samples", str(samples)),
            lambda: _pair(servers, "floor-consumer", "floor-producer", n, "--batched"),
            "batched",
        ),
        "verified": True,
    }


def _format(figures: dict[str, Any]) -> str:
    lat, loaded = figures["emit_latency_us"], figures["emit_latency_under_load_us"]
    return "\n".join(
        [
            f"Kafka end to end: {figures['events']} events, {figures['concurrency']} "
            f"concurrent emitters, {figures['partitions']} partitions, best of "
            f"{figures['rounds']}",
            f"  ours              {figures['ours_events_per_s']:>10,.0f} events/s",
            f"  floor (aiokafka)  {figures['floor_events_per_s']:>10,.0f} events/s",
            f"  batched floor     {figures['batched_floor_events_per_s']:>10,.0f} events/s",
            f"  ours / floor      {figures['ratio_to_floor']:>10.0%}",
            f"  ours / batched    {figures['ratio_to_batched_floor']:>10.0%}",
            f"  await emit()      p50 {lat['p50_us']:.0f} µs, p99 {lat['p99_us']:.0f} µs "
            f"(one at a time); under load p50 {loaded['p50_us']:.0f} µs, "
            f"p99 {loaded['p99_us']:.0f} µs",
            f"  all rounds        {figures['all_rounds_events_per_s']}",
            "  CPU per event     "
            + "; ".join(
                f"{name}: producer {cpu['producer']:.1f} µs, consumer {cpu['consumer']:.1f} µs"
                for name, cpu in figures["cpu_us_per_event"].items()
            ),
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.kafka_bench", description=__doc__)
    parser.add_argument("--servers", required=True, help="host:port of a Kafka broker")
    parser.add_argument("--quick", action="store_true", help="fewer events, one round")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--files", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--samples", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--batched", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role:
        s, t, n, f = args.servers, args.topic, args.n, args.files
        roles: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {
            "ours-consumer": lambda: ours_consumer(s, t, n, f, args.samples),
            "ours-producer": lambda: ours_producer(s, t, n, f, args.samples),
            "floor-consumer": lambda: floor_consumer(s, t, n, f),
            "floor-producer": lambda: floor_producer(s, t, n, f, args.batched),
        }
        asyncio.run(roles[args.role]())
        return
    try:
        figures = run(args.servers, args.quick)
    except VerificationFailed as exc:
        print(f"FAILED VERIFICATION: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    print(json.dumps(figures, indent=2) if args.json else _format(figures))


if __name__ == "__main__":
    main()
