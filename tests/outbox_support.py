"""Helpers of the outbox tests: databases, recording handlers, polling, row counts."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Integer, MetaData, String, Table, select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import DeclarativeBase
from support import spawn_worker

from fastapi_opinionated_eventbus import EventBus, current_event
from fastapi_opinionated_eventbus.outbox import outbox_table


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "outbox_test_users"
    id = Column(Integer, primary_key=True)
    name = Column(String(100), nullable=False)


@dataclass(frozen=True)
class Database:
    """Where a test's outbox lives: the URLs of one database and a table of its own."""

    kind: str  # "sqlite" | "postgresql"
    async_url: str
    sync_url: str
    table: str
    password: str = ""


@dataclass
class Recorder:
    """An async handler recording each call's event id and arguments."""

    calls: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)

    async def __call__(self, *args: Any) -> None:
        self.calls.append((current_event().id, args))

    @property
    def ids(self) -> list[str]:
        return [event_id for event_id, _ in self.calls]

    async def wait_for(self, count: int, timeout: float = 15.0) -> None:
        await eventually(lambda: len(self.calls) >= count, timeout=timeout, what=f"{count} calls")


async def eventually(
    check: Callable[[], Any], *, timeout: float = 15.0, what: str = "condition"
) -> Any:
    """Poll ``check`` (sync or async) until truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if isinstance(value, Awaitable):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


async def outbox_rows(db: Database) -> list[dict[str, Any]]:
    """Every row of the test's outbox table, in order."""
    table = outbox_table(MetaData(), db.table)
    engine = create_async_engine(db.async_url)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(select(table).order_by(table.c.seq))
            return [dict(row._mapping) for row in result]
    finally:
        await engine.dispose()


def users_table(name: str) -> Table:
    return Table(
        name,
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("name", String(100), nullable=False),
    )


HERE = Path(__file__).resolve().parent
WORKER = HERE / "outbox" / "worker.py"


class Worker:
    """A process running tests/outbox/worker.py; see its docstring for the roles."""

    def __init__(self, db: Database, role: str, name: str, directory: Path, **options: Any):
        self.db, self.role, self.name = db, role, name
        self.record = directory / f"record-{name}.txt"
        self.ready_file = directory / f"ready-{name}.txt"
        self.log = directory / f"worker-{name}.log"
        self.options = options
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        config = {
            "role": self.role,
            "name": self.name,
            "url": self.db.async_url,
            "table": self.db.table,
            "record": str(self.record),
            "ready": str(self.ready_file),
            **self.options,
        }
        self.proc = spawn_worker(WORKER, config, self.log)
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    async def ready(self, timeout: float = 30.0) -> str:
        def check() -> str | None:
            if self.ready_file.exists() and self.ready_file.read_text().endswith("\n"):
                return self.ready_file.read_text().strip()
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"worker {self.name} exited early:\n{self.output()}")
            return None

        result: str = await eventually(check, timeout=timeout, what=f"worker {self.name}")
        return result

    def wait_dead(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def handled(self, *, hanging: bool = False) -> list[str]:
        """The event ids this worker's handler finished (or, ``hanging``, started and
        hangs in), in order."""
        if not self.record.exists():
            return []
        lines = [line.split() for line in self.record.read_text().splitlines() if line]
        return [words[0] for words in lines if (words[-1] == "hanging") == hanging]

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode


Make = Callable[..., EventBus]
Engines = Callable[..., AsyncEngine]
"""``engines(url, **options)``: see the ``engines`` fixture."""
"""``make_bus(db, **options)``: see the ``make_bus`` fixture."""


def bus_options(db: Database, **options: Any) -> dict[str, Any]:
    return {
        "outbox_url": db.async_url,
        "outbox_table": db.table,
        "outbox_poll_interval": 0.1,
        "shutdown_timeout": 2.0,
        **options,
    }
