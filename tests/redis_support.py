"""Helpers of the Redis tests: private redis-servers, polling, worker processes."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from support import eventually, spawn_worker, stop_process

__all__ = ["eventually"]  # for the Redis test modules

from fastapi_opinionated_eventbus import EventBus

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent

# The tests' clients keep decode_responses off, so every reply is bytes: redis-py's types
# (bytes | str, optional) cannot know it. Casts to these say so, as the backend's own do.
Entries = list[tuple[bytes, dict[bytes, bytes]]]
"""An XRANGE reply: (entry id, fields) pairs."""
Hash = dict[bytes, bytes]
"""An HGETALL reply."""
WORKER = HERE / "redis" / "worker.py"


class Worker:
    """A worker process (tests/redis/worker.py) running a bus with recording handlers."""

    def __init__(self, url: str, prefix: str, name: str, log_dir: Path, **options: Any) -> None:
        self.url, self.prefix, self.name = url, prefix, name
        self.options = options
        self.log = log_dir / f"worker-{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        config = {"url": self.url, "prefix": self.prefix, "name": self.name, **self.options}
        self.proc = spawn_worker(WORKER, config, self.log)
        return self

    async def ready(self, client: aioredis.Redis, timeout: float = 30.0) -> None:
        async def check() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"worker {self.name} exited early:\n{self.output()}")
            return bool(await client.get(f"{self.prefix}:ready:{self.name}"))

        await eventually(check, timeout=timeout, what=f"worker {self.name} to be ready")

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> int | None:
        """SIGTERM and wait (SIGKILL after a while); returns the exit code."""
        return stop_process(self.proc)


Make = Callable[..., EventBus]
"""``make_bus(**options)``: see the ``make_bus`` fixture."""
