"""One adapter per system, each used the way its own documentation shows.

Every handler does the same work: one ``counter.n += 1``. Adapter methods return a ready
:class:`~benchmarks.harness.Case` (built inside the running loop) or raise ``Unsupported``:

- ``awaited(k)``: one event with k async handlers, the caller waits until all of them ran;
- ``sync_handler()``: one plain-function handler, run off the loop where the system can;
- ``crowded()``: one matching handler among 10,000 exact names and 1,000 patterns;
- ``background()``: fire N events, then wait until all were handled (throughput);
- ``after_response()``: an ASGI app whose route emits one event handled after the response.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ClassVar

from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from benchmarks import injection_bench
from benchmarks.asgi import make_app, paired_case
from benchmarks.harness import Case, Counter, PairedCase, Unsupported, wait_for_count

EVENT = "bench.event"
OTHER_EXACT = 10_000
OTHER_PATTERNS = 1_000

AsyncHandler = Callable[[Any], Coroutine[Any, Any, None]]


def bare[F: Callable[..., Any]](func: F) -> F:
    """Drop the annotations, as if the handler were written without type hints.

    Under ``from __future__ import annotations`` they are strings, and fastapi-events inspects
    every handler's signature on every event, evaluating string annotations each time (about
    15 µs here): users who annotate without the future import do not pay that, so no one does.
    """
    func.__annotations__ = {}
    return func


def async_handlers(counter: Counter, k: int) -> list[AsyncHandler]:
    """k distinct functions (some systems refuse the same function twice)."""

    def make() -> AsyncHandler:
        async def handler(x: Any) -> None:
            counter.n += 1

        return bare(handler)

    return [make() for _ in range(k)]


def sync_handler(counter: Counter) -> Callable[[Any], None]:
    def handler(x: Any) -> None:
        counter.n += 1

    return bare(handler)


def crowd_names() -> list[str]:
    return [f"other.{i}" for i in range(OTHER_EXACT)] + [f"pat{i}.*" for i in range(OTHER_PATTERNS)]


class Adapter:
    label: ClassVar[str]
    role: ClassVar[str]  # "floor" | "ours" | "peer"
    unavailable: str | None = None

    async def awaited(self, k: int) -> Case:
        raise Unsupported("no awaited emit")

    async def sync_handler(self) -> Case:
        raise Unsupported("no sync handlers")

    async def crowded(self) -> Case:
        raise Unsupported("no name-based routing")

    async def background(self) -> Case:
        raise Unsupported("no background emit")

    async def after_response(self) -> PairedCase:
        raise Unsupported("no after-response dispatch")

    async def injected(self) -> Case:
        raise Unsupported("no dependency injection in handlers")


# --- floors --------------------------------------------------------------------------------


class DirectAwait(Adapter):
    label = "floor: direct await"
    role = "floor"

    async def awaited(self, k: int) -> Case:
        counter = Counter()
        handlers = async_handlers(counter, k)
        if k == 1:
            (h,) = handlers

            async def run(n: int) -> None:
                for _ in range(n):
                    await h(1)

        else:

            async def run(n: int) -> None:
                for _ in range(n):
                    for h in handlers:
                        await h(1)

        note = "" if k == 1 else f"{k} sequential awaits"
        return Case(run, counter, k, note=note)

    async def crowded(self) -> Case:
        return await self.awaited(1)

    async def injected(self) -> Case:
        return await injection_bench.floor_case()


class Gather(Adapter):
    label = "floor: asyncio.gather"
    role = "floor"

    async def awaited(self, k: int) -> Case:
        counter = Counter()
        handlers = async_handlers(counter, k)

        async def run(n: int) -> None:
            for _ in range(n):
                await asyncio.gather(*[h(1) for h in handlers])

        return Case(run, counter, k, note=f"gather of {k} coroutines (one Task each)")


class DirectCall(Adapter):
    label = "floor: direct sync call"
    role = "floor"

    async def _case(self) -> Case:
        counter = Counter()
        h = sync_handler(counter)

        async def run(n: int) -> None:
            for _ in range(n):
                h(1)

        return Case(run, counter, note="plain function called on the loop")

    async def awaited(self, k: int) -> Case:
        if k != 1:
            raise Unsupported("single handler reference only")
        return await self._case()

    async def sync_handler(self) -> Case:
        return await self._case()


class ToThread(Adapter):
    label = "floor: asyncio.to_thread"
    role = "floor"

    async def sync_handler(self) -> Case:
        counter = Counter()
        h = sync_handler(counter)

        async def run(n: int) -> None:
            for _ in range(n):
                await asyncio.to_thread(h, 1)

        return Case(run, counter)


class CreateTask(Adapter):
    label = "floor: create_task per event"
    role = "floor"

    async def background(self) -> Case:
        counter = Counter()
        (h,) = async_handlers(counter, 1)

        async def run(n: int) -> None:
            create = asyncio.create_task
            tasks = [create(h(1)) for _ in range(n)]
            await asyncio.gather(*tasks)

        return Case(run, counter, note="N tasks, then gather")


class StarletteBackground(Adapter):
    label = "floor: Starlette BackgroundTask"
    role = "floor"

    async def after_response(self) -> PairedCase:
        counter = Counter()
        (h,) = async_handlers(counter, 1)

        async def emit(request: Request) -> Response:
            return PlainTextResponse("ok", background=BackgroundTask(h, 1))

        return paired_case(make_app(emit), counter, note="response(background=BackgroundTask)")


# --- ours ----------------------------------------------------------------------------------


class Ours(Adapter):
    label = "ours"
    role = "ours"

    def __init__(self) -> None:
        try:
            from fastapi_opinionated_eventbus import EventBus
        except Exception as exc:  # the library may be mid-rewrite: report, don't crash
            self.unavailable = f"import failed: {type(exc).__name__}: {exc}"
        else:
            self.EventBus: Any = EventBus

    def _bus(self, **options: Any) -> tuple[Any, str]:
        if not options:
            return self.EventBus(), ""
        try:
            return self.EventBus(**options), ""
        except TypeError as exc:
            return self.EventBus(), f"EventBus({options}) refused ({exc}); defaults used"

    async def _started(self, subscriptions: list[tuple[str, Any]], **options: Any) -> Any:
        bus, self._note = self._bus(**options)
        for name, handler in subscriptions:
            bus.subscribe(name, handler)
        await bus.start()
        return bus

    def _awaited_case(self, bus: Any, counter: Counter, k: int, **kw: Any) -> Case:
        emit = bus.emit

        async def run(n: int) -> None:
            for _ in range(n):
                await emit(EVENT, 1)

        return Case(run, counter, k, close=bus.aclose, note=self._note, **kw)

    async def awaited(self, k: int) -> Case:
        counter = Counter()
        bus = await self._started([(EVENT, h) for h in async_handlers(counter, k)])
        return self._awaited_case(bus, counter, k)

    async def sync_handler(self) -> Case:
        counter = Counter()
        bus = await self._started([(EVENT, sync_handler(counter))])
        return self._awaited_case(bus, counter, 1)

    async def crowded(self) -> Case:
        counter, stray = Counter(), Counter()
        (other,) = async_handlers(stray, 1)
        (h,) = async_handlers(counter, 1)
        bus = await self._started([(name, other) for name in crowd_names()] + [(EVENT, h)])
        return self._awaited_case(bus, counter, 1, stray=stray)

    async def background(self) -> Case:
        counter = Counter()
        bus = await self._started(
            [(EVENT, h) for h in async_handlers(counter, 1)], max_pending=2_000_000
        )

        async def run(n: int) -> None:
            emit = bus.emit_nowait
            for _ in range(n):
                emit(EVENT, 1)
            lost = await bus.drain(timeout=30.0)
            if lost:
                raise RuntimeError(f"drain() reported {lost} lost events")

        return Case(run, counter, close=bus.aclose, note="emit_nowait x N, then drain()")

    async def after_response(self) -> PairedCase:
        from fastapi_opinionated_eventbus.middleware import EventBusMiddleware

        counter = Counter()
        bus = await self._started([(EVENT, h) for h in async_handlers(counter, 1)])

        async def emit(request: Request) -> Response:
            bus.emit_after_response(EVENT, 1)
            return PlainTextResponse("ok")

        app = make_app(emit, [Middleware(EventBusMiddleware, bus=bus)])

        async def settle() -> None:
            await bus.drain(timeout=30.0)

        note = "drain() at each block end is timed, so handler work is counted"
        return paired_case(app, counter, settle=settle, close=bus.aclose, note=note)

    async def injected(self) -> Case:
        bus, _ = self._bus()
        return await injection_bench.ours_case(bus)


# --- peers ---------------------------------------------------------------------------------


class BlinkerPeer(Adapter):
    """``Signal.send_async`` awaits receivers one after another."""

    label = "blinker"
    role = "peer"

    @staticmethod
    def receivers(counter: Counter, k: int) -> list[Callable[..., Awaitable[None]]]:
        def make() -> Callable[..., Awaitable[None]]:
            async def receiver(sender: Any, **kwargs: Any) -> None:
                counter.n += 1

            return bare(receiver)

        return [make() for _ in range(k)]

    def _case(self, signal: Any, counter: Counter, k: int, keep: list[Any], **kw: Any) -> Case:
        # Receivers are weakly referenced by default (and users keep module-level functions).
        self._keep = keep
        send = signal.send_async

        async def run(n: int) -> None:
            for _ in range(n):
                await send(None, x=1, **kw)

        return Case(run, counter, k)

    async def awaited(self, k: int) -> Case:
        from blinker import Signal

        counter = Counter()
        signal, keep = Signal(), self.receivers(counter, k)
        for r in keep:
            signal.connect(r)
        return self._case(signal, counter, k, keep)

    async def sync_handler(self) -> Case:
        from blinker import Signal

        counter = Counter()

        @bare
        def receiver(sender: Any, **kwargs: Any) -> None:
            counter.n += 1

        def in_thread(func: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
            async def inner(*args: Any, **kwargs: Any) -> Any:
                return await asyncio.to_thread(func, *args, **kwargs)

            return inner

        signal = Signal()
        signal.connect(receiver)
        case = self._case(signal, counter, 1, [receiver], _sync_wrapper=in_thread)
        case.note = "_sync_wrapper runs the receiver via asyncio.to_thread"
        return case

    async def crowded(self) -> Case:
        from blinker import Namespace

        counter, stray = Counter(), Counter()
        ns = Namespace()
        (other,) = self.receivers(stray, 1)
        for name in crowd_names():
            ns.signal(name).connect(other)
        keep = self.receivers(counter, 1)
        ns.signal(EVENT).connect(keep[0])
        case = self._case(ns.signal(EVENT), counter, 1, [*keep, other])
        case.stray = stray
        case.note = "one Signal per name in a Namespace; patterns are literal names"
        return case


class PyeePeer(Adapter):
    """``AsyncIOEventEmitter``: emit schedules one Task per coroutine handler."""

    label = "pyee"
    role = "peer"

    def _emitter(self, names_handlers: list[tuple[str, Any]]) -> Any:
        from pyee.asyncio import AsyncIOEventEmitter

        ee = AsyncIOEventEmitter()
        for name, handler in names_handlers:
            ee.on(name, handler)
        return ee

    def _awaited_case(self, ee: Any, counter: Counter, k: int) -> Case:
        emit, wait = ee.emit, ee.wait_for_complete

        async def run(n: int) -> None:
            for _ in range(n):
                emit(EVENT, 1)
                await wait()

        return Case(run, counter, k, note="emit() then await wait_for_complete()")

    async def awaited(self, k: int) -> Case:
        counter = Counter()
        ee = self._emitter([(EVENT, h) for h in async_handlers(counter, k)])
        return self._awaited_case(ee, counter, k)

    async def sync_handler(self) -> Case:
        counter = Counter()
        ee = self._emitter([(EVENT, sync_handler(counter))])
        case = self._awaited_case(ee, counter, 1)
        case.note = "runs the sync handler inline on the loop (no thread): not comparable"
        case.comparable = False
        return case

    async def crowded(self) -> Case:
        counter, stray = Counter(), Counter()
        (other,) = async_handlers(stray, 1)
        (h,) = async_handlers(counter, 1)
        ee = self._emitter([(name, other) for name in crowd_names()] + [(EVENT, h)])
        case = self._awaited_case(ee, counter, 1)
        case.stray = stray
        case.note = "exact names only; patterns registered as literal names"
        return case

    async def background(self) -> Case:
        counter = Counter()
        ee = self._emitter([(EVENT, h) for h in async_handlers(counter, 1)])

        async def run(n: int) -> None:
            emit = ee.emit
            for _ in range(n):
                emit(EVENT, 1)
            await ee.wait_for_complete()

        return Case(run, counter, note="emit() x N (one Task each), then wait_for_complete()")


class FastapiEventsPeer(Adapter):
    """fastapi-events: ``dispatch()`` inside a request, handled in its ASGI middleware."""

    label = "fastapi-events"
    role = "peer"
    _ids = itertools.count(1_000_001)

    @staticmethod
    def _local(names_handlers: list[tuple[str, Any]]) -> Any:
        # A LocalHandler of our own (the module-level `local_handler` is the same class) so
        # scenarios do not see each other's registrations.
        from fastapi_events.handlers.local import LocalHandler

        local = LocalHandler()
        for name, handler in names_handlers:
            local.register(handler, event_name=name)
        return local

    def _middleware_case(self, local: Any, counter: Counter, k: int) -> Case:
        from fastapi_events.dispatcher import dispatch
        from fastapi_events.middleware import EventHandlerASGIMiddleware

        async def endpoint(scope: Any, receive: Any, send: Any) -> None:
            dispatch(EVENT, {"x": 1})

        middleware = EventHandlerASGIMiddleware(endpoint, handlers=[local])
        scope = {"type": "http"}

        async def receive() -> dict[str, Any]:
            return {"type": "http.disconnect"}

        async def send(message: Any) -> None:
            return None

        async def run(n: int) -> None:
            for _ in range(n):
                await middleware(scope, receive, send)

        note = "one ASGI call of EventHandlerASGIMiddleware whose app dispatch()es; handled in it"
        return Case(run, counter, k, note=note)

    async def awaited(self, k: int) -> Case:
        counter = Counter()
        local = self._local([(EVENT, h) for h in async_handlers(counter, k)])
        return self._middleware_case(local, counter, k)

    async def injected(self) -> Case:
        counter = Counter()
        local = self._local(injection_bench.fastapi_events_handlers(counter))
        case = self._middleware_case(local, counter, 1)
        case.note = injection_bench.FASTAPI_EVENTS_NOTE
        return case

    async def sync_handler(self) -> Case:
        counter = Counter()
        local = self._local([(EVENT, sync_handler(counter))])
        case = self._middleware_case(local, counter, 1)
        case.note += " (sync handler via run_in_executor)"
        return case

    async def crowded(self) -> Case:
        counter, stray = Counter(), Counter()
        (other,) = async_handlers(stray, 1)
        (h,) = async_handlers(counter, 1)
        local = self._local([(name, other) for name in crowd_names()] + [(EVENT, h)])
        case = self._middleware_case(local, counter, 1)
        case.stray = stray
        case.note = "fnmatch over every registered name on each event"
        return case

    async def background(self) -> Case:
        from fastapi_events import handler_store
        from fastapi_events.dispatcher import dispatch
        from fastapi_events.middleware import EventHandlerASGIMiddleware

        counter = Counter()
        local = self._local([(EVENT, h) for h in async_handlers(counter, 1)])
        middleware_id = next(self._ids)

        async def unused_app(scope: Any, receive: Any, send: Any) -> None:
            return None

        # Registers the handlers under middleware_id, as an app's middleware would.
        self._middleware = EventHandlerASGIMiddleware(
            unused_app, handlers=[local], middleware_id=middleware_id
        )

        async def run(n: int) -> None:
            before = asyncio.all_tasks()
            for _ in range(n):
                dispatch(EVENT, {"x": 1}, middleware_id=middleware_id)
            await asyncio.gather(*(asyncio.all_tasks() - before))

        async def close() -> None:
            handler_store.pop(middleware_id, None)

        note = "dispatch(middleware_id=...) outside a request: one Task per event (its README §4)"
        return Case(run, counter, close=close, note=note)

    async def after_response(self) -> PairedCase:
        from fastapi_events.dispatcher import dispatch
        from fastapi_events.middleware import EventHandlerASGIMiddleware

        counter = Counter()
        local = self._local([(EVENT, h) for h in async_handlers(counter, 1)])

        async def emit(request: Request) -> Response:
            dispatch(EVENT, {"x": 1})
            return PlainTextResponse("ok")

        app = make_app(emit, [Middleware(EventHandlerASGIMiddleware, handlers=[local])])
        return paired_case(app, counter, note="dispatch() in the route (its README usage)")


class FastapiEventbusPeer(Adapter):
    """fastapi-eventbus 0.1.1, default in-memory ("sync") backend.

    Its listener task polls the backend's queues and sleeps 10 ms whenever they are all empty,
    so an awaited emit costs about one poll period. publish() gives no completion handle: we
    yield to the loop until the handlers ran (``wait_for_count``).
    """

    label = "fastapi-eventbus"
    role = "peer"
    _event_cls: ClassVar[Any] = None

    @classmethod
    def event(cls) -> Any:
        if cls._event_cls is None:
            from fastapi_eventbus import BaseEvent

            class BenchEvent(BaseEvent):
                topic: str = EVENT
                x: int

            cls._event_cls = BenchEvent
        return cls._event_cls

    async def _started(self, topics_handlers: list[tuple[str, Any]]) -> Any:
        from fastapi_eventbus import EventBus

        bus = EventBus()
        for topic, handler in topics_handlers:
            await bus.registry.register(topic, handler)
        await bus.start()
        return bus

    def _awaited_case(
        self, bus: Any, counter: Counter, k: int, stray: Counter | None = None
    ) -> Case:
        publish, event = bus.publish, self.event()

        async def run(n: int) -> None:
            target = counter.n
            for _ in range(n):
                await publish(event(x=1))
                target += k
                await wait_for_count(counter, target)

        note = "publish(BaseEvent) then wait for its polling listener (sleeps 10 ms when idle)"
        return Case(run, counter, k, stray=stray, close=bus.stop, note=note)

    async def awaited(self, k: int) -> Case:
        counter = Counter()
        bus = await self._started([(EVENT, h) for h in async_handlers(counter, k)])
        return self._awaited_case(bus, counter, k)

    async def sync_handler(self) -> Case:
        counter = Counter()
        bus = await self._started([(EVENT, sync_handler(counter))])
        case = self._awaited_case(bus, counter, 1)
        case.note += "; sync handler via run_in_executor"
        return case

    async def crowded(self) -> Case:
        counter, stray = Counter(), Counter()
        (other,) = async_handlers(stray, 1)
        (h,) = async_handlers(counter, 1)
        bus = await self._started([(name, other) for name in crowd_names()] + [(EVENT, h)])
        case = self._awaited_case(bus, counter, 1, stray)
        case.note = "exact topics only (patterns literal); listener scans all topics per poll"
        return case

    async def background(self) -> Case:
        counter = Counter()
        bus = await self._started([(EVENT, h) for h in async_handlers(counter, 1)])
        publish, event = bus.publish, self.event()

        async def run(n: int) -> None:
            target = counter.n + n
            for _ in range(n):
                await publish(event(x=1))
            await wait_for_count(counter, target, timeout_s=60.0)

        note = "publish() x N into its queue, then wait for the listener"
        return Case(run, counter, close=bus.stop, note=note)

    async def after_response(self) -> PairedCase:
        raise Unsupported("no after-response mechanism (publish() feeds its polling listener)")


ADAPTERS: dict[str, type[Adapter]] = {
    "direct-await": DirectAwait,
    "gather": Gather,
    "direct-call": DirectCall,
    "to-thread": ToThread,
    "create-task": CreateTask,
    "starlette-background": StarletteBackground,
    "ours": Ours,
    "blinker": BlinkerPeer,
    "pyee": PyeePeer,
    "fastapi-events": FastapiEventsPeer,
    "fastapi-eventbus": FastapiEventbusPeer,
}
