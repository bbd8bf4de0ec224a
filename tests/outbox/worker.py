"""A process of the outbox tests: a relay, or an emitter killed right after its commit.

    python tests/outbox/worker.py '{"role": ..., "url": ..., "table": ..., "name": ...,
                                    "record": <file>, "ready": <file>, <bus options>}'

Roles:

* ``relay``: a started bus whose ``job`` handler appends ``<event id> <name>`` to
  ``record`` (one line per call); touches ``ready`` once started; stops on SIGTERM.
  With ``"hang": true`` the handler appends ``<event id> <name> hanging`` and never
  returns (the process is to be killed mid-batch).
* ``emit-then-die``: the same bus, relay running; writes one ``job`` event in a
  transaction, appends its id to ``ready`` before committing, and kills itself with
  SIGKILL from the session's ``after_commit`` hook: committed, never dispatched here.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import fastapi_opinionated.app  # noqa: F401 - the core sets up logging at import
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from fastapi_opinionated_eventbus import EventBus, current_event


async def main(config: dict[str, Any]) -> None:
    role, name = config.pop("role"), config.pop("name")
    record, ready = Path(config.pop("record")), Path(config.pop("ready"))
    url, table = config.pop("url"), config.pop("table")
    delay = float(config.pop("handler_delay", 0.0))
    hang = bool(config.pop("hang", False))
    bus = EventBus(outbox_url=url, outbox_table=table, shutdown_timeout=5.0, **config)
    # Written synchronously on purpose: one whole line per write, in handler order.
    out = record.open("a", encoding="utf-8")  # noqa: ASYNC230

    async def job(n: int) -> None:
        if hang:
            out.write(f"{current_event().id} {name} hanging\n")
            out.flush()
            await asyncio.sleep(3600)
        if delay:
            await asyncio.sleep(delay)
        out.write(f"{current_event().id} {name}\n")
        out.flush()

    bus.subscribe("job", job)
    await bus.start()
    if role == "emit-then-die":
        await emit_then_die(bus, url, ready)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    _write(ready, "ready\n")
    await stop.wait()
    await bus.aclose()
    out.close()


async def emit_then_die(bus: EventBus, url: str, ready: Path) -> None:
    engine = create_async_engine(url)
    async with AsyncSession(engine) as session:
        # Right after the database committed: the relay was rung, but has not run.
        event.listen(
            session.sync_session, "after_commit", lambda _: os.kill(os.getpid(), signal.SIGKILL)
        )
        async with session.begin():
            envelope = await bus.outbox(session).emit("job", 1)
            _write(ready, f"{envelope.id}\n")
    raise AssertionError("still alive after the commit")


def _write(path: Path, text: str) -> None:
    path.write_text(text)


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
