"""Running the handlers of one event: concurrency, threads, timeouts, retries, isolation.

The hot path is :meth:`Dispatcher.run`. A group with a single plain async handler is
awaited directly (no Task); several handlers start as eager tasks, so the ones that finish
without suspending never reach the scheduler, while ``asyncio.current_task()`` stays right
for handlers that use ``asyncio.timeout`` or anyio cancel scopes.

(A little over 400 lines: the fast paths -- ``run``, ``start`` -- and the general path --
``_invoke`` with retries, timeouts, metrics and tracing -- share their failure bookkeeping
and belong together; sync handlers' threads live in :mod:`.threads`, dependency solving in
:mod:`.solving`.)
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from fastapi_opinionated.shared.logger import ns_logger

from .dead_letters import DeadLetter
from .envelope import EventEnvelope, current_var, reset_current
from .errors import HandlerTimeout
from .registry import Plan, Subscription
from .results import EmitResult, HandlerFailure, handled_once
from .solving import Overrides, call_with_dependencies, raised_by
from .stepping import Resumed, start_in
from .threads import WorkerThreads

if TYPE_CHECKING:
    from .._observability.counters import CountingCollector
    from .._observability.tracing import EventTracer
    from ..metrics import MetricsCollector

__all__ = ["Dispatcher", "KeepLetter", "cancelled_by_handler"]

logger = ns_logger("EventBus")

KeepLetter = Callable[[DeadLetter], None]
"""Where the caller of :meth:`Dispatcher.run` keeps the dead letters of its failures."""


def _explain_type_error(sub: Subscription, event: EventEnvelope, exc: TypeError) -> str:
    """Say plainly when a TypeError is the emitted arguments not fitting the handler."""
    injected = ""
    if sub.injection is not None:
        # What the emit must fill: the signature without the injected parameters.
        signature = sub.injection.signature
        injected = f" (injected: {', '.join(sorted(sub.injection.names))})"
    else:
        try:
            signature = inspect.signature(sub.handler)
        except (TypeError, ValueError):
            return ""
    try:
        signature.bind(*event.args, **event.kwargs)
    except TypeError as mismatch:
        return (
            f" The emitted arguments do not match the handler's signature "
            f"{getattr(sub.handler, '__name__', sub.name)}{signature}{injected}: {mismatch}."
        )
    if injected and not sub.injection.names.isdisjoint(event.kwargs):  # type: ignore[union-attr]
        return f" The emitted arguments do not match the handler's signature{injected}."
    return ""


def _no_overrides() -> None:
    return None


def cancelled_by_handler(cancelled: asyncio.CancelledError) -> Exception:
    """A handler's own CancelledError as its failure, or re-raise a real cancellation.

    A handler that awaits something another party cancelled raises CancelledError while
    nobody cancels the task it runs in: that is the handler failing, and must not stop the
    emitter or the background queue. When the task *is* being cancelled, it propagates.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise cancelled
    failure = RuntimeError("the handler raised CancelledError without being cancelled")
    failure.__cause__ = cancelled
    return failure


