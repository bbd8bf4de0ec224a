"""Scenario 13: forwarding to SQS (moto's server) against a bare aiobotocore loop.

    .venv/bin/python -m benchmarks.forwarding_bench [--quick]

A private moto server (scripts/moto-server.sh, 127.0.0.1, a free port) is the SQS endpoint
of both, in the same run, alternating round by round, each round on a fresh queue (moto's
cost per message grows with the queue's length):

* floor: one task looping over ``SendMessageBatch`` calls of 10 messages, each message
  encoded in the loop (``json.dumps`` of an event-like object, 3 string attributes), one
  call in flight at a time; the client is created before the clock starts.
* ours: ``emit_nowait`` N events on a bus that forwards them with ``SQSForwarder`` (its
  defaults: batches of 10, ``max_wait`` 0.05 s, 4 batches in flight), then ``drain()``.
* ours, one batch in flight (``concurrency=1``): the floor's shape, for reference.

Throughput is N / (time from the first emit, or the first call, until every message was
accepted). Verification: each round's queue holds exactly N messages afterwards (ours:
N + 1, the warm-up event that opens the client), and ours reports no failed batch and no
dead letter; anything else raises :class:`VerificationFailed` and no figure is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TypedDict

from benchmarks.harness import ERROR, FAILED, OK, UNSUPPORTED, Settings

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "moto-server.sh"
REGION = "us-east-1"


class Credentials(TypedDict):
    aws_access_key_id: str
    aws_secret_access_key: str


CREDENTIALS: Credentials = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench"}
PAYLOAD = {"order_id": 12345, "customer": "Jane Doe", "total": "99.90", "currency": "EUR"}
EVENT = "order.paid"

FLOOR, OURS, OURS_SERIAL = "aiobotocore", "ours", "ours-concurrency-1"
LABELS = {
    FLOOR: "floor: bare aiobotocore SendMessageBatch loop",
    OURS: "ours (defaults: 4 batches in flight)",
    OURS_SERIAL: "ours, concurrency=1",
}
ROLES = {FLOOR: "floor", OURS: "ours", OURS_SERIAL: "ours"}
NOTES = {
    FLOOR: "10 messages per call, one call at a time; a fresh queue per round, alternating",
    OURS: "emit_nowait x N, then drain(): SQSForwarder with its defaults",
    OURS_SERIAL: "the same, one batch in flight at a time (the floor's shape)",
}


class VerificationFailed(RuntimeError):
    """A round did not deliver exactly the events it sent."""


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def private_moto() -> Any:
    """Start a throwaway moto server; yield its URL; stop it (always)."""
    directory = tempfile.mkdtemp(prefix="bench-moto-")
    port = str(_free_port())
    env = {**os.environ, "PYTHON": sys.executable}
    subprocess.run(
        ["bash", str(SCRIPT), "start", port, directory],
        check=True,
        capture_output=True,
        timeout=60,
        env=env,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        subprocess.run(
            ["bash", str(SCRIPT), "stop", port, directory], capture_output=True, timeout=30
        )


@asynccontextmanager
async def _client(endpoint: str) -> AsyncIterator[Any]:
    from aiobotocore.session import get_session

    async with get_session().create_client(
        "sqs", region_name=REGION, endpoint_url=endpoint, **CREDENTIALS
    ) as client:
        yield client


async def _count(client: Any, queue_url: str) -> int:
    reply = await client.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )
    return int(reply["Attributes"]["ApproximateNumberOfMessages"])


# ====================================================================== the two systems
async def floor_round(client: Any, queue_url: str, n: int) -> float:
    """Seconds for a bare loop to send n messages, 10 per call, one call at a time."""
    start = time.perf_counter()
    for first in range(0, n, 10):
        entries = []
        for i in range(first, min(first + 10, n)):
            event_id = f"bench-{i}"
            body = json.dumps({"id": event_id, "name": EVENT, "args": [PAYLOAD], "kwargs": {}})
            attributes = {"event_name": EVENT, "event_id": event_id, "correlation_id": event_id}
            entries.append(
                {
                    "Id": str(i - first),
                    "MessageBody": body,
                    "MessageAttributes": {
                        k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()
                    },
                }
            )
        reply = await client.send_message_batch(QueueUrl=queue_url, Entries=entries)
        if reply.get("Failed"):
            raise VerificationFailed(f"the floor's call was refused: {reply['Failed'][:1]}")
    return time.perf_counter() - start


async def ours_round(endpoint: str, queue_url: str, n: int, concurrency: int | None) -> float:
    """Seconds for n emit_nowait events to be forwarded and accepted."""
    from fastapi_opinionated_eventbus import EventBus
    from fastapi_opinionated_eventbus.forwarding import SQSForwarder

    bus = EventBus(max_pending=n + 10)
    forwarder = SQSForwarder(queue_url, region_name=REGION, endpoint_url=endpoint, **CREDENTIALS)
    bus.forward("order.*", forwarder, concurrency=concurrency)
    await bus.start()
    try:
        if not (await bus.emit(EVENT, PAYLOAD)).ok:  # opens the client
            raise VerificationFailed("the warm-up event was not forwarded")
        start = time.perf_counter()
        for _ in range(n):
            bus.emit_nowait(EVENT, PAYLOAD)
        left = await bus.drain(120)
        elapsed = time.perf_counter() - start
        (stats,) = (await bus.health())["forwarding"]
        letters = await bus.dead_letters()
    finally:
        await bus.aclose()
    if left or stats["batches_failed"] or stats["events_sent"] != n + 1 or letters:
        raise VerificationFailed(
            f"ours: {left} left in flight, {stats['batches_failed']} failed batch(es), "
            f"{stats['events_sent']} of {n + 1} sent, {len(letters)} dead letter(s)"
        )
    return elapsed


# ====================================================================== the run
async def _measure(endpoint: str, n: int, rounds: int) -> dict[str, list[float]]:
    """events/s of each system, round by round, alternating."""
    rates: dict[str, list[float]] = {FLOOR: [], OURS: [], OURS_SERIAL: []}
    async with _client(endpoint) as client:
        systems: dict[str, Callable[[str], Awaitable[float]]] = {
            FLOOR: lambda url: floor_round(client, url, n),
            OURS: lambda url: ours_round(endpoint, url, n, None),
            OURS_SERIAL: lambda url: ours_round(endpoint, url, n, 1),
        }
        expected = {FLOOR: n, OURS: n + 1, OURS_SERIAL: n + 1}
        for round_number in range(rounds):
            order = list(systems) if round_number % 2 == 0 else list(reversed(systems))
            for system in order:
                name = f"bench-{uuid.uuid4().hex[:10]}"
                queue_url = (await client.create_queue(QueueName=name))["QueueUrl"]
                seconds = await systems[system](queue_url)
                stored = await _count(client, queue_url)
                if stored != expected[system]:
                    raise VerificationFailed(
                        f"{system}: the queue holds {stored} messages, expected {expected[system]}"
                    )
                await client.delete_queue(QueueUrl=queue_url)
                rates[system].append(n / seconds)
    return rates


def run(quick: bool) -> dict[str, Any]:
    # Short rounds on fresh queues: moto's cost per message grows with the queue's length
    # (1,500 messages a round made both sides ~4x slower by its end).
    n, rounds = (300, 2) if quick else (500, 6)
    import fastapi_opinionated.app  # noqa: F401 - the core sets up logging at import

    with private_moto() as endpoint:
        rates = asyncio.run(_measure(endpoint, n, rounds))
    best = {system: max(values) for system, values in rates.items()}
    return {
        "events": n,
        "rounds": rounds,
        "events_per_s": best,
        "all_rounds_events_per_s": rates,
        "ratio_to_floor": best[OURS] / best[FLOOR],
        "serial_ratio_to_floor": best[OURS_SERIAL] / best[FLOOR],
    }


# ====================================================================== rows for the harness
def _row(system: str, status: str, **kw: Any) -> dict[str, Any]:
    label, role = LABELS[system], ROLES[system]
    return {"system": system, "label": label, "role": role, "status": status, **kw}


def measure(systems: list[str], settings: Settings) -> list[dict[str, Any]]:
    """One row (as Result keyword arguments) per system of scenario 13."""
    try:
        import aiobotocore  # noqa: F401
        import moto  # noqa: F401
    except ImportError as exc:
        return [_row(OURS, UNSUPPORTED, detail=f"{exc.name} is not installed")]
    try:
        figures = run(settings.quick)
    except VerificationFailed as exc:
        return [_row(s, FAILED, detail=str(exc)) for s in systems]
    except Exception as exc:
        detail = " ".join(f"{type(exc).__name__}: {str(exc).strip()[-400:]}".split())
        return [_row(s, ERROR, detail=detail) for s in systems]
    rows = []
    for system in systems:
        rounds = figures["all_rounds_events_per_s"][system]
        extra = {"events_per_s": figures["events_per_s"][system]}
        if system == OURS:
            extra["ratio_to_floor"] = figures["ratio_to_floor"]
        if system == OURS_SERIAL:
            extra["ratio_to_floor"] = figures["serial_ratio_to_floor"]
        rows.append(
            _row(
                system,
                OK,
                median=1e6 / statistics.median(rounds),
                min=1e6 / max(rounds),
                n=figures["events"],
                reps=figures["rounds"],
                note=NOTES[system],
                extra=extra,
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    figures = run(args.quick)
    print(json.dumps(figures, indent=2))
    print(
        f"ours {figures['events_per_s'][OURS]:,.0f} events/s = "
        f"{figures['ratio_to_floor']:.0%} of the bare loop's "
        f"{figures['events_per_s'][FLOOR]:,.0f} (concurrency=1: "
        f"{figures['serial_ratio_to_floor']:.0%})",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
