"""Resolving a handler's dependencies for one run, calling it, tearing them down.

Called by the dispatcher for each attempt of a handler that has dependencies (see
:mod:`.injection`), inside its retry loop: every attempt resolves them again, and the
handler's ``timeout`` covers their resolution. As in FastAPI routes: async dependencies are
awaited on the loop, sync ones (and classes) run in worker threads, each dependency is
called once per run however often the tree names it (unless ``use_cache=False``),
``app.dependency_overrides`` is read on every run, and ``yield`` dependencies are torn down
after the handler in reverse order, the handler's exception thrown in at their ``yield``.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import traceback
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any, Protocol

from fastapi_opinionated.shared.logger import ns_logger

from .envelope import EventEnvelope
from .errors import HandlerTimeout
from .injection import ASYNC, ASYNC_GEN, SYNC, Dependency, Injection, analyse_dependency

if TYPE_CHECKING:
    from .registry import Subscription
    from .threads import WorkerThreads

__all__ = ["Overrides", "Runner", "call_with_dependencies", "raised_by"]

Overrides = Callable[[], Mapping[Any, Any] | None]
"""Returns the dependency overrides in force now (the FastAPI app's, read on every run)."""

logger = ns_logger("EventBus")

_NOTE = "eventbus: raised by "
_MISSING = object()


class Runner(Protocol):
    """What a run needs from the dispatcher: its overrides and its worker threads."""

    dependency_overrides: Overrides
    threads: WorkerThreads


class _Run:
    """One run of one handler: the event, the overrides, the cache, the exit stack."""

    __slots__ = ("abandoned", "cache", "event", "overrides", "stack", "threads")

    def __init__(
        self, event: EventEnvelope, overrides: Mapping[Any, Any] | None, threads: WorkerThreads
    ) -> None:
        self.event = event
        self.overrides = overrides
        self.threads = threads
        self.cache: dict[Any, Any] = {}
        self.stack: AsyncExitStack | None = None  # made by the first yield dependency
        self.abandoned: Future[Any] | None = None  # a sync handler's thread, timed out

    async def in_thread(self, call: Callable[[], Any]) -> Any:
        # The copied context carries current_event() into the thread, as for sync handlers.
        context = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.threads.executor, context.run, call)


async def call_with_dependencies(sub: Subscription, event: EventEnvelope, runner: Runner) -> None:
    """Resolve ``sub``'s dependencies, call its handler, tear them down: one attempt."""
    injection: Injection = sub.injection  # type: ignore[assignment]
    kwargs = event._kwargs
    if kwargs and not injection.names.isdisjoint(kwargs):
        clash = ", ".join(repr(name) for name in sorted(injection.names.intersection(kwargs)))
        raise TypeError(
            f"the emitted keyword argument(s) {clash} have the name of dependency "
            f"parameter(s) of {sub.name}: injected parameters are never replaced by emitted "
            "values; rename the argument"
        )
    run = _Run(event, runner.dependency_overrides(), runner.threads)
    try:
        if sub.timeout is None:
            await _attempt(sub, injection, run)
        else:
            scope = asyncio.timeout(sub.timeout)
            try:
                async with scope:
                    await _attempt(sub, injection, run)
            except TimeoutError as exc:
                if not scope.expired():
                    raise  # the handler's own TimeoutError
                raise HandlerTimeout(_timed_out(sub)) from exc
    except BaseException as exc:
        if run.stack is not None:
            if run.abandoned is not None and not run.abandoned.done():
                _tear_down_later(run.stack, exc, run.abandoned, sub)
                raise
            # Thrown in at each yield, as FastAPI does. A teardown that swallows it does not
            # hide the failure; one that raises another exception replaces it.
            await run.stack.__aexit__(type(exc), exc, exc.__traceback__)
        raise
    if run.stack is not None:
        await run.stack.__aexit__(None, None, None)


def _timed_out(sub: Subscription) -> str:
    if sub.is_async:
        return f"handler {sub.name} timed out after {sub.timeout}s and was cancelled"
    return (
        f"sync handler {sub.name} timed out after {sub.timeout}s; a thread cannot be killed, "
        "so it was abandoned and keeps its worker thread until it returns"
    )


async def _attempt(sub: Subscription, injection: Injection, run: _Run) -> None:
    event = run.event
    values: dict[str, Any] = {}
    for name, dep in injection.params:
        values[name] = event if dep is None else await _solve(dep, run)
    args = event._args
    if injection.positional is not None:
        args = _by_name(injection, args, values, sub)
    if event._kwargs:
        values.update(event._kwargs)  # no clash: checked before resolving
    if sub.is_async:
        await sub.handler(*args, **values)
        return
    await _call_in_thread(functools.partial(sub.handler, *args, **values), run)


def _by_name(
    injection: Injection, args: tuple[Any, ...], values: dict[str, Any], sub: Subscription
) -> tuple[Any, ...]:
    """Emitted positional arguments passed by name (an injected parameter stands before
    one of them), except those of positional-only parameters."""
    names, leading = injection.positional or (), injection.leading
    if len(args) > leading + len(names):
        raise TypeError(
            f"{sub.name} takes {leading + len(names)} emitted positional argument(s) but "
            f"{len(args)} were emitted"
        )
    values.update(zip(names, args[leading:], strict=False))
    return args[:leading]


