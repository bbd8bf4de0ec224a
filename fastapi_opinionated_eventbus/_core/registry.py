"""Subscriptions, and the lookup from an event name to the handlers that run for it."""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from pydantic import BaseModel

from .injection import Injection, analyse_handler
from .retry import RetryPolicy
from .typed import event_name_of

__all__ = ["Plan", "Registry", "Subscription", "is_pattern"]

_PATTERN_CHARS = frozenset("*?[")


def is_pattern(name: str) -> bool:
    """Whether a subscribed name is a shell-style pattern (``user.*``, ``*``, ``order.?``)."""
    return not _PATTERN_CHARS.isdisjoint(name)


def _is_async_callable(handler: Callable[..., Any]) -> bool:
    # unwrap(): an async function behind a functools.wraps decorator returns a coroutine.
    if inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(inspect.unwrap(handler)):
        return True
    if isinstance(handler, type):
        return False  # calling a class builds an instance: nothing to await
    call = getattr(handler, "__call__", None)  # noqa: B004 - an object with async __call__
    return call is not None and inspect.iscoroutinefunction(call)


def describe(handler: Callable[..., Any]) -> str:
    """``module:qualname`` of a handler, for logs, dead letters and the CLI."""
    module = getattr(handler, "__module__", None) or "?"
    qualname = getattr(handler, "__qualname__", None) or type(handler).__qualname__
    return f"{module}:{qualname}"


@dataclass(frozen=True, slots=True, eq=False)
class Subscription:
    """One handler subscribed to one event name or pattern, with its options."""

    event: str
    handler: Callable[..., Any]
    priority: int = 0
    retry: RetryPolicy | None = None
    timeout: float | None = None
    broadcast: bool = False
    wrapped: bool = False
    """Always run on the general path (``Dispatcher._invoke``), even when ``plain`` would
    allow the cheapest one: a forwarder's batching relies on it."""
    is_async: bool = field(init=False)
    is_pattern: bool = field(init=False)
    name: str = field(init=False)
    injection: Injection | None = field(init=False)
    """The handler's FastAPI dependencies, analysed once here; None when it has none."""
    plain: bool = field(init=False)
    """An async handler with no timeout, no retry and no dependency: runs on the cheapest
    path (a handler with dependencies needs the wrapper that resolves and tears them down)."""

    def __post_init__(self) -> None:
        is_async = _is_async_callable(self.handler)
        name = describe(self.handler)
        injection = analyse_handler(self.handler, name)
        object.__setattr__(self, "is_async", is_async)
        object.__setattr__(self, "is_pattern", is_pattern(self.event))
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "injection", injection)
        plain = (
            is_async
            and self.timeout is None
            and self.retry is None
            and injection is None
            and not self.wrapped
        )
        object.__setattr__(self, "plain", plain)


class Plan:
    """The handlers one event name resolves to, grouped by descending priority.

    Handlers in one group run concurrently; a group starts when the previous one finished.
    """

    __slots__ = ("_only", "count", "groups", "inline", "schema", "single")

    def __init__(
        self,
        groups: tuple[tuple[Subscription, ...], ...],
        schema: Any = None,
        *,
        inline: bool = True,
    ) -> None:
        self.groups = groups
        self.count = sum(len(group) for group in groups)
        self.schema = schema
        self.inline = inline
        # The one plain async handler when that is all there is, and nothing (metrics,
        # tracing) needs to wrap it: awaited directly, the fastest path.
        single = groups[0][0] if self.count == 1 else None
        self.single = single if inline and single is not None and single.plain else None
        self._only: dict[bool, Plan] = {}

    def only(self, *, broadcast: bool) -> Plan:
        """The same plan restricted to broadcast (or non-broadcast) subscriptions."""
        plan = self._only.get(broadcast)
        if plan is None:  # computed once per cached plan, not per received event
            groups = tuple(
                kept
                for group in self.groups
                if (kept := tuple(s for s in group if s.broadcast == broadcast))
            )
            plan = self._only[broadcast] = Plan(groups, self.schema, inline=self.inline)
        return plan


def _group_by_priority(subs: list[Subscription]) -> tuple[tuple[Subscription, ...], ...]:
    groups: dict[int, list[Subscription]] = {}
    for sub in subs:  # insertion order = subscription order, kept within a group
        groups.setdefault(sub.priority, []).append(sub)
    return tuple(tuple(groups[p]) for p in sorted(groups, reverse=True))


