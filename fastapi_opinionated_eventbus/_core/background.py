"""Background dispatch: a queue of events drained without a Task per event.

One *drainer* task runs queued events one after another, stepping each event's coroutine
in the context captured at emit time. Most events finish without suspending, so they cost
no Task and no trip through the scheduler. When an event suspends (a slow handler, a
retry wait), its drainer stays with it (``asyncio.current_task()`` remains right for
``asyncio.timeout`` and anyio cancel scopes) and hands the queue to a new drainer, so no
event ever waits behind another.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi_opinionated.shared.logger import ns_logger

from .envelope import EventEnvelope
from .errors import BackendUnavailable, EventBusClosed, EventBusError, EventBusOverloaded
from .interruption import Interruption, take_interruption
from .lifecycle import Lifecycle
from .registry import Plan

__all__ = ["BackgroundQueue", "Interrupted"]

logger = ns_logger("EventBus")

QueueItem = tuple[EventEnvelope, Plan, contextvars.Context]
Starter = Callable[[EventEnvelope, Plan, contextvars.Context], Awaitable[object] | None]
"""A backend's start_publish: the first step of handing an event over, inside its context."""


# How long shutdown waits for cancelled handlers to unwind.
_UNWIND_SECONDS = 1.0

# Events a drainer runs before letting the loop serve others: a burst of emits never
# starves requests.
_FAIR_SHARE = 256


@dataclass(frozen=True, slots=True)
class Interrupted:
    """The background events shutdown could not let finish, by how they ended."""

    lost: list[EventEnvelope]
    abandoned: list[EventEnvelope]
    unconfirmed: list[EventEnvelope]


