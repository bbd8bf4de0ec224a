"""Shared by the tests of handlers' dependencies resolved in a broker's consuming process
(tests/redis, tests/kafka): the app's dependencies and main.py, and the final check.

The app is ``users/deps.py`` (below) plus a ``users/handlers.py`` of each test's own: its
``greet`` handler of ``user.created`` takes a ``yield`` dependency of the backend's (its
teardown records ``closed <pid>``), ``greeting`` and ``event_id``, and records
``greeted <greeting> <name> <event id> <pid>``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

__all__ = ["DEPS", "MAIN", "assert_resolved_in_one_consumer"]

DEPS = """
    from __future__ import annotations

    from fastapi_opinionated_eventbus import EventEnvelope


    def get_greeting() -> str:
        return "hello"  # main.py overrides it


    def get_event_id(event: EventEnvelope) -> str:
        return event.id
"""

MAIN = """
from fastapi_opinionated.app import App

from fastapi_opinionated_eventbus import EventBusPlugin

App.configurePlugin(EventBusPlugin())  # options from EVENTBUS_* variables
app = App.create(title="Greetings")

from app.domains.users.deps import get_greeting  # noqa: E402

app.dependency_overrides[get_greeting] = lambda: "overridden hello"
"""


def assert_resolved_in_one_consumer(
    greeted: list[str], closed: list[str], sent: Sequence[str | None]
) -> None:
    """Both events (``ann`` then ``bob``, ids ``sent``) were handled in one other process,
    with the override and the event's id, and each run's teardown ran there."""
    pids = {line.split()[-1] for line in greeted}
    assert len(pids) == 1 and pids != {str(os.getpid())}, "handled in the uvicorn process"
    [pid] = pids
    assert sorted(line.rsplit(" ", 1)[0] for line in greeted) == sorted(
        [f"overridden hello ann {sent[0]}", f"overridden hello bob {sent[1]}"]
    )
    assert closed == [pid, pid]