class Dispatcher:
    """Runs subscriptions for events; owns the worker threads of sync handlers."""

    def __init__(self, thread_pool_size: int | None = None) -> None:
        self.keep: KeepLetter | None = None
        """Receives the dead letter of every final failure of :meth:`run` (the local
        backend's store); None: failures are only returned (a broker backend stores them)."""
        self.threads = WorkerThreads(thread_pool_size)
        self.metrics: MetricsCollector | None = None
        self.tracer: EventTracer | None = None
        self.runs: CountingCollector | None = None
        """The introspection counters, told about each handler run with its event."""
        # With metrics or tracing on, every handler goes through _invoke, which reports.
        self.raw_ok = True
        self.dependency_overrides: Overrides = _no_overrides
        """Read on each run of a handler with dependencies (the FastAPI app's overrides)."""

    def observe(
        self,
        metrics: MetricsCollector | None,
        tracer: EventTracer | None,
        runs: CountingCollector | None = None,
    ) -> None:
        """``runs`` must also be among ``metrics``: every handler then goes through
        :meth:`_invoke`, which reports each run."""
        self.metrics, self.tracer, self.runs = metrics, tracer, runs
        self.raw_ok = metrics is None and tracer is None

    # ------------------------------------------------------------------ running a plan
    async def run(self, event: EventEnvelope, plan: Plan) -> EmitResult:
        """Run the plan's handlers and wait for them; never raises for their failures."""
        single = plan.single
        if single is not None:
            # The common case: one plain async handler, awaited right here (no Task).
            token = current_var.set(event)
            try:
                if event._kwargs:
                    await single.handler(*event._args, **event._kwargs)
                else:  # no empty ** to unpack: -338 instructions per emit (callgrind)
                    await single.handler(*event._args)
                return handled_once(event)
            except Exception as exc:
                failure = self.give_up(single, event, exc, 1)
            except asyncio.CancelledError as cancelled:
                failure = self.give_up(single, event, cancelled_by_handler(cancelled), 1)
            finally:
                reset_current(token)
            failures: tuple[HandlerFailure, ...] = (failure,)
        elif plan.count:
            failures = await self._run_groups(event, plan)
        else:
            return EmitResult(event, 0)
        keep = self.keep
        if failures and keep is not None:
            for failed in failures:
                keep(DeadLetter.from_failure(event, failed))
        return EmitResult(event, plan.count, failures)

    def start(
        self, event: EventEnvelope, plan: Plan, context: contextvars.Context
    ) -> Awaitable[object] | None:
        """Run ``plan`` for a background event inside ``context``, the event's own copy of
        the emitter's: the first step here, and None when every handler finished in it
        (the common case); else an awaitable that finishes the rest."""
        single = plan.single
        if single is None:
            return start_in(self.run(event, plan), context)
        # The single plain handler stepped directly: no coroutine of ours and no result
        # object (callgrind, emit_nowait + drain: 25,391 -> 21,936 instructions per event). The
        # context is the event's own, so current_event() is set in it and never reset.
        context.run(current_var.set, event)
        handler = single.handler
        try:
            if event._kwargs:
                coro = handler(*event._args, **event._kwargs)
            else:
                coro = handler(*event._args)
            waiting_on = context.run(coro.send, None)
        except StopIteration:
            return None
        except Exception as exc:
            self._keep(single, event, exc)
            return None
        except asyncio.CancelledError as cancelled:
            self._keep(single, event, cancelled_by_handler(cancelled))
            return None
        return self._finish(single, event, Resumed(coro, context, waiting_on))

    async def _finish(self, sub: Subscription, event: EventEnvelope, rest: Resumed) -> None:
        """The rest of a background handler that suspended in its first step."""
        try:
            await rest
        except Exception as exc:
            self._keep(sub, event, exc)
        except asyncio.CancelledError as cancelled:
            self._keep(sub, event, cancelled_by_handler(cancelled))

    def _keep(self, sub: Subscription, event: EventEnvelope, exc: Exception) -> None:
        failure = self.give_up(sub, event, exc, 1)
        if self.keep is not None:
            self.keep(DeadLetter.from_failure(event, failure))

    async def _run_groups(self, event: EventEnvelope, plan: Plan) -> tuple[HandlerFailure, ...]:
        """Run the plan's groups in priority order; return the failures (usually none)."""
        failures: list[HandlerFailure] | None = None
        for group in plan.groups:
            if len(group) == 1:
                sub = group[0]
                failure: HandlerFailure | None
                if sub.plain and self.raw_ok:
                    token = current_var.set(event)
                    try:
                        await sub.handler(*event._args, **event._kwargs)
                        continue
                    except Exception as exc:
                        failure = self.give_up(sub, event, exc, 1)
                    except asyncio.CancelledError as cancelled:
                        failure = self.give_up(sub, event, cancelled_by_handler(cancelled), 1)
                    finally:
                        reset_current(token)
                else:
                    failure = await self._invoke(sub, event)
                    if failure is None:
                        continue
                (failures := failures or []).append(failure)
            else:
                group_failures = await self._run_concurrently(group, event)
                if group_failures:
                    (failures := failures or []).extend(group_failures)
        return tuple(failures) if failures else ()

    async def _run_concurrently(
        self, group: tuple[Subscription, ...], event: EventEnvelope
    ) -> list[HandlerFailure]:
        """Start every handler of a group; return when all have finished.

        Each handler's first step runs here, in a copy of the context. The first one to
        suspend keeps this task (see stepping.Resumed); handlers started after it get eager
        tasks. So trivial handlers cost no Task, and none waits behind a slow one.
        """
        failures: list[HandlerFailure] = []
        held: tuple[Subscription, Coroutine[Any, Any, Any], contextvars.Context, Any] | None
        held = None
        tasks: list[tuple[Subscription, asyncio.Task[Any]]] = []
        args, kwargs = event._args, event._kwargs
        raw_ok = self.raw_ok
        token = current_var.set(event)  # copied into each handler's context
        try:
            for sub in group:
                raw = sub.plain and raw_ok
                try:
                    coro = sub.handler(*args, **kwargs) if raw else self._invoke(sub, event)
                except Exception as exc:  # e.g. arguments that do not fit the signature
                    failures.append(self.give_up(sub, event, exc, 1))
                    continue
                if held is not None:
                    loop = asyncio.get_running_loop()
                    tasks.append((sub, asyncio.Task(coro, loop=loop, eager_start=True)))
                    continue
                context = contextvars.copy_context()
                try:
                    waiting_on = context.run(coro.send, None)
                except StopIteration as stop:
                    if not raw and stop.value is not None:
                        failures.append(stop.value)
                    continue
                except Exception as exc:
                    failures.append(self.give_up(sub, event, exc, 1))
                    continue
                except asyncio.CancelledError as cancelled:
                    failures.append(self.give_up(sub, event, cancelled_by_handler(cancelled), 1))
                    continue
                held = (sub, coro, context, waiting_on)
        finally:
            current_var.reset(token)
        try:
            if held is not None:
                sub, coro, context, waiting_on = held
                try:
                    outcome = await Resumed(coro, context, waiting_on)
                except Exception as exc:
                    failures.append(self.give_up(sub, event, exc, 1))
                except asyncio.CancelledError as cancelled:
                    failures.append(self.give_up(sub, event, cancelled_by_handler(cancelled), 1))
                else:
                    if isinstance(outcome, HandlerFailure) and not (sub.plain and raw_ok):
                        failures.append(outcome)
            pending = [task for _, task in tasks if not task.done()]
            if pending:
                await asyncio.wait(pending)
        except asyncio.CancelledError:
            # The emitter is cancelled: cancel the handlers and, like a TaskGroup, let them
            # unwind before this frame does.
            started = [task for _, task in tasks]
            for task in started:
                task.cancel()
            if started:
                await asyncio.wait(started)
                for task in started:
                    if not task.cancelled():
                        task.exception()  # retrieved: never "exception was never retrieved"
            raise
        for sub, task in tasks:
            failure = self._outcome(sub, event, task)
            if failure is not None:
                failures.append(failure)
        return failures

    def _outcome(
        self, sub: Subscription, event: EventEnvelope, task: asyncio.Task[Any]
    ) -> HandlerFailure | None:
        if task.cancelled():
            return self.give_up(sub, event, RuntimeError("the handler was cancelled"), 1)
        exc = task.exception()
        if isinstance(exc, Exception):
            return self.give_up(sub, event, exc, 1)
        if exc is not None:  # KeyboardInterrupt, SystemExit: not ours to swallow
            raise exc
        result = task.result()
        # A wrapped (non-plain) invocation reports its own failure as its result.
        return result if isinstance(result, HandlerFailure) else None

    # ------------------------------------------------------------------ one handler
    async def _invoke(self, sub: Subscription, event: EventEnvelope) -> HandlerFailure | None:
        """Run one handler with its timeout, retry policy, metrics and tracing; never raises
        ``Exception``: the final failure is returned (and logged, and dead-lettered)."""
        policy = sub.retry
        attempts = policy.max_attempts if policy is not None else 1
        metrics, tracer, runs = self.metrics, self.tracer, self.runs
        token = current_var.set(event)
        if runs is not None:
            runs.run_started(event, sub)
        try:
            attempt = 1
            while True:
                started = time.perf_counter()
                try:
                    try:
                        if tracer is None:
                            await self._call(sub, event)
                        else:
                            await self._call_traced(tracer, sub, event)
                    except asyncio.CancelledError as cancelled:
                        raise cancelled_by_handler(cancelled) from cancelled
                except Exception as exc:
                    if metrics is not None:
                        metrics.failed(sub.event, sub.name, time.perf_counter() - started)
                    if runs is not None:
                        runs.run_attempted(event, sub, exc, attempt >= attempts)
                    if attempt >= attempts:
                        return self.give_up(sub, event, exc, attempt)
                    assert policy is not None
                    delay = policy.delay_before(attempt + 1)
                    logger.warning(
                        f"Handler {sub.name} failed on event {event.describe()} "
                        f"(attempt {attempt}/{attempts}): {type(exc).__name__}: {exc}"
                        f"{raised_by(exc)}; "
                        f"retrying in {delay:.3f}s"
                    )
                    if metrics is not None:
                        metrics.retried(sub.event, sub.name)
                    # The wait suspends only this handler: other handlers and events go on.
                    await asyncio.sleep(delay)
                    attempt += 1
                    event = event.with_attempt(attempt)
                    current_var.set(event)
                else:
                    if metrics is not None:
                        metrics.handled(sub.event, sub.name, time.perf_counter() - started)
                    if runs is not None:
                        runs.run_attempted(event, sub, None, True)
                    return None
        finally:
            if runs is not None:
                runs.run_stopped(event, sub)
            reset_current(token)

    async def _call_traced(
        self, tracer: EventTracer, sub: Subscription, event: EventEnvelope
    ) -> None:
        with tracer.handler_span(sub, event) as span:
            try:
                await self._call(sub, event)
            except Exception as exc:
                tracer.outcome(span, exc)
                raise
            tracer.outcome(span, None)

    async def _call(self, sub: Subscription, event: EventEnvelope) -> None:
        if sub.injection is not None:
            await call_with_dependencies(sub, event, self)
            return
        if sub.is_async:
            if sub.timeout is None:
                await sub.handler(*event._args, **event._kwargs)
                return
            try:
                async with asyncio.timeout(sub.timeout):
                    await sub.handler(*event._args, **event._kwargs)
            except TimeoutError as exc:
                raise HandlerTimeout(
                    f"handler {sub.name} timed out after {sub.timeout}s and was cancelled"
                ) from exc
            return
        await self.threads.run(sub, event)

    def give_up(
        self, sub: Subscription, event: EventEnvelope, exc: Exception, attempts: int
    ) -> HandlerFailure:
        hint = _explain_type_error(sub, event, exc) if isinstance(exc, TypeError) else ""
        # The core's log formatter drops exc_info: the traceback must be in the message.
        tb = "".join(traceback.format_exception(exc)).rstrip()
        logger.error(
            f"Handler {sub.name} failed on event {event.describe()} after {attempts} "
            f"attempt(s): "
            f"{type(exc).__name__}: {exc}{raised_by(exc)}.{hint}\n{tb}"
        )
        if self.metrics is not None:
            self.metrics.dead_lettered(sub.event, sub.name)
        return HandlerFailure(sub.name, exc, attempts, sub)

    # ------------------------------------------------------------------ replay
    async def replay(self, letter: DeadLetter, sub: Subscription) -> HandlerFailure | None:
        """Run one dead letter's handler again, once more through its retry policy."""
        return await self._invoke(sub, letter.event.with_attempt(1))

    # ------------------------------------------------------------------ threads
    @property
    def abandoned_threads(self) -> int:
        """Worker threads still busy with a sync handler that timed out or was abandoned."""
        return self.threads.abandoned

    def shutdown(self) -> None:
        self.threads.shutdown()
