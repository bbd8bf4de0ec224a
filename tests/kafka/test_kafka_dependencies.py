"""Dependencies of a handler resolved in the consuming process: an app under uvicorn takes
the events a bus in this test process publishes to Kafka, and its handler's dependencies
(a ``yield`` one, an overridden one, one reading the EventEnvelope) are resolved there."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import httpx
from dependencies_support import DEPS, MAIN, assert_resolved_in_one_consumer
from kafka_support import REPO_ROOT, app_env, eventually
from support import uvicorn, wait_until_serving

from fastapi_opinionated_eventbus import EventBus

# The consuming process records to a file named by an environment variable, one short
# line per O_APPEND write.
HANDLERS = """
    from __future__ import annotations

    import os
    from typing import Annotated

    from fastapi import Depends

    from fastapi_opinionated_eventbus import OnInternalEvent

    from .deps import get_event_id, get_greeting

    JOURNAL = os.environ["TEST_JOURNAL"]


    def write(line: str) -> None:
        with open(JOURNAL, "a", encoding="utf-8") as out:
            out.write(line + "\\n")


    async def get_journal():
        try:
            yield write
        finally:  # the teardown, in the consuming process
            write(f"closed {os.getpid()}")


    @OnInternalEvent("user.created")
    async def greet(
        name: str,
        journal: Annotated[object, Depends(get_journal)],
        greeting: Annotated[str, Depends(get_greeting)],
        event_id: Annotated[str, Depends(get_event_id)],
    ) -> None:
        journal(f"greeted {greeting} {name} {event_id} {os.getpid()}")
"""


async def test_a_consumer_process_resolves_the_handlers_dependencies(
    app_dir: Callable[..., Path], kafka_servers: str, topic: str, tmp_path: Path
) -> None:
    root = app_dir({"users/deps.py": DEPS, "users/handlers.py": HANDLERS})
    (root / "main.py").write_text(MAIN)
    journal = tmp_path / "journal.txt"
    env = {
        **os.environ,
        **app_env(kafka_servers, topic),
        "TEST_JOURNAL": str(journal),
        "PYTHONPATH": os.pathsep.join([str(root), str(REPO_ROOT)]),
    }
    with uvicorn(root, "main:app", log=tmp_path / "uvicorn.log", env=env) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            await wait_until_serving(client)
        # A producer-only bus here: it has no handlers, so it joins no group.
        producer = EventBus(
            backend="kafka", kafka_bootstrap_servers=kafka_servers, kafka_topic=topic
        )
        await producer.start()
        try:
            sent = [(await producer.emit("user.created", name)).event_id for name in ("ann", "bob")]
        finally:
            await producer.aclose()

        async def read(kind: str) -> list[str] | None:
            lines = journal.read_text().splitlines() if journal.exists() else []
            found = [line.split(" ", 1)[1] for line in lines if line.startswith(kind + " ")]
            return found if len(found) >= 2 else None

        # The group's first assignment takes seconds.
        greeted = await eventually(lambda: read("greeted"), timeout=60, what="both handled")
        closed = await eventually(lambda: read("closed"), timeout=30, what="both torn down")

    assert_resolved_in_one_consumer(greeted, closed, sent)