class BackgroundQueue:
    """Accepts events from any thread; runs them on the bus's loop; drains on shutdown."""

    def __init__(
        self, start: Starter, max_pending: int, on_lost: Callable[[EventEnvelope], None]
    ) -> None:
        self._start = start
        self._on_lost = on_lost
        self._max_pending = max_pending
        self._queue: deque[QueueItem] = deque()
        self._pending = 0  # changed on the loop thread only
        # Events handed over from other threads and not yet accepted on the loop: counted
        # under a lock so a burst from a sync route still respects max_pending.
        self._handed_over = 0
        self._handover_lock = threading.Lock()
        self._drainer: asyncio.Task[None] | None = None
        self._holding: dict[asyncio.Task[Any], EventEnvelope] = {}
        self._idle: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self.state = Lifecycle.OPEN
        # Every accepted event ends as exactly one of: handled (ran to its end, handlers'
        # failures included), lost, abandoned (still running when shutdown gave up),
        # unconfirmed (may have reached the broker); or is still pending.
        self.accepted = 0
        self.lost = 0
        self.abandoned = 0
        self.unconfirmed = 0
        self._given_up: set[asyncio.Task[Any]] = set()
        self._interrupted_now: Interrupted | None = None  # filled while cancel_all runs

    # ------------------------------------------------------------------ accepting
    def bind(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """The loop events run on (None: bind to the next running loop that submits)."""
        self._loop = loop
        self._loop_thread = None if loop is None else threading.get_ident()

    def submit(
        self,
        envelope: EventEnvelope,
        plan: Plan,
        context: contextvars.Context,
        from_handler: bool = False,
    ) -> None:
        state = self.state
        if state is not Lifecycle.OPEN and not (state is Lifecycle.DRAINING and from_handler):
            raise EventBusClosed(
                f"cannot emit {envelope.name!r} in the background: the event bus is shutting down"
            )
        if threading.get_ident() == self._loop_thread:
            if self._pending + self._handed_over >= self._max_pending:
                raise self._overloaded(envelope)
            self._pending += 1
            self.accepted += 1
            self._queue.append((envelope, plan, context))
            if self._drainer is None:
                self._start_drainer()
            return
        loop = self._loop
        if loop is None:
            self._bind_running_loop()
            return self.submit(envelope, plan, context, from_handler)
        with self._handover_lock:
            if self._pending + self._handed_over >= self._max_pending:
                raise self._overloaded(envelope)
            self._handed_over += 1
            self.accepted += 1
        try:
            loop.call_soon_threadsafe(self._accept, (envelope, plan, context))
        except RuntimeError as exc:  # the loop is closed: nothing would ever run it
            with self._handover_lock:
                self._handed_over -= 1
                self.accepted -= 1
            raise EventBusClosed(
                f"cannot emit {envelope.name!r}: the app's loop is closed"
            ) from exc

    def _overloaded(self, envelope: EventEnvelope) -> EventBusOverloaded:
        return EventBusOverloaded(
            f"cannot accept event {envelope.name!r}: {self._pending + self._handed_over} "
            f"background events are in flight (max_pending={self._max_pending}); slow down "
            "or raise the max_pending option"
        )

    def _bind_running_loop(self) -> asyncio.AbstractEventLoop:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise EventBusError(
                "the event bus has no event loop yet: start the app (its lifespan) before "
                "emitting in the background from a thread"
            ) from None
        self.bind(loop)
        return loop

    def _accept(self, item: QueueItem) -> None:
        with self._handover_lock:  # both at once: a thread never sees the event uncounted
            self._handed_over -= 1
            if self.state is Lifecycle.CLOSED:  # handed over just before shutdown gave up
                self.count_lost(item[0], "arrived from a thread after shutdown")
                if not self.pending:  # it was the last in flight: end the waits now
                    self._wake_idle_waiters()
                return
            self._pending += 1
        self._queue.append(item)
        if self._drainer is None:
            self._start_drainer()

    # ------------------------------------------------------------------ draining
    def _start_drainer(self) -> None:
        assert self._loop is not None
        self._drainer = self._loop.create_task(self._drain(), name="eventbus-drainer")

    async def _drain(self) -> None:
        queue, start = self._queue, self._start
        ran = 0
        while queue:
            envelope, plan, context = queue.popleft()
            try:
                # The first step here: most events finish in it, costing no Task at all.
                rest = start(envelope, plan, context)
            except Exception as exc:  # e.g. a broker that did not take the event
                self._finished()
                self._failed(envelope, exc)
                continue
            except BaseException:  # KeyboardInterrupt, SystemExit: not ours to swallow
                self._finished()
                self._drainer = None
                raise
            if rest is None:
                # _finished() inlined: the common case of the background hot path.
                self._pending -= 1
                if not self._pending and self._idle is not None:
                    self._wake_idle_waiters()
                ran += 1
                if ran == _FAIR_SHARE:
                    ran = 0
                    await asyncio.sleep(0)
                continue
            # The event suspended: this task stays with it, a new drainer takes the queue.
            task = asyncio.current_task()
            assert task is not None
            self._holding[task] = envelope
            self._drainer = None
            if queue:
                self._start_drainer()
            try:
                await rest
            except asyncio.CancelledError:
                if task not in self._given_up:
                    self._interrupted(envelope, take_interruption(task))
                raise
            except Exception as exc:
                if task not in self._given_up:
                    self._failed(envelope, exc)
            finally:
                # Also when cancelled at shutdown: the count must never drift. (An event
                # shutdown gave up on was already counted, and taken off pending.)
                self._holding.pop(task, None)
                if task in self._given_up:
                    self._given_up.discard(task)
                else:
                    self._finished()
            return
        self._drainer = None

    def _finished(self) -> None:
        self._pending -= 1
        if not self._pending and self._idle is not None:
            self._wake_idle_waiters()

    @property
    def pending(self) -> int:
        return self._pending + self._handed_over

    async def wait_idle(self, timeout: float | None) -> int:
        """Wait until nothing is in flight or ``timeout`` passed; return what is left.

        Any number of callers may wait at once: they share one future, which a caller's
        own timeout never cancels for the others.
        """
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                # Re-checked after each wake-up: hand-offs from threads may still arrive.
                while self.pending:
                    if self._idle is None or self._idle.done():
                        self._idle = loop.create_future()
                    await asyncio.shield(self._idle)
        except TimeoutError:
            pass
        return self.pending

    def _wake_idle_waiters(self) -> None:
        if self._idle is not None and not self._idle.done():
            self._idle.set_result(None)

    async def cancel_all(self) -> Interrupted:
        """Take nothing more; cancel everything queued or running, wait (at most
        ``_UNWIND_SECONDS``) for the cancelled handlers to unwind, and report how the
        events ended: never started or interrupted (lost), still running (abandoned), or
        interrupted mid-publish (unconfirmed)."""
        self.state = Lifecycle.CLOSED
        outcome = Interrupted([envelope for envelope, _, _ in self._queue], [], [])
        self._pending -= len(self._queue)
        self._queue.clear()
        for envelope in outcome.lost:
            self._lose(envelope)
        held = dict(self._holding)
        running = list(held)
        if self._drainer is not None:
            running.append(self._drainer)
            self._drainer = None
        self._interrupted_now = outcome
        for task in running:
            task.cancel()
        if running:
            # A handler that swallows its cancellation is not waited for forever.
            await asyncio.wait(running, timeout=_UNWIND_SECONDS)
        for task, envelope in held.items():
            if not task.done():
                self._given_up.add(task)
                self._holding.pop(task, None)
                self._pending -= 1
                self.abandoned += 1
                outcome.abandoned.append(envelope)
        self._interrupted_now = None
        self._wake_idle_waiters()
        return outcome

    def _interrupted(self, envelope: EventEnvelope, how: Interruption | None) -> None:
        """A running event cancelled at shutdown, classified by what its code noted."""
        report = self._interrupted_now
        if how is Interruption.ABANDONED:
            self.abandoned += 1
            if report is not None:
                report.abandoned.append(envelope)
        elif how is Interruption.UNCONFIRMED:
            self.unconfirmed += 1
            if report is not None:
                report.unconfirmed.append(envelope)
        else:
            self._lose(envelope)
            if report is not None:
                report.lost.append(envelope)

    def _failed(self, envelope: EventEnvelope, exc: Exception) -> None:
        """The backend could not hand the event over."""
        if isinstance(exc, BackendUnavailable) and exc.may_be_stored:
            self.unconfirmed += 1
            logger.error(
                f"Event {envelope.describe()} is unconfirmed: it may have been stored, but "
                f"nothing confirmed it: {type(exc).__name__}: {exc}"
            )
            return
        self.count_lost(envelope, _reason(exc))

    def _lose(self, envelope: EventEnvelope) -> None:
        self.lost += 1
        self._on_lost(envelope)

    def count_lost(self, envelope: EventEnvelope, reason: str) -> None:
        self._lose(envelope)
        logger.error(f"Event {envelope.describe()} was lost: {reason}")

    def count_refused(self, envelope: EventEnvelope, reason: str) -> None:
        """An event emitted earlier (after the response) that could not be accepted now."""
        self.accepted += 1
        self.count_lost(envelope, reason)

    @property
    def handled(self) -> int:
        """Accepted events that ran to their end (their handlers' failures included)."""
        return self.accepted - self.pending - self.lost - self.abandoned - self.unconfirmed


def _reason(exc: Exception) -> str:
    return f"not delivered: {type(exc).__name__}: {exc}"
