"""A third-party backend, as another package would add one: a broker kept in a directory.

The CLI tests install it through the entry-point group ``fastapi_opinionated_eventbus.backends``
(a ``.dist-info`` on ``PYTHONPATH``), to show that every command goes through the backend
protocol and knows no concrete backend. Its health report has keys of its own, like the
Kafka backend's (topic, group, partitions, offsets).

Options (``EVENTBUS_BACKEND_OPTIONS``): ``{"directory": "..."}``; the broker is "down" while
the directory does not exist. Each published event is one JSON line of ``events.jsonl``;
``offsets.json`` holds the consumer group's committed offset; each line of ``dead.jsonl`` is
a dead letter (``event``, ``id``, ``handler``, ``error``, ``message``, ``attempts``).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Sequence
from contextvars import Context
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi_opinionated_eventbus import (
    BackendUnavailable,
    DeadLetter,
    EmitResult,
    EventEnvelope,
    EventSerializationError,
)
from fastapi_opinionated_eventbus.backends.base import (
    BackendHealth,
    BackendPort,
    StopReport,
    start_in_context,
)

if TYPE_CHECKING:
    from fastapi_opinionated_eventbus._core.registry import Plan
    from fastapi_opinionated_eventbus._core.settings import BusSettings


class MemqHealth(BackendHealth, total=False):
    topic: str
    group: str
    assigned_partitions: list[int]
    committed_offsets: dict[str, int]
    end_offsets: dict[str, int]


class MemqBackend:
    name = "memq"
    distributed = True
    pending_entries = 0  # consumes nothing in these tests

    def __init__(self, settings: BusSettings, port: BackendPort) -> None:
        self.directory = Path(settings.backend_options["directory"])
        self.topic = f"{(port.app_name or 'eventbus').lower().replace(' ', '-')}.events"

    def _events(self) -> Path:
        return self.directory / "events.jsonl"

    def _lines(self, name: str) -> int:
        path = self.directory / name
        return len(path.read_text().splitlines()) if path.exists() else 0

    async def connect(self) -> None:
        if not self.directory.is_dir():
            raise BackendUnavailable(f"memq broker at {self.directory} is down")

    async def start(self) -> None:
        await self.connect()

    def check(self, envelope: EventEnvelope) -> None:
        try:
            json.dumps([envelope.args, envelope.kwargs])
        except TypeError as exc:
            raise EventSerializationError(str(exc)) from None

    async def publish(self, envelope: EventEnvelope, plan: Plan) -> EmitResult:
        self.check(envelope)
        record = {"id": envelope.id, "name": envelope.name, "args": list(envelope.args)}
        with self._events().open("a") as out:
            out.write(json.dumps(record) + "\n")
        return EmitResult(envelope, 0, published=True)

    def start_publish(
        self, envelope: EventEnvelope, plan: Plan, context: Context
    ) -> Awaitable[object] | None:
        return start_in_context(self.publish(envelope, plan), context)

    async def publish_many(self, batch: Sequence[tuple[EventEnvelope, Plan]]) -> list[EmitResult]:
        return [await self.publish(envelope, plan) for envelope, plan in batch]

    # Nothing runs in the background: the lifecycle has nothing to wait for.
    async def pause(self) -> None: ...

    async def settle(self, timeout: float) -> None: ...

    async def stop(self, timeout: float) -> StopReport:
        return StopReport(cancelled=0, abandoned=0, unconfirmed=0)

    async def health(self) -> MemqHealth:
        offsets = self.directory / "offsets.json"
        committed = json.loads(offsets.read_text()) if offsets.exists() else {}
        return MemqHealth(
            backend=self.name,
            reachable=self.directory.is_dir(),
            dead_letters=self._lines("dead.jsonl"),
            in_flight=0,
            topic=self.topic,
            group="memq-group",
            assigned_partitions=[],
            committed_offsets=committed,
            end_offsets={"0": self._lines("events.jsonl")},
        )

    async def dead_letters(self) -> list[DeadLetter]:
        path = self.directory / "dead.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        return [_letter(json.loads(line)) for line in lines]

    async def replay_dead_letters(self) -> EmitResult:
        return EmitResult(None, 0)

    async def purge_dead_letters(self) -> int:
        count = self._lines("dead.jsonl")
        (self.directory / "dead.jsonl").unlink(missing_ok=True)
        return count


def _letter(stored: dict[str, Any]) -> DeadLetter:
    return DeadLetter(
        event=EventEnvelope(stored["event"], (), {}, event_id=stored["id"]),
        handler=stored["handler"],
        exception_type=stored["error"],
        message=stored["message"],
        traceback="",
        attempts=stored["attempts"],
    )
