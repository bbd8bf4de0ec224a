"""Batches of one forward subscription: events wait in a batch, batches go to the forwarder.

Each call of :meth:`Batcher.send` (one per event, from the subscription's handler) adds
the event to the open batch and waits for the outcome of the batch that carries it. A
batch leaves when it holds ``batch_size`` events, or when its oldest event has waited
``max_wait`` seconds, and at most ``concurrency`` batches are in flight at once (the
others wait, and fill up meanwhile). The call returns only once the forwarder accepted
the event, and raises :class:`ForwardingFailed` when it did not: so the event is never
acknowledged (handled, XACKed) before it was accepted, and the dispatcher retries it
(in a later batch) and finally dead-letters it, exactly as for any handler.

A call that is cancelled (its ``timeout``, a cancelled emitter, shutdown) takes its event
out of a batch that has not left yet; once a batch left, it cannot be called back.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from fastapi_opinionated.shared.logger import ns_logger

from .._core.envelope import EventEnvelope
from .._core.errors import ForwardingFailed, PartialBatchFailure
from .._text import loggable

__all__ = ["BatchStats", "Batcher"]

logger = ns_logger("EventBus")

SendMany = Callable[[Sequence[EventEnvelope]], Awaitable[None]]

# How long closing waits for cancelled sends to unwind.
_UNWIND_SECONDS = 1.0


@dataclass
class BatchStats:
    batches_sent: int = 0
    events_sent: int = 0
    batches_failed: int = 0
    events_failed: int = 0
    lost: int = 0


class _Item:
    __slots__ = ("due", "envelope", "outcome", "sent")

    def __init__(self, envelope: EventEnvelope, outcome: asyncio.Future[Any], due: float) -> None:
        self.envelope = envelope
        self.outcome = outcome  # its result: None (accepted) or the ForwardingFailed to raise
        self.due = due
        self.sent = False


class Batcher:
    """Collects one subscription's events into batches and sends them."""

    def __init__(
        self,
        send_many: SendMany,
        name: str,
        *,
        batch_size: int,
        max_wait: float,
        concurrency: int,
        send_timeout: float,
    ) -> None:
        self.name = name
        self._send_many = send_many
        self.batch_size = batch_size
        self.max_wait = max_wait
        self.concurrency = concurrency
        self.send_timeout = send_timeout
        self._pending: deque[_Item] = deque()
        self._sending: dict[asyncio.Task[None], list[_Item]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._urgent = False  # shutting down: every event leaves at once
        self._closed = False
        self.stats = BatchStats()

    # ------------------------------------------------------------------ one event
    async def send(self, envelope: EventEnvelope) -> None:
        """Return once ``envelope`` was accepted; raise ForwardingFailed when it was not."""
        loop = asyncio.get_running_loop()
        if self._closed:
            raise ForwardingFailed(
                f"{self.name}: event {envelope.describe()} was not sent: the event bus has "
                "shut down"
            )
        self._loop = loop
        outcome: asyncio.Future[Any] = loop.create_future()
        item = _Item(envelope, outcome, loop.time() + self.max_wait)
        self._pending.append(item)
        if self._urgent or len(self._pending) >= self.batch_size:
            self._pump()
        else:
            self._arm()
        try:
            failure = await outcome
        except asyncio.CancelledError:
            if not item.sent:
                try:  # noqa: SIM105 - rare: a timeout or a cancelled emitter
                    self._pending.remove(item)
                except ValueError:
                    pass
                self._arm()
            raise
        if failure is not None:
            raise failure

    # ------------------------------------------------------------------ batches
    def _pump(self) -> None:
        """Send every batch that is due, as far as ``concurrency`` allows."""
        loop = self._loop
        if loop is None or self._closed:
            return
        now = loop.time()
        pending = self._pending
        while pending and len(self._sending) < self.concurrency:
            if not (self._urgent or len(pending) >= self.batch_size or pending[0].due <= now):
                break
            self._launch(loop)
        self._arm()

    def _arm(self) -> None:
        """Wake up when the oldest waiting event is due (unless a send will pump anyway)."""
        timer = self._timer
        if not self._pending or len(self._sending) >= self.concurrency or self._loop is None:
            if timer is not None:
                timer.cancel()
                self._timer = None
            return
        due = self._pending[0].due
        if timer is not None:
            if timer.when() == due:
                return
            timer.cancel()
        self._timer = self._loop.call_at(due, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._pump()

    def _launch(self, loop: asyncio.AbstractEventLoop) -> None:
        pending = self._pending
        items: list[_Item] = []
        while pending and len(items) < self.batch_size:
            item = pending.popleft()
            if not item.outcome.done():  # its handler was cancelled meanwhile
                item.sent = True
                items.append(item)
        if not items:
            return
        task = loop.create_task(self._send(items), name=f"eventbus-forward {self.name}")
        self._sending[task] = items
        task.add_done_callback(self._sent)

    async def _send(self, items: list[_Item]) -> None:
        envelopes = [item.envelope for item in items]
        count = len(items)
        try:
            async with asyncio.timeout(self.send_timeout) as scope:
                await self._send_many(envelopes)
        except PartialBatchFailure as partial:
            refused = 0
            for item in items:
                reason = partial.failed.get(item.envelope.id)
                if reason is None:
                    _settle(item, None)
                else:
                    refused += 1
                    _settle(item, self._failure(item, f"not accepted: {loggable(reason, 500)}"))
            self._count(count, refused)
        except asyncio.CancelledError:
            for item in items:
                _settle(item, self._failure(item, "the bus shut down while its batch was sent"))
            raise
        except Exception as exc:
            if isinstance(exc, TimeoutError) and scope.expired():
                problem = f"its batch was not accepted within send_timeout={self.send_timeout}s"
            else:
                # A built-in forwarder's own ForwardingFailed already says who and what.
                kind = "" if isinstance(exc, ForwardingFailed) else f"{type(exc).__name__}: "
                problem = f"its batch of {count} event(s) failed: {kind}{loggable(str(exc), 500)}"
            for item in items:
                _settle(item, self._failure(item, problem, cause=exc))
            self._count(count, count)
        else:
            for item in items:
                _settle(item, None)
            self._count(count, 0)

    def _failure(
        self, item: _Item, problem: str, cause: BaseException | None = None
    ) -> ForwardingFailed:
        failure = ForwardingFailed(
            f"{self.name} did not take event {item.envelope.describe()}: {problem}"
        )
        failure.__cause__ = cause
        return failure

    def _count(self, count: int, failed: int) -> None:
        stats = self.stats
        if failed == count:
            stats.batches_failed += 1
        else:
            stats.batches_sent += 1
        stats.events_sent += count - failed
        stats.events_failed += failed

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.pop(task, None)
        if not task.cancelled():
            task.exception()  # retrieved: _send settles its own failures
        self._pump()

    # ------------------------------------------------------------------ shutdown
    def hurry(self) -> None:
        """Shutdown has begun: send what waits now, and every later event at once."""
        self._urgent = True
        loop = self._loop
        if loop is not None and _running_loop() is loop:
            self._pump()

    async def close(self, timeout: float) -> list[EventEnvelope]:
        """Send what is left for up to ``timeout`` seconds; then give up on the rest,
        failing the calls still waiting, and return their events (lost, not accepted)."""
        self.hurry()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._sending and (remaining := deadline - loop.time()) > 0:
            await asyncio.wait(
                list(self._sending), timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
            self._pump()
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiting = [*self._pending, *(item for items in self._sending.values() for item in items)]
        lost = [item.envelope for item in waiting if not item.outcome.done()]
        for item in self._pending:
            _settle(item, self._failure(item, "the bus shut down before its batch was sent"))
        self._pending.clear()
        for items in self._sending.values():
            for item in items:
                _settle(item, self._failure(item, "the bus shut down while its batch was sent"))
        sending = list(self._sending)
        for task in sending:
            task.cancel()
        if sending and _running_loop() is self._loop:
            await asyncio.wait(sending, timeout=_UNWIND_SECONDS)
        self.stats.lost += len(lost)
        return lost

    def health(self) -> dict[str, Any]:
        return {
            "pending": len(self._pending),
            "sending": sum(len(items) for items in self._sending.values()),
            **asdict(self.stats),
        }


def _settle(item: _Item, failure: ForwardingFailed | None) -> None:
    if not item.outcome.done():
        item.outcome.set_result(failure)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
