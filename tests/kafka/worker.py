"""A worker process for the Kafka tests: a standalone bus whose handlers write a journal.

    python tests/kafka/worker.py '{"servers": ..., "topic": ..., "name": ..., "journal": ...,
                                   "ready": ..., "commands": ..., <bus options>}'

The journal is JSON lines, each written with one O_APPEND write (a kill -9 loses at most
the line being written):

* ``{"e": "start"|"end", "id", "n", "key"}`` around the ``job`` handler. Payload
  ``{"sleep": s}`` makes it sleep.
* ``{"e": "news", "item"}``: the broadcast handler ``news``.
* ``{"e": "assigned", "partitions": [...]}`` whenever this process's partitions change.

Creates the ready file once started; stops on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import fastapi_opinionated.app  # noqa: F401 - the core sets up logging at import

from fastapi_opinionated_eventbus import EventBus, current_event
from fastapi_opinionated_eventbus.backends.kafka import KafkaBackend

FAST_GROUP = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 500}


async def main(config: dict[str, Any]) -> None:
    name, journal = config.pop("name"), Path(config.pop("journal"))
    ready = Path(config.pop("ready"))
    fd = os.open(journal, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(**entry: Any) -> None:
        os.write(fd, (json.dumps({**entry, "w": name}) + "\n").encode())

    options: dict[str, Any] = {
        "backend": "kafka",
        "kafka_bootstrap_servers": config.pop("servers"),
        "kafka_topic": config.pop("topic"),
        "kafka_partitions": 4,
        "kafka_consumer_options": FAST_GROUP,
        "shutdown_timeout": 3.0,
        **config,
    }
    options.setdefault("kafka_group_id", f"{options['kafka_topic']}.group")
    bus = EventBus(**options)

    async def job(payload: dict[str, Any]) -> None:
        event = current_event()
        entry = {"id": event.id, "n": payload.get("n"), "key": payload.get("key")}
        write(e="start", attempt=event.attempt, **entry)
        if payload.get("sleep"):
            await asyncio.sleep(payload["sleep"])
        write(e="end", **entry)

    async def news(item: str) -> None:
        write(e="news", item=item)

    bus.subscribe("job", job)
    bus.subscribe("news", news, broadcast=True)
    await bus.start()
    backend = bus.backend
    assert isinstance(backend, KafkaBackend)

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    mark(ready)
    partitions: list[int] | None = None
    while not stop.is_set():
        if backend.assigned_partitions != partitions:
            partitions = backend.assigned_partitions
            write(e="assigned", partitions=partitions)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.1)
    await bus.aclose()
    os.close(fd)


def mark(path: Path) -> None:
    path.touch()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
