"""The worker threads of sync handlers (and of sync dependencies).

A thread cannot be killed: a sync handler that outlives its timeout, or that shutdown gives
up on, is abandoned -- it keeps its thread until it returns, counted in the meantime
(``EventBus.abandoned_threads``).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from .errors import HandlerTimeout
from .interruption import Interruption, note_interruption

if TYPE_CHECKING:
    from .envelope import EventEnvelope
    from .registry import Subscription

__all__ = ["WorkerThreads"]


class WorkerThreads:
    """A pool of threads named ``eventbus_N``, started on first use."""

    def __init__(self, size: int | None = None) -> None:
        # The stdlib's own default for I/O-bound pools.
        self._size = size or min(32, (os.cpu_count() or 1) + 4)
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()
        self._abandoned = 0
        self._abandoned_lock = threading.Lock()

    @property
    def executor(self) -> ThreadPoolExecutor:
        executor = self._executor
        if executor is None:
            with self._executor_lock:
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(
                        max_workers=self._size, thread_name_prefix="eventbus"
                    )
                executor = self._executor
        return executor

    @property
    def abandoned(self) -> int:
        """Threads still busy with a call that was given up on."""
        return self._abandoned

    def abandon(self, call: Future[Any]) -> None:
        """Count ``call``'s thread as abandoned until it returns."""
        if call.done():
            return
        with self._abandoned_lock:
            self._abandoned += 1

        def returned(_: Future[Any]) -> None:
            with self._abandoned_lock:
                self._abandoned -= 1

        call.add_done_callback(returned)

    def shutdown(self) -> None:
        if self._executor is not None:
            # Do not wait: an abandoned sync handler must not hang the app's shutdown.
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def run(self, sub: Subscription, event: EventEnvelope) -> None:
        """Run a sync handler in a worker thread and wait for it, within its timeout."""
        # The copied context carries current_event() (and the caller's contextvars) into
        # the worker thread, as asyncio.to_thread does.
        context = contextvars.copy_context()
        handler: Callable[..., Any] = sub.handler
        if event._kwargs:
            call: Future[Any] = self.executor.submit(
                context.run, lambda: handler(*event._args, **event._kwargs)
            )
        else:
            call = self.executor.submit(context.run, handler, *event._args)
        try:
            await self._finish(sub, call)
        except asyncio.CancelledError:
            if not call.done():
                # Cancelled (shutdown gave up): the thread runs on, the event is abandoned.
                self.abandon(call)
                note_interruption(Interruption.ABANDONED)
            raise

    async def _finish(self, sub: Subscription, call: Future[Any]) -> None:
        if sub.timeout is None:
            result = await asyncio.wrap_future(call)
            if inspect.isawaitable(result):
                # An async function behind a plain (non-async) decorator: finish it here, on
                # the loop, instead of dropping an unawaited coroutine.
                await result
            return
        # One deadline for the thread and for a coroutine it may return: the timeout covers
        # the handler's whole run.
        timeout = asyncio.timeout(sub.timeout)
        try:
            async with timeout:
                result = await asyncio.wrap_future(call)
                if inspect.isawaitable(result):
                    await result
        except TimeoutError as exc:
            if not call.done():
                self.abandon(call)
                raise HandlerTimeout(
                    f"sync handler {sub.name} timed out after {sub.timeout}s; a thread cannot "
                    "be killed, so it was abandoned and keeps its worker thread until it returns"
                ) from exc
            if not timeout.expired():
                raise  # the handler's own TimeoutError
            raise HandlerTimeout(
                f"handler {sub.name} timed out after {sub.timeout}s: the coroutine it returned "
                "was cancelled"
            ) from exc
