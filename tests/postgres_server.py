"""A private PostgreSQL cluster for tests and benchmarks (stdlib only).

Driven through ``scripts/postgres-server.sh`` (the same script ``.ci/run`` uses): a
throwaway cluster in a temporary directory, on a free 127.0.0.1 port, with a role that
has a password and a database of its own.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = REPO_ROOT / "scripts" / "postgres-server.sh"


def installed() -> bool:
    """Whether Debian's postgresql package (its initdb) is on this machine."""
    return any(Path("/usr/lib/postgresql").glob("*/bin/initdb"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PostgresServer:
    """``start()`` once (initdb, server, role and database), ``stop()`` / ``start()`` to
    restart with the same data, ``cleanup()`` to stop and delete everything."""

    user = "eventbus"
    database = "eventbus"

    def __init__(self, *, durable: bool = False) -> None:
        self.port = _free_port()
        # Not under pytest's tmp_path: the postgres user must be able to reach the
        # directory, and /tmp/pytest-of-root is private to root.
        self.directory = Path(tempfile.mkdtemp(prefix="eventbus-pg-"))
        self.password = secrets.token_hex(12)
        self.durable = durable
        self._created = False

    def url(self, driver: str = "asyncpg") -> str:
        return (
            f"postgresql+{driver}://{self.user}:{self.password}@127.0.0.1:{self.port}/"
            f"{self.database}"
        )

    def _script(self, *args: str) -> None:
        result = subprocess.run(
            ["bash", str(SCRIPT), *args],
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"postgres-server.sh {args[0]} failed ({result.returncode}): "
                f"{result.stderr.strip() or result.stdout.strip()}"
            )

    def start(self) -> None:
        durable = ["--durable"] if self.durable else []
        self._script("start", str(self.port), str(self.directory), *durable)
        if not self._created:
            self._script(
                "create-db",
                str(self.port),
                str(self.directory),
                self.user,
                self.password,
                self.database,
            )
            self._created = True

    def stop(self) -> None:
        self._script("stop", str(self.port), str(self.directory))

    def cleanup(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)
