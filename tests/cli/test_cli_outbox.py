"""``outbox stats``: the outbox table's counts, from EVENTBUS_OUTBOX_URL."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

from sqlalchemy import MetaData, create_engine, insert
from sqlalchemy.orm import Session
from support import free_port

from fastapi_opinionated_eventbus import EventBus
from fastapi_opinionated_eventbus.outbox import outbox_table

Run = Callable[..., CompletedProcess[str]]


def test_outbox_stats(cli: Run, make_app: Callable[..., Path], tmp_path: Path) -> None:
    root = make_app({"users/__init__.py": ""})
    db = tmp_path / "app.db"
    engine = create_engine(f"sqlite:///{db}")
    table = outbox_table(MetaData())
    table.create(engine)
    writer = EventBus(outbox_url=f"sqlite+aiosqlite:///{db}")  # never started: rows wait
    with Session(engine) as session, session.begin():
        writer.outbox(session).emit("user.created", {"id": 1})
        writer.outbox(session).emit("user.created", {"id": 2})
        session.execute(insert(table).values(event_id="x", name="bad", body="{", dead_at=None))
    with engine.begin() as conn:
        conn.execute(
            table.update().where(table.c.event_id == "x").values(dead_at=table.c.created_at)
        )
    engine.dispose()

    result = cli(root, "outbox", "stats", "--json", EVENTBUS_OUTBOX_URL=f"sqlite:///{db}")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["pending"] == 2 and report["dead"] == 1 and report["dispatched_kept"] == 0
    assert report["table"] == "eventbus_outbox" and report["oldest_age_seconds"] >= 0

    shown = cli(root, "outbox", "stats", EVENTBUS_OUTBOX_URL=f"sqlite:///{db}", NO_COLOR="1")
    assert shown.returncode == 0, shown.stderr
    assert "pending" in shown.stdout and "2" in shown.stdout


def test_outbox_stats_errors(cli: Run, make_app: Callable[..., Path]) -> None:
    root = make_app({"users/__init__.py": ""})
    off = cli(root, "outbox", "stats")
    assert off.returncode == 2
    assert off.stderr.startswith("error: the outbox is off") and "EVENTBUS_OUTBOX_URL" in off.stderr

    url = f"postgresql+asyncpg://app:s3cr3t-pw@127.0.0.1:{free_port()}/db"
    unreachable = cli(root, "outbox", "stats", EVENTBUS_OUTBOX_URL=url)
    assert unreachable.returncode == 2
    assert "cannot read the outbox" in unreachable.stderr
    assert "s3cr3t-pw" not in unreachable.stderr + unreachable.stdout
    assert "app:***@127.0.0.1" in unreachable.stderr
