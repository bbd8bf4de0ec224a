"""Finishing a coroutine whose first step already ran, without a Task of its own.

The bus runs a handler's first step itself (most handlers finish there). One that
suspends continues in the *awaiting* task through :class:`Resumed`, stepped inside the
handler's own context, so ``asyncio.current_task()`` is the task that started it, as it
would be with a plain ``await``, and ``asyncio.timeout`` or anyio cancel scopes entered
during the first step keep working.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Coroutine, Generator
from typing import Any

__all__ = ["Resumed", "start_in"]


def _in_awaiting_context(step: Callable[[Any], Any], value: Any) -> Any:
    return step(value)


class Resumed:
    """``await Resumed(coro, context, waiting_on)`` returns ``coro``'s result (or raises).

    ``context`` None: the rest runs in the awaiting task's own context, as the first step
    did (a coroutine of ours stepped once without ``Context.run``)."""

    __slots__ = ("_context", "_coro", "_waiting_on")

    def __init__(
        self,
        coro: Coroutine[Any, Any, Any],
        context: contextvars.Context | None,
        waiting_on: Any,
    ) -> None:
        self._coro, self._context, self._waiting_on = coro, context, waiting_on

    def __await__(self) -> Generator[Any, Any, Any]:
        context, coro, waiting_on = self._context, self._coro, self._waiting_on
        run = _in_awaiting_context if context is None else context.run
        while True:
            try:
                sent = yield waiting_on
            except BaseException as exc:  # cancellation: forwarded to the coroutine
                try:
                    waiting_on = run(coro.throw, exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    waiting_on = run(coro.send, sent)
                except StopIteration as stop:
                    return stop.value


def start_in(coro: Coroutine[Any, Any, object], context: contextvars.Context) -> Resumed | None:
    """Run ``coro``'s first step inside ``context``: None when it finished there (its
    result is dropped), else the :class:`Resumed` that finishes it."""
    try:
        waiting_on = context.run(coro.send, None)
    except StopIteration:
        return None
    return Resumed(coro, context, waiting_on)