class Registry:
    """Exact names in a dict, patterns in a list, and a bounded cache of resolved plans.

    ``plan(name)`` costs one dict lookup once a name has been seen: patterns are matched
    once per distinct name, and the cache is emptied on every subscribe/unsubscribe.
    ``inline=False`` (metrics or tracing on) keeps every handler on the wrapped path.
    """

    def __init__(self, cache_size: int = 4096, *, inline: bool = True) -> None:
        self._exact: dict[str, list[Subscription]] = {}
        self._patterns: list[Subscription] = []
        self._schemas: dict[str, Any] = {}
        self.cached: dict[str, Plan] = {}
        """Resolved plans by event name: emit reads it directly (``cached.get(name)``);
        it is only ever cleared in place, never replaced."""
        self._cache_size = cache_size
        self._inline = inline
        # Resolving runs on the loop and in threads (emit_nowait from sync code).
        self._resolving = threading.Lock()
        self._generation = 0
        """Bumped on every change of subscriptions or schemas: a plan resolved meanwhile
        in another thread is out of date and must not be cached."""

    def add(self, sub: Subscription) -> None:
        if sub.is_pattern:
            self._patterns.append(sub)
        else:
            self._exact.setdefault(sub.event, []).append(sub)
        self._changed()

    def remove(self, event: str, handler: Callable[..., Any]) -> bool:
        """Remove ``handler``'s subscriptions to ``event``; False when there were none."""
        if is_pattern(event):
            kept = [s for s in self._patterns if not (s.event == event and s.handler == handler)]
            removed = len(kept) != len(self._patterns)
            self._patterns = kept
        else:
            subs = self._exact.get(event, [])
            kept = [s for s in subs if s.handler != handler]
            removed = len(kept) != len(subs)
            if kept:
                self._exact[event] = kept
            else:
                self._exact.pop(event, None)
        if removed:
            self._changed()
        return removed

    def set_schema(self, event: str, schema: Any) -> None:
        self._schemas[event] = schema
        self._changed()

    def _changed(self) -> None:
        with self._resolving:
            self._generation += 1
            self.cached.clear()

    def schema_for(self, event: str) -> Any:
        return self._schemas.get(event)

    def schemas(self) -> dict[str, Any]:
        return dict(self._schemas)

    def plan(self, event: str) -> Plan:
        plan = self.cached.get(event)
        if plan is None:
            plan = self._resolve(event)
        return plan

    def _resolve(self, event: str) -> Plan:
        generation = self._generation  # before reading the subscriptions it resolves from
        # Names are fully checked here, once per distinct name: emit's hot path only checks
        # that it has a non-empty str, and a name that fails is never cached.
        check_event_name(event, what="event name to emit")
        subs = list(self._exact.get(event, ()))
        subs.extend(s for s in self._patterns if fnmatchcase(event, s.event))
        plan = Plan(_group_by_priority(subs), self._schemas.get(event), inline=self._inline)
        cached = self.cached
        with self._resolving:
            if generation != self._generation:
                # Subscribed or unsubscribed in another thread meanwhile: this plan may
                # be out of date, so it serves this one emit and is not kept.
                return plan
            while len(cached) >= self._cache_size:
                # Evict the oldest entry: an app emitting unbounded distinct names keeps a
                # bounded cache and only loses speed on names it has not seen recently.
                # (Under the lock: two threads must not both evict the same key.)
                cached.pop(next(iter(cached)), None)
            cached[event] = plan
        return plan

    def subscriptions(self) -> list[Subscription]:
        subs = [s for group in self._exact.values() for s in group]
        subs.extend(self._patterns)
        return subs

    def clear(self) -> None:
        self._exact.clear()
        self._patterns.clear()
        self._schemas.clear()
        self._changed()

    @property
    def cached_names(self) -> int:
        return len(self.cached)


def check_event_name(event: object, *, what: str = "event name") -> str:
    """Validate a name given to emit/subscribe; patterns are allowed by the caller's choice."""
    if not isinstance(event, str):
        raise TypeError(f"The {what} must be a str, got {type(event).__name__}: {event!r}")
    if not event or event.strip() != event:
        raise ValueError(
            f"The {what} must be a non-empty string without surrounding spaces, got {event!r}"
        )
    if not event.isprintable():
        # Control characters and lone surrogates: refused here for every backend, rather
        # than by a broker's encoder or a consumer's identity check, or in a log line.
        raise ValueError(
            f"The {what} must be printable text, without control characters or lone "
            f"surrogates, got {event!r}"
        )
    return event


def check_subscription_options(
    event: object,
    *,
    priority: int = 0,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
    broadcast: bool = False,
) -> tuple[str, Any]:
    """Validate what a subscription is given; return its event name and schema (or None).

    ``event`` is a name, a pattern, or a Pydantic model class with ``__event_name__`` (which
    subscribes to that name and registers the model as its schema).
    """
    schema = None
    if isinstance(event, type) and issubclass(event, BaseModel):
        schema = event
        event = event_name_of(event)
    name = check_event_name(event, what="event name (or pattern) to subscribe to")
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise TypeError(f"priority must be an int, got {priority!r}")
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise TypeError(f"retry must be a RetryPolicy or None, got {retry!r}")
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise TypeError(f"timeout must be a number of seconds or None, got {timeout!r}")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
    if not isinstance(broadcast, bool):
        raise TypeError(f"broadcast must be a bool, got {broadcast!r}")
    if schema is not None and is_pattern(name):
        raise ValueError(f"typed event {schema.__qualname__} cannot have a pattern name {name!r}")
    return name, schema


def check_handler(handler: object) -> Callable[..., Any]:
    """Refuse what cannot be an event handler, with the reason."""
    if not callable(handler):
        raise TypeError(
            f"An event handler must be callable, got {type(handler).__name__}: {handler!r}"
        )
    function = "a generator function"
    candidates = [(function, handler), (function, inspect.unwrap(handler))]
    if not inspect.isroutine(handler) and not isinstance(handler, type):
        # An object with __call__: what runs is that method.
        call = getattr(type(handler), "__call__", None)  # noqa: B004
        candidates.append(("an object whose __call__ is a generator function", call))
    for what, candidate in candidates:
        if inspect.isasyncgenfunction(candidate) or inspect.isgeneratorfunction(candidate):
            raise TypeError(
                f"{describe(handler)} is {what}: nothing would iterate it, so its body "
                "would never run; make it a plain def or async def"
            )
    return handler


def build_subscription(
    event: object,
    handler: object,
    *,
    priority: int = 0,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
    broadcast: bool = False,
) -> tuple[Subscription, Any]:
    """Validate subscription arguments; return the subscription and its schema (or None)."""
    name, schema = check_subscription_options(
        event, priority=priority, retry=retry, timeout=timeout, broadcast=broadcast
    )
    sub = Subscription(
        name,
        check_handler(handler),
        priority=priority,
        retry=retry,
        timeout=timeout,
        broadcast=broadcast,
    )
    return sub, schema