async def _call_in_thread(call: Callable[[], Any], run: _Run) -> None:
    future = run.threads.executor.submit(contextvars.copy_context().run, call)
    try:
        result = await asyncio.wrap_future(future)
    except asyncio.CancelledError:
        run.threads.abandon(future)  # counted in abandoned_threads until it returns
        run.abandoned = future
        raise
    if inspect.isawaitable(result):
        # An async function behind a plain (non-async) decorator: finish it on the loop.
        await result


# A sync handler that timed out runs on in its thread, using what its dependencies gave
# it: they are torn down once it returns, not under it.
_late_teardowns: set[asyncio.Task[None]] = set()


def _tear_down_later(
    stack: AsyncExitStack, exc: BaseException, thread: Future[Any], sub: Subscription
) -> None:
    loop = asyncio.get_running_loop()

    def returned(_: Future[Any]) -> None:  # in the worker thread
        try:
            loop.call_soon_threadsafe(_start_teardown, stack, exc, sub)
        except RuntimeError:  # the loop is gone (the app stopped): nothing can run it
            logger.warning(
                f"The dependencies of sync handler {sub.name} were not torn down: its "
                "abandoned thread returned after the event loop closed"
            )

    thread.add_done_callback(returned)


def _start_teardown(stack: AsyncExitStack, exc: BaseException, sub: Subscription) -> None:
    task = asyncio.get_running_loop().create_task(_tear_down(stack, exc, sub))
    _late_teardowns.add(task)
    task.add_done_callback(_late_teardowns.discard)


async def _tear_down(stack: AsyncExitStack, exc: BaseException, sub: Subscription) -> None:
    try:
        await stack.__aexit__(type(exc), exc, exc.__traceback__)
    except Exception as failed:
        details = "".join(traceback.format_exception(failed)).rstrip()
        logger.error(
            f"The teardown of sync handler {sub.name}'s dependencies, run when its abandoned "
            f"thread returned, failed: {type(failed).__name__}: {failed}\n{details}"
        )


# ====================================================================== dependencies
async def _solve(dep: Dependency, run: _Run) -> Any:
    key = dep.call  # the cache key is the dependency as declared, overridden or not
    if dep.use_cache:
        cached = run.cache.get(key, _MISSING)
        if cached is not _MISSING:
            return cached
    overrides = run.overrides
    if overrides:
        override = overrides.get(key)
        if override is not None and override is not key:
            dep = _overridden(override, dep)
    values: dict[str, Any] = {}
    for name, sub in dep.params:
        values[name] = run.event if sub is None else await _solve(sub, run)
    try:
        value = await _produce(dep, values, run)
    except Exception as exc:
        _note(exc, f"dependency {dep.name}")
        raise
    run.cache.setdefault(key, value)
    return value


async def _produce(dep: Dependency, values: dict[str, Any], run: _Run) -> Any:
    kind = dep.kind
    if kind == ASYNC:
        return await dep.call(**values)
    if kind == SYNC:
        return await run.in_thread(functools.partial(dep.call, **values))
    stack = run.stack
    if stack is None:
        stack = run.stack = AsyncExitStack()
    if kind == ASYNC_GEN:
        acm = asynccontextmanager(dep.call)(**values)
        value = await acm.__aenter__()
        stack.push_async_exit(_teardown(dep.name, acm.__aexit__))
        return value
    cm = contextmanager(dep.call)(**values)
    value = await run.in_thread(cm.__enter__)

    async def exit_in_thread(*exc_info: Any) -> bool | None:
        result: bool | None = await run.in_thread(functools.partial(cm.__exit__, *exc_info))
        return result

    stack.push_async_exit(_teardown(dep.name, exit_in_thread))
    return value


def _teardown(name: str, exit_: Callable[..., Any]) -> Callable[..., Any]:
    async def teardown(exc_type: Any, exc: BaseException | None, tb: Any) -> bool | None:
        try:
            result: bool | None = await exit_(exc_type, exc, tb)
        except Exception as raised:
            if raised is not exc:
                _note(raised, f"the teardown of dependency {name}")
            raise
        return result

    return teardown


def _note(exc: BaseException, what: str) -> None:
    """Name the dependency in the failure: the log line and the traceback say it."""
    if not any(note.startswith(_NOTE) for note in getattr(exc, "__notes__", ())):
        exc.add_note(f"{_NOTE}{what}")


def raised_by(exc: BaseException) -> str:
    """`` (raised by dependency module:name)`` when a dependency raised ``exc``, else ``""``."""
    for note in getattr(exc, "__notes__", ()):
        if note.startswith(_NOTE):
            return f" ({note.removeprefix('eventbus: ')})"
    return ""


# ====================================================================== overrides
_override_cache: dict[tuple[int, bool], tuple[Any, Dependency]] = {}
_OVERRIDE_CACHE_SIZE = 256


def _overridden(override: Any, original: Dependency) -> Dependency:
    """The override analysed like the original (once per override function)."""
    key = (id(override), original.use_cache)
    cached = _override_cache.get(key)
    if cached is not None and cached[0] is override:
        return cached[1]
    where = f"the override of dependency {original.name}"
    dep = analyse_dependency(override, original.use_cache, where)
    if len(_override_cache) >= _OVERRIDE_CACHE_SIZE:
        _override_cache.pop(next(iter(_override_cache)))
    _override_cache[key] = (override, dep)  # holds the override: its id is not reused
    return dep
