"""Helpers of the Kafka tests: unique names, polling, worker processes. The broker
itself (``KafkaBroker``) is in tests/kafka_broker.py, shared with the CLI and app tests."""

from __future__ import annotations

import json
import signal
import subprocess
import uuid
from pathlib import Path
from typing import Any

from kafka_broker import KafkaBroker, no_kafka
from support import eventually, spawn_worker, stop_process

__all__ = ["KafkaBroker", "eventually", "no_kafka"]  # for the Kafka test modules

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
WORKER = HERE / "kafka" / "worker.py"

# Group timings for tests: a dead member is noticed within seconds, not the default 10 s.
FAST_GROUP = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 500}


def app_env(servers: str, topic: str) -> dict[str, str]:
    """The EVENTBUS_* variables of an app on ``topic`` (its group ``<topic>.group``), with
    the tests' short group timings."""
    return {
        "EVENTBUS_BACKEND": "kafka",
        "EVENTBUS_KAFKA_BOOTSTRAP_SERVERS": servers,
        "EVENTBUS_KAFKA_TOPIC": topic,
        "EVENTBUS_KAFKA_GROUP_ID": f"{topic}.group",
        "EVENTBUS_KAFKA_CONSUMER_OPTIONS": json.dumps(FAST_GROUP),
    }


def unique(kind: str) -> str:
    """A topic or group name of this test's own."""
    return f"t-{kind}-{uuid.uuid4().hex[:10]}"


class Worker:
    """A worker process (tests/kafka/worker.py) whose handlers record to a JSON-lines file."""

    def __init__(self, servers: str, topic: str, name: str, directory: Path, **options: Any):
        self.servers, self.topic, self.name = servers, topic, name
        self.options = options
        self.directory = directory
        self.log = directory / f"worker-{name}.log"
        self.journal = directory / f"journal-{name}.jsonl"
        self.ready_file = directory / f"ready-{name}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        self.ready_file.unlink(missing_ok=True)
        config = {
            "servers": self.servers,
            "topic": self.topic,
            "name": self.name,
            "journal": str(self.journal),
            "ready": str(self.ready_file),
            **self.options,
        }
        self.proc = spawn_worker(WORKER, config, self.log)
        return self

    async def ready(self, timeout: float = 30.0) -> None:
        async def check() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"worker {self.name} exited early:\n{self.output()}")
            return self.ready_file.exists()

        await eventually(check, timeout=timeout, what=f"worker {self.name} to be ready")

    def records(self) -> list[dict[str, Any]]:
        """What its handlers and its consumer wrote, in order (a torn last line skipped)."""
        if not self.journal.exists():
            return []
        found = []
        for line in self.journal.read_text().splitlines():
            try:
                found.append(json.loads(line))
            except ValueError:
                continue  # killed in the middle of a write
        return found

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-5000:] if self.log.exists() else ""

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> int | None:
        """SIGTERM and wait (SIGKILL after a while); returns the exit code."""
        return stop_process(self.proc, timeout=30)
