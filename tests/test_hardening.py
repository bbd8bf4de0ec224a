"""Defects a hostile tester found (step 6b), each proven by a test that failed before."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support import AppDir, Factory

from fastapi_opinionated_eventbus import (
    ConfigurationError,
    HandlerTimeout,
    Subscription,
    eventbus_api,
)
from fastapi_opinionated_eventbus.backends.redis.connection import make_client
from fastapi_opinionated_eventbus.testing import started_bus


# ---------------------------------------------------------------- 2. timeouts
async def test_timeout_covers_the_coroutine_a_sync_callable_returns() -> None:
    """An async def behind a decorator written without functools.wraps looks sync; the
    coroutine it returns was awaited outside the timeout, so emit never returned."""

    def logged(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., Any]:
        def wrapper(*args: Any) -> Coroutine[Any, Any, None]:
            return fn(*args)

        return wrapper

    @logged
    async def never_done(_: int) -> None:
        await asyncio.Event().wait()

    async with started_bus() as bus:
        bus.subscribe("stuck", never_done, timeout=0.2)
        result = await asyncio.wait_for(bus.emit("stuck", 1), 10)
    [failure] = result.failures
    assert isinstance(failure.exception, HandlerTimeout)
    assert "coroutine it returned" in str(failure.exception)


# ---------------------------------------------------------------- 3. mis-encoded URLs
@pytest.mark.parametrize(
    "url",
    [
        "redis://:TOPSECRET/tail@localhost:6379/0",  # '/' in the password
        "redis://:TOP#SECRET@localhost:6379/0",  # '#'
        "redis://:TOP?SECRET@localhost:6379/0",  # '?'
        "redis://user:TOP@SECRET@localhost:6379/0",  # '@'
        "redis://:TOPSECRET@localhost:port/0",  # not a port
    ],
)
def test_a_mis_encoded_redis_url_never_shows_a_piece_of_its_password(
    app_dir: AppDir, eventbus_app_factory: Factory, url: str
) -> None:
    root = app_dir({"orders/handlers.py": ""})
    with pytest.raises(ConfigurationError) as refused:
        eventbus_app_factory(root, backend="redis", redis_url=url)
    message = str(refused.value)
    assert "redis_url" in message and "is not a valid URL" in message
    for fragment in ("TOP", "SECRET", "tail"):
        assert fragment not in message


def test_a_client_for_a_mis_encoded_url_is_refused_without_the_parser_text() -> None:
    """The backend's own client factory (settings are not its only caller: the CLI and
    tests build clients too) never quotes redis-py's parser."""
    url = "redis://:TOPSECRET/tail@localhost:6379/0"
    with pytest.raises(ValueError) as refused:
        make_client(url, connect_timeout=1.0)
    message = str(refused.value)
    assert "TOP" not in message and "SECRET" not in message and "tail" not in message
    assert "redis://:***@localhost:6379/0" in message
    assert "percent-encode" in message


# ---------------------------------------------------------------- 6. metric cardinality
def _series(text: str, metric: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(f"{metric}{{")]


def test_event_labels_are_bounded_whatever_names_are_emitted(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    """210,000 dynamic names made 210,000 series (+150 MB): the first
    metrics_max_event_names names get a series each, the rest share event="(other)"."""
    root = app_dir({"orders/handlers.py": ""})
    app = eventbus_app_factory(
        root, metrics="prometheus", metrics_path="/metrics", metrics_max_event_names=20
    )
    with TestClient(app) as client:
        bus = eventbus_api()
        for n in range(1_000):
            bus.emit_nowait(f"order.{n}.paid")  # an id in the name, a common mistake
        text = client.get("/metrics").text
    emitted = _series(text, "eventbus_events_emitted_total")
    assert len(emitted) == 21
    assert 'eventbus_events_emitted_total{event="(other)"} 980.0' in emitted
    assert 'eventbus_events_emitted_total{event="order.0.paid"} 1.0' in emitted


# ---------------------------------------------------------------- 5. exact accounting
async def test_shutdown_accounting_is_exact_and_lost_means_lost() -> None:
    """handled + lost + abandoned + unconfirmed = emitted, and each count is what really
    happened: a handler that swallows its cancellation and finishes was handled, one
    that keeps running was abandoned, a sync handler still in its thread was abandoned;
    only the interrupted one was lost."""
    completed: list[str] = []
    release = threading.Event()
    stubborn_release = asyncio.Event()

    async def quick(n: int) -> None:
        completed.append(f"quick{n}")

    async def interrupted() -> None:
        await asyncio.sleep(3600)
        completed.append("interrupted")

    async def swallows_then_finishes() -> None:
        with contextlib.suppress(asyncio.CancelledError):  # ignores shutdown's cancellation
            await asyncio.sleep(3600)
        completed.append("swallowed")  # ... and finishes right away

    async def keeps_running() -> None:
        while not stubborn_release.is_set():
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                continue
        completed.append("stubborn")

    def in_thread() -> None:
        release.wait(10)
        completed.append("thread")

    async with started_bus() as bus:
        handlers: list[tuple[str, Callable[..., Any]]] = [
            ("quick", quick),
            ("interrupted", interrupted),
            ("swallows", swallows_then_finishes),
            ("stubborn", keeps_running),
            ("thread", in_thread),
        ]
        for name, handler in handlers:
            bus.subscribe(name, handler)
        for n in range(5):
            bus.emit_nowait("quick", n)
        for name in ("interrupted", "swallows", "stubborn", "thread"):
            bus.emit_nowait(name)
        await asyncio.sleep(0.05)  # everything started
        lost = await asyncio.wait_for(bus.shutdown(timeout=0.2), 10)
        report = (await bus.health())["background"]
        done_at_shutdown = list(completed)
        release.set()
        stubborn_release.set()
        await asyncio.sleep(0.2)

    assert lost == 1
    assert report == {
        "emitted": 9,
        "handled": 6,
        "lost": 1,
        "abandoned": 2,
        "unconfirmed": 0,
        "pending": 0,
    }
    # Reality: what was counted handled had completed, the lost one never did, and the
    # abandoned ones completed later.
    assert sorted(done_at_shutdown) == sorted([f"quick{n}" for n in range(5)] + ["swallowed"])
    assert "interrupted" not in completed
    assert {"thread", "stubborn"} <= set(completed)


# ---------------------------------------------------------------- 9. names, every backend
@pytest.mark.parametrize("name", ["user.\udc80", "user\tcreated", "user.\ncreated", "a\x1bb"])
async def test_a_name_that_is_not_printable_text_is_refused_by_every_backend(name: str) -> None:
    """A lone surrogate made Redis's emit raise UnicodeEncodeError; a control character
    passed locally and was refused only by a consumer. The name is refused at the call."""
    async with started_bus() as bus:
        with pytest.raises(ValueError, match="printable text"):
            await bus.emit(name)
        with pytest.raises(ValueError, match="printable text"):
            bus.emit_nowait(name)
        with pytest.raises(ValueError, match="printable text"):
            bus.subscribe(name, _noop)


async def _noop() -> None:
    pass


def test_a_class_with_an_async_call_is_a_sync_handler() -> None:
    """Calling the class builds an instance, not a coroutine: it was taken for async."""

    class Job:
        async def __call__(self) -> None:
            pass

    sub = Subscription("job", Job)
    assert sub.is_async is False
