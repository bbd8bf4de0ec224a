"""Scenario 8: Redis Streams end to end, on a private ``redis-server`` started for the run.

The server is Debian's ``redis-server`` from PATH, bound to 127.0.0.1 on a free port, with
no persistence, in a temporary directory; it is stopped afterwards whatever happens. The
measuring is :func:`benchmarks.redis_bench.run`; this module turns its figures into rows.
"""

from __future__ import annotations

import contextlib
import os
import shutil
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

# Row keys (Entry.system) of scenario 8, in table order.
FLOOR = "redis-py"
PIPELINED = "redis-py-pipelined"
OURS = "ours"
LABELS = {
    FLOOR: "floor: redis-py XADD, awaited",
    PIPELINED: "floor: redis-py XADD, pipelined",
    OURS: "ours",
}
ROLES = {FLOOR: "floor", PIPELINED: "floor", OURS: "ours"}
ROUNDS_KEY = {FLOOR: "floor", PIPELINED: "pipelined_floor", OURS: "ours"}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop(pidfile: Path) -> None:
    """SIGTERM the daemon named in the pidfile, SIGKILL it if it lingers."""
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return
    for sig, wait_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 2.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if not _alive(pid):
            return


@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    """Start a throwaway redis-server; yield its URL; stop it (always)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError("redis-server is not on PATH")
    workdir = Path(tempfile.mkdtemp(prefix="bench-redis-"))
    pidfile = workdir / "redis.pid"
    port = _free_port()
    try:
        subprocess.run(
            [
                binary,
                *("--bind", "127.0.0.1", "--port", str(port)),
                *("--save", "", "--appendonly", "no", "--daemonize", "yes"),
                *("--pidfile", str(pidfile), "--dir", str(workdir)),
                *("--logfile", str(workdir / "redis.log")),
            ],
            check=True,
            capture_output=True,
            timeout=10,
        )
        url = f"redis://127.0.0.1:{port}/0"
        _wait_ready(url, pidfile)
        yield url
    finally:
        # The pidfile appears a moment after the daemon forks: give it that moment.
        deadline = time.monotonic() + 2.0
        while not pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        _stop(pidfile)
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_ready(url: str, pidfile: Path, timeout_s: float = 10.0) -> None:
    import redis

    deadline = time.monotonic() + timeout_s
    while True:
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
        try:
            if client.ping() and pidfile.exists():
                return
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
        finally:
            client.close()
        time.sleep(0.05)


def _row(system: str, status: str, **kw: Any) -> dict[str, Any]:
    return {
        "system": system,
        "label": LABELS[system],
        "role": ROLES[system],
        "status": status,
        **kw,
    }


def measure(systems: list[str], settings: Settings, skip: str | None) -> list[dict[str, Any]]:
    """One row (as Result keyword arguments) per system of scenario 8 that was selected.

    ``skip`` is a reason not to run (``--no-redis``). Without redis-server, or without
    ``redis`` (the Python client), every row is n/a with the reason.
    """
    reason = skip
    if reason is None and shutil.which("redis-server") is None:
        reason = "redis-server is not on PATH"
    if reason is None:
        try:
            import redis  # noqa: F401
        except ImportError:
            reason = "the redis package (redis-py) is not installed"
    if reason is not None:  # one row says why: the floors were not measured either
        return [_row(OURS, UNSUPPORTED, detail=reason)]

    from benchmarks import redis_bench

    try:
        with private_redis() as url:
            figures = redis_bench.run(url, settings.quick)
    except redis_bench.VerificationFailed as exc:
        return [_row(s, FAILED, detail=str(exc)) for s in systems]
    except Exception as exc:
        detail = f"{type(exc).__name__}: {str(exc).strip()[-400:]}"
        return [_row(s, ERROR, detail=" ".join(detail.split())) for s in systems]
    return [_figures_row(s, figures) for s in systems]


def _figures_row(system: str, figures: dict[str, Any]) -> dict[str, Any]:
    """Median and min of µs/event over the rounds; events/s of the best round in ``extra``."""
    rounds = [float(x) for x in figures["all_rounds_events_per_s"][ROUNDS_KEY[system]]]
    best = {
        FLOOR: figures["floor_events_per_s"],
        PIPELINED: figures["pipelined_floor_events_per_s"],
        OURS: figures["ours_events_per_s"],
    }[system]
    extra: dict[str, float] = {
        "events_per_s": float(best),
        "median_events_per_s": statistics.median(rounds),
        "concurrency": float(figures["concurrency"]),
        "batch": float(figures["batch"]),
    }
    c = figures["concurrency"]
    if system == FLOOR:
        note = (
            f"{c} tasks each awaiting XADD; another process: XREADGROUP COUNT "
            f"{figures['batch']} + one XACK per batch"
        )
    elif system == PIPELINED:
        note = f"one task sending XADD pipelines of {c}; same consumer"
    else:
        note = (
            f"{c} tasks each awaiting emit(); another process: a bus with one async handler "
            "(decodes, dispatches, acknowledges)"
        )
        lat, loaded = figures["emit_latency_us"], figures["emit_latency_under_load_us"]
        extra |= {
            "ratio_to_floor": float(figures["ratio_to_floor"]),
            "ratio_to_pipelined_floor": float(figures["ratio_to_pipelined_floor"]),
            "emit_p50_us": float(lat["p50_us"]),
            "emit_p99_us": float(lat["p99_us"]),
            "emit_loaded_p50_us": float(loaded["p50_us"]),
            "emit_loaded_p99_us": float(loaded["p99_us"]),
        }
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
