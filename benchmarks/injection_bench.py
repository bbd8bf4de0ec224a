"""Scenario 12: one async handler with one trivial async dependency (FastAPI ``Depends``).

Every system resolves ``get_value`` (an ``async def`` returning 1) for each event and
passes it to the handler, which does the usual ``counter.n += 1``:

- the floor: ``await h(1, value=await get_value())``, what resolving costs at the least;
- ours: ``async def h(x, value=Depends(get_value))`` subscribed to a started bus, ``await
  bus.emit(name, 1)`` (the handler leaves the fast path: it needs the resolving wrapper);
- fastapi-events: its README's dependency-injected local handler, ``async def h(event,
  value=Depends(get_value))`` registered on a ``LocalHandler``, dispatched inside one ASGI
  call of its middleware (its only way to run local handlers, as in scenario 1).

The peer adapters call these builders (``injected()`` in :mod:`benchmarks.peers`).
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends

from benchmarks.harness import Case, Counter

EVENT = "bench.event"


async def get_value() -> int:
    return 1


def _handler(counter: Counter) -> Any:
    async def handler(x: Any, value: int = Depends(get_value)) -> None:
        counter.n += value

    handler.__annotations__ = {}  # as benchmarks.peers.bare(): no string annotations
    return handler


async def floor_case() -> Case:
    counter = Counter()

    async def h(x: Any, value: int) -> None:
        counter.n += value

    async def run(n: int) -> None:
        for _ in range(n):
            await h(1, value=await get_value())

    return Case(run, counter, note="await h(1, value=await get_value())")


async def ours_case(bus: Any) -> Case:
    counter = Counter()
    bus.subscribe(EVENT, _handler(counter))
    await bus.start()
    emit = bus.emit

    async def run(n: int) -> None:
        for _ in range(n):
            await emit(EVENT, 1)

    note = "await emit(name, 1); handler h(x, value=Depends(get_value))"
    return Case(run, counter, close=bus.aclose, note=note)


def fastapi_events_handlers(counter: Counter) -> list[tuple[str, Any]]:
    """The (name, handler) to register on a LocalHandler; its handler gets the event."""
    return [(EVENT, _handler(counter))]


FASTAPI_EVENTS_NOTE = (
    "its README's local handler h(event, value=Depends(get_value)), dispatched in one ASGI "
    "call of EventHandlerASGIMiddleware"
)
