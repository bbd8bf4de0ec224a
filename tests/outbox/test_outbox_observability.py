"""What the outbox tells: metrics gauges, health, configuration errors without secrets, and
nothing imported for users who do not use it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from outbox_support import Database, Engines, Make, eventually
from sqlalchemy.ext.asyncio import AsyncSession

from fastapi_opinionated_eventbus import ConfigurationError, EventBus
from fastapi_opinionated_eventbus.metrics import PrometheusCollector


def _gauge(collector: PrometheusCollector, name: str) -> float | None:
    for line in collector.exposition()[0].decode().splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    return None


async def test_pending_rows_and_oldest_age_gauges(
    database: Database, make_bus: Make, engines: Engines
) -> None:
    bus = make_bus(database, metrics="prometheus")
    collector = bus.metrics
    assert isinstance(collector, PrometheusCollector)
    release = asyncio.Event()

    async def stuck(n: int) -> None:
        await release.wait()

    bus.subscribe("job", stuck)
    await bus.start()
    engine = engines(database.async_url)
    async with AsyncSession(engine) as session, session.begin():
        for n in range(3):
            await bus.outbox(session).emit("job", n)
    # The relay holds the batch while its handlers wait: the rows are still pending.
    await eventually(
        lambda: _gauge(collector, "eventbus_outbox_pending_rows") == 3.0, what="3 pending rows"
    )
    await eventually(
        lambda: (_gauge(collector, "eventbus_outbox_oldest_age_seconds") or 0) > 0.3,
        what="the oldest row ageing",
    )
    health = await bus.health()
    assert health["outbox"]["pending"] == 3 and health["outbox"]["oldest_age_seconds"] > 0
    release.set()
    await eventually(
        lambda: _gauge(collector, "eventbus_outbox_pending_rows") == 0.0, what="no pending row"
    )
    assert _gauge(collector, "eventbus_outbox_oldest_age_seconds") == 0.0


def test_no_outbox_gauges_without_the_outbox() -> None:
    bus = EventBus(metrics="prometheus")
    assert isinstance(bus.metrics, PrometheusCollector)
    assert b"outbox" not in bus.metrics.exposition()[0]


async def test_health_of_a_bus_that_has_not_started(
    sqlite_database: Database, make_bus: Make
) -> None:
    health = await make_bus(sqlite_database).health()
    assert health["outbox"]["relaying"] is False
    assert health["outbox"]["error"] == "not started"
    assert health["outbox"]["table"] == sqlite_database.table


def test_configuration_errors_name_the_option_and_hide_the_password() -> None:
    secret = "s3cr3t-pw"
    cases = {
        f"sqlite+pysqlite:///{secret}.db": "async driver",
        "sqlite+aiosqlite:///:memory:": "in-memory",
        f"postgresql+nodriver://user:{secret}@localhost/db": "cannot be used by the relay",
        "not a url": "must be a SQLAlchemy database URL",
    }
    for url, problem in cases.items():
        with pytest.raises(ConfigurationError) as caught:
            EventBus(outbox_url=url)
        message = str(caught.value)
        assert "outbox_url" in message and problem in message, message
        if "user:" in url:
            assert secret not in message and "user:***@" in message, message
    with pytest.raises(ConfigurationError, match="'outbox_table'"):
        EventBus(outbox_url="sqlite+aiosqlite:///x.db", outbox_table="drop table; --")
    with pytest.raises(ConfigurationError, match="'outbox_poll_interval'") as caught:
        EventBus(outbox_url=f"postgresql://u:{secret}@h/db", outbox_poll_interval=0)
    assert secret not in str(caught.value)


def test_options_from_environment_variables(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("EVENTBUS_OUTBOX_URL", f"sqlite:///{tmp_path}/env.db")
    monkeypatch.setenv("EVENTBUS_OUTBOX_TABLE", "events_out")
    monkeypatch.setenv("EVENTBUS_OUTBOX_KEEP", "true")
    monkeypatch.setenv("EVENTBUS_OUTBOX_BATCH_SIZE", "7")
    bus = EventBus()
    s = bus.settings
    assert (s.outbox_table, s.outbox_keep, s.outbox_batch_size) == ("events_out", True, 7)
    assert s.outbox_poll_interval == 1.0 and s.outbox_create_table is True
    assert s.outbox_url == f"sqlite:///{tmp_path}/env.db"  # the relay adds aiosqlite


def test_sqlalchemy_is_not_imported_without_the_outbox(tmp_path: Path) -> None:
    script = """
import asyncio, sys
from fastapi_opinionated_eventbus import EventBus
from fastapi_opinionated_eventbus.plugin import EventBusPlugin

async def main():
    bus = EventBus(metrics="prometheus", introspection_path="/x")
    bus.subscribe("a", lambda: None)
    await bus.start()
    await bus.emit("a")
    await bus.health()
    await bus.aclose()

asyncio.run(main())
assert not any(m == "sqlalchemy" or m.startswith("sqlalchemy.") for m in sys.modules), "imported"
bus = EventBus(outbox_url="sqlite+aiosqlite:///{db}")
assert "sqlalchemy" in sys.modules
print("ok")
""".replace("{db}", str(tmp_path / "x.db"))
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
