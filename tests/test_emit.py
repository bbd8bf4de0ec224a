"""Emitting through the real core: arguments, threads, concurrency, isolation, strictness,
chaining and load. Every app is a temp app dir whose ``app/domains`` the core discovers."""

from __future__ import annotations

import asyncio
import functools
import gc
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from support import AppDir, Factory, domain, strip_ansi

from fastapi_opinionated_eventbus import EmitResult, HandlerFailure, eventbus_api
from fastapi_opinionated_eventbus.testing import running

# ---------------------------------------------------------------- arguments and threads

ARGS_SRC = """
    import threading

    from fastapi_opinionated_eventbus import OnInternalEvent

    calls = []


    def _me():
        return threading.get_ident(), threading.current_thread().name


    @OnInternalEvent("payment.processed")
    async def payment_async(payment_id, status, amount):
        calls.append(("payment_async", (payment_id, status, amount), {}, _me()))


    @OnInternalEvent("payment.processed")
    def payment_sync(payment_id, status, amount):
        calls.append(("payment_sync", (payment_id, status, amount), {}, _me()))


    @OnInternalEvent("user.tagged")
    async def tag_async(user_id, *, tag, event):
        calls.append(("tag_async", (user_id,), {"tag": tag, "event": event}, _me()))


    @OnInternalEvent("user.tagged")
    def tag_sync(user_id, *, tag, event):
        calls.append(("tag_sync", (user_id,), {"tag": tag, "event": event}, _me()))


    @OnInternalEvent("solo.async")
    async def solo_async(*args, **kwargs):
        calls.append(("solo_async", args, kwargs, _me()))


    @OnInternalEvent("solo.sync")
    def solo_sync(*args, **kwargs):
        calls.append(("solo_sync", args, kwargs, _me()))
"""


def _by_name(calls: list[tuple[Any, ...]]) -> dict[str, tuple[Any, ...]]:
    return {name: tuple(rest) for name, *rest in calls}


async def test_positional_arguments_reach_async_and_sync_handlers_exactly(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    app = eventbus_app_factory(app_dir({"billing/handlers.py": ARGS_SRC}))
    handlers = domain("billing.handlers")
    async with running(app):
        result = await eventbus_api().emit("payment.processed", "p_123", "success", 99.99)

    assert result.handled == 2 and result.ok
    calls = _by_name(handlers.calls)
    assert set(calls) == {"payment_async", "payment_sync"}
    for name in ("payment_async", "payment_sync"):
        args, kwargs, _ = calls[name]
        assert args == ("p_123", "success", 99.99)
        assert type(args[2]) is float
        assert kwargs == {}


async def test_keyword_arguments_reach_handlers_including_one_named_event(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    app = eventbus_app_factory(app_dir({"users/handlers.py": ARGS_SRC}))
    handlers = domain("users.handlers")
    async with running(app):
        result = await eventbus_api().emit("user.tagged", 7, tag="vip", event="signup")

    assert result.handled == 2 and result.ok, result.failures
    calls = _by_name(handlers.calls)
    for name in ("tag_async", "tag_sync"):
        args, kwargs, _ = calls[name]
        assert args == (7,)
        assert kwargs == {"tag": "vip", "event": "signup"}


@pytest.mark.parametrize("event", ["solo.async", "solo.sync"])
async def test_single_handler_gets_args_and_kwargs(
    app_dir: AppDir, eventbus_app_factory: Factory, event: str
) -> None:
    app = eventbus_app_factory(app_dir({"misc/handlers.py": ARGS_SRC}))
    handlers = domain("misc.handlers")
    async with running(app):
        result = await eventbus_api().emit(event, 1, "two", three=3.0)

    assert result.handled == 1 and result.ok
    [(name, args, kwargs, _)] = handlers.calls
    assert name == event.replace(".", "_")
    assert args == (1, "two")
    assert kwargs == {"three": 3.0}


async def test_sync_handlers_run_in_worker_threads_async_ones_on_the_loop_thread(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    app = eventbus_app_factory(app_dir({"billing/handlers.py": ARGS_SRC}))
    handlers = domain("billing.handlers")
    loop_thread = threading.get_ident()
    async with running(app):
        bus = eventbus_api()
        await bus.emit("payment.processed", "p_1", "ok", 1.0)  # two handlers: one group
        await bus.emit("solo.async")  # a single async handler
        await bus.emit("solo.sync")  # a single sync handler

    threads = {name: thread for name, _, _, thread in handlers.calls}
    assert set(threads) == {"payment_async", "payment_sync", "solo_async", "solo_sync"}
    for name in ("payment_async", "solo_async"):
        assert threads[name][0] == loop_thread, name
    for name in ("payment_sync", "solo_sync"):
        ident, thread_name = threads[name]
        assert ident != loop_thread, name
        assert thread_name != threading.current_thread().name, name


# ---------------------------------------------------------------- concurrency

CONCURRENT_SRC = """
    import asyncio
    import threading

    from fastapi_opinionated_eventbus import OnInternalEvent

    done = []

    # Two async handlers that each wait for the other to have started: they finish only if
    # they run concurrently (sequentially, the first times out after 5 s and fails).
    first_started = asyncio.Event()
    second_started = asyncio.Event()


    @OnInternalEvent("rendezvous")
    async def first():
        first_started.set()
        async with asyncio.timeout(5):
            await second_started.wait()
        done.append("first")


    @OnInternalEvent("rendezvous")
    async def second():
        second_started.set()
        async with asyncio.timeout(5):
            await first_started.wait()
        done.append("second")


    # The same between a sync handler (worker thread) and an async one (loop).
    sync_started = threading.Event()
    async_started = threading.Event()


    @OnInternalEvent("overlap")
    def in_thread():
        sync_started.set()
        if not async_started.wait(5):
            raise TimeoutError("the async handler did not run while the sync one ran")
        done.append("in_thread")


    @OnInternalEvent("overlap")
    async def on_loop():
        async_started.set()
        if not await asyncio.to_thread(sync_started.wait, 5):
            raise TimeoutError("the sync handler did not run while the async one ran")
        done.append("on_loop")
"""


async def test_two_async_handlers_of_one_event_run_concurrently(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    app = eventbus_app_factory(app_dir({"sync/handlers.py": CONCURRENT_SRC}))
    handlers = domain("sync.handlers")
    async with running(app):
        result = await eventbus_api().emit("rendezvous")

    assert result.failures == ()
    assert sorted(handlers.done) == ["first", "second"]


async def test_sync_and_async_handlers_of_one_event_overlap(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    app = eventbus_app_factory(app_dir({"sync/handlers.py": CONCURRENT_SRC}))
    handlers = domain("sync.handlers")
    async with running(app):
        result = await eventbus_api().emit("overlap")

    assert result.failures == ()
    assert sorted(handlers.done) == ["in_thread", "on_loop"]


# ---------------------------------------------------------------- matching

MATCHING_SRC = """
    from fastapi_opinionated_eventbus import OnInternalEvent

    calls = []


    @OnInternalEvent("user.created")
    async def welcome(user):
        calls.append(("welcome", user))


    @OnInternalEvent("user.created")
    def audit(user):
        calls.append(("audit", user))


    @OnInternalEvent("user.created")
    async def analytics(user):
        calls.append(("analytics", user))


    @OnInternalEvent("user.deleted")
    async def farewell(user):
        calls.append(("farewell", user))


    @OnInternalEvent("user.created.v2")
    async def welcome_v2(user):
        calls.append(("welcome_v2", user))
"""


async def test_every_handler_of_the_event_runs_and_only_those(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    app = eventbus_app_factory(app_dir({"users/handlers.py": MATCHING_SRC}))
    handlers = domain("users.handlers")
    user = {"id": 1}
    async with running(app):
        result = await eventbus_api().emit("user.created", user)

    assert result.handled == 3
    assert sorted(handlers.calls, key=lambda c: c[0]) == [
        ("analytics", user),
        ("audit", user),
        ("welcome", user),
    ]


async def test_emit_without_handlers_is_a_no_op_with_handled_zero(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    app = eventbus_app_factory(app_dir({"users/handlers.py": MATCHING_SRC}))
    handlers = domain("users.handlers")
    async with running(app):
        result = await eventbus_api().emit("nobody.listens", {"id": 1}, extra=True)

    assert isinstance(result, EmitResult)
    assert result.handled == 0
    assert result.failures == ()
    assert result.ok
    assert handlers.calls == []


# ---------------------------------------------------------------- failures

FAILING_SRC = """
    from fastapi_opinionated.decorators.routing import Post

    from fastapi_opinionated_eventbus import OnInternalEvent, eventbus_api

    calls = []
    CARD_ERROR = RuntimeError("card processor down")


    @OnInternalEvent("order.placed")
    async def reserve_stock(order_id):
        calls.append(("reserve_stock", order_id))


    class Billing:
        @staticmethod
        @OnInternalEvent("order.placed")
        async def charge_card(order_id):
            raise CARD_ERROR


    @OnInternalEvent("order.placed")
    def send_receipt(order_id):
        calls.append(("send_receipt", order_id))


    @Post("/orders/{order_id}")
    async def place_order(order_id: str):
        result = await eventbus_api().emit("order.placed", order_id)
        return {
            "handled": result.handled,
            "failed": [failure.handler for failure in result.failures],
            "event_id": result.event_id,
        }
"""

CHARGE_CARD = "app.domains.shop.handlers:Billing.charge_card"


def test_a_failing_handler_is_isolated_logged_and_the_route_answers_200(
    app_dir: AppDir, eventbus_app_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    app = eventbus_app_factory(app_dir({"shop/handlers.py": FAILING_SRC}))
    handlers = domain("shop.handlers")
    with TestClient(app) as client:
        response = client.post("/orders/o-42")

    assert response.status_code == 200
    body = response.json()
    assert body == {"handled": 3, "failed": [CHARGE_CARD], "event_id": body["event_id"]}
    assert sorted(handlers.calls) == [("reserve_stock", "o-42"), ("send_receipt", "o-42")]

    log = strip_ansi(caplog.text)
    assert f"Handler {CHARGE_CARD} failed on event 'order.placed'" in log
    assert f"id={body['event_id']}" in log
    assert "RuntimeError: card processor down" in log
    assert "Traceback (most recent call last)" in log
    assert "raise CARD_ERROR" in log  # the raising source line
    assert "shop/handlers.py" in log


async def test_emit_result_reports_handled_count_and_failures_with_exceptions(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    app = eventbus_app_factory(app_dir({"shop/handlers.py": FAILING_SRC}))
    handlers = domain("shop.handlers")
    async with running(app):
        result = await eventbus_api().emit("order.placed", "o-1")

    assert result.handled == 3
    assert not result.ok
    assert result.event is not None and result.event.name == "order.placed"
    assert result.event.args == ("o-1",)
    assert result.event_id == result.event.id
    [failure] = result.failures
    assert isinstance(failure, HandlerFailure)
    assert failure.handler == CHARGE_CARD
    assert failure.exception is handlers.CARD_ERROR
    assert failure.attempts == 1
    assert "handled=3" in repr(result) and "failed=1" in repr(result)


STRICT_SRC = """
    import asyncio

    from fastapi_opinionated_eventbus import OnInternalEvent

    calls = []
    DISK_FULL = ValueError("disk full")
    MISSING = KeyError("ledger")


    @OnInternalEvent("audit.flush")
    async def broken():
        raise DISK_FULL


    @OnInternalEvent("audit.flush")
    async def slow_ok():
        # Suspends several times: it finishes after broken() has already failed.
        for _ in range(20):
            await asyncio.sleep(0)
        calls.append("slow_ok")


    @OnInternalEvent("audit.flush")
    def broken_in_thread():
        raise MISSING


    @OnInternalEvent("audit.flush")
    def thread_ok():
        calls.append("thread_ok")
"""


async def test_strict_emit_raises_an_exception_group_after_every_handler_finished(
    app_dir: AppDir, eventbus_app_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    app = eventbus_app_factory(app_dir({"audit/handlers.py": STRICT_SRC}))
    handlers = domain("audit.handlers")
    async with running(app):
        with pytest.raises(ExceptionGroup) as info:
            await eventbus_api().emit("audit.flush", strict=True)
        assert sorted(handlers.calls) == ["slow_ok", "thread_ok"]

        # Not strict (the default): the same failures are returned, not raised.
        result = await eventbus_api().emit("audit.flush")

    group = info.value
    assert "'audit.flush'" in str(group) and "2 handler(s) failed" in str(group)
    # Strict or not, each failure is logged, a sync one with its thread's traceback too.
    log = strip_ansi(caplog.text)
    assert "Handler app.domains.audit.handlers:broken_in_thread failed" in log
    assert "raise MISSING" in log and "raise DISK_FULL" in log
    assert {id(exc) for exc in group.exceptions} == {id(handlers.DISK_FULL), id(handlers.MISSING)}
    assert result.handled == 4
    assert {failure.exception for failure in result.failures} == {
        handlers.DISK_FULL,
        handlers.MISSING,
    }


async def test_strict_plugin_option_makes_every_emit_strict_unless_overridden(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    app = eventbus_app_factory(app_dir({"audit/handlers.py": STRICT_SRC}), strict=True)
    handlers = domain("audit.handlers")
    async with running(app):
        with pytest.raises(ExceptionGroup) as info:
            await eventbus_api().emit("audit.flush")
        assert sorted(handlers.calls) == ["slow_ok", "thread_ok"]
        result = await eventbus_api().emit("audit.flush", strict=False)

    assert len(info.value.exceptions) == 2
    assert result.handled == 4 and len(result.failures) == 2
    assert sorted(handlers.calls) == ["slow_ok", "slow_ok", "thread_ok", "thread_ok"]


async def test_strict_emit_does_not_raise_when_every_handler_succeeds(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    app = eventbus_app_factory(app_dir({"users/handlers.py": MATCHING_SRC}), strict=True)
    async with running(app):
        result = await eventbus_api().emit("user.created", {"id": 2}, strict=True)
    assert result.handled == 3 and result.ok


# ---------------------------------------------------------------- bad emits

MISMATCH_SRC = """
    from fastapi_opinionated_eventbus import OnInternalEvent

    calls = []


    @OnInternalEvent("user.created")
    async def welcome(user):
        calls.append(("welcome", user))


    @OnInternalEvent("user.created")
    async def needs_plan(user, plan):
        calls.append("needs_plan")


    @OnInternalEvent("user.created")
    def takes_nothing():
        calls.append("takes_nothing")


    @OnInternalEvent("solo.mismatch")
    async def lonely():
        calls.append("lonely")
"""


async def test_handler_whose_signature_does_not_fit_fails_alone_and_the_log_says_why(
    app_dir: AppDir, eventbus_app_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    app = eventbus_app_factory(app_dir({"users/handlers.py": MISMATCH_SRC}))
    handlers = domain("users.handlers")
    async with running(app):
        result = await eventbus_api().emit("user.created", {"id": 3})
        solo = await eventbus_api().emit("solo.mismatch", "unexpected")

    assert handlers.calls == [("welcome", {"id": 3})]
    assert result.handled == 3
    assert sorted(f.handler for f in result.failures) == [
        "app.domains.users.handlers:needs_plan",
        "app.domains.users.handlers:takes_nothing",
    ]
    assert all(isinstance(f.exception, TypeError) for f in result.failures)
    assert solo.handled == 1
    assert [f.handler for f in solo.failures] == ["app.domains.users.handlers:lonely"]

    log = strip_ansi(caplog.text)
    assert "Handler app.domains.users.handlers:needs_plan failed on event 'user.created'" in log
    assert "do not match the handler's signature needs_plan(user, plan)" in log
    assert "missing a required argument: 'plan'" in log
    assert "Handler app.domains.users.handlers:takes_nothing failed" in log
    assert "do not match the handler's signature takes_nothing()" in log
    assert "Handler app.domains.users.handlers:lonely failed on event 'solo.mismatch'" in log
    assert "do not match the handler's signature lonely()" in log


class _Notifier:
    """A callable object handler (no ``__name__``)."""

    def __init__(self) -> None:
        self.calls: list[Any] = []

    async def __call__(self, user: Any) -> None:
        self.calls.append(user)


def _sync_notify(channel: str, user: Any) -> None:
    raise AssertionError("never called with a fitting signature in this test")


@pytest.mark.parametrize(
    "make_handler",
    [_Notifier, lambda: functools.partial(_sync_notify, "email")],
    ids=["callable-object", "functools-partial"],
)
async def test_signature_mismatch_of_a_handler_without_name_is_isolated_too(
    app_dir: AppDir,
    eventbus_app_factory: Factory,
    caplog: pytest.LogCaptureFixture,
    make_handler: Callable[[], Callable[..., Any]],
) -> None:
    app = eventbus_app_factory(app_dir({"users/handlers.py": MISMATCH_SRC}))
    handlers = domain("users.handlers")
    odd_handler = make_handler()
    escaped = ""
    async with running(app):
        bus = eventbus_api()
        bus.subscribe("user.created", odd_handler)
        try:
            result = await bus.emit("user.created", {"id": 4}, "extra")
        except Exception as exc:  # keep only the text: the traceback holds handler frames
            escaped = f"{type(exc).__name__}: {exc}"
    if escaped:
        gc.collect()  # abandoned handler coroutines fail here, not in a later test
        pytest.fail(f"a handler's failure escaped emit() instead of being isolated: {escaped}")

    # needs_plan(user, plan) fits the two arguments; welcome, takes_nothing and the odd
    # handler do not: each fails alone, with the TypeError of the call (nothing else).
    assert result.handled == 4
    assert handlers.calls == ["needs_plan"]
    failures = {failure.handler: failure.exception for failure in result.failures}
    odd_name = next(name for name in failures if "users.handlers" not in name)
    assert sorted(failures) == sorted(
        [
            "app.domains.users.handlers:welcome",
            "app.domains.users.handlers:takes_nothing",
            odd_name,
        ]
    )
    assert all(isinstance(exc, TypeError) for exc in failures.values()), failures
    log = strip_ansi(caplog.text)
    assert f"Handler {odd_name} failed on event 'user.created'" in log
    assert "too many positional arguments" in log
    assert "AttributeError" not in log


@pytest.mark.parametrize(
    ("bad_name", "error", "message"),
    [
        ("", ValueError, r"event name to emit must be a non-empty string.*got ''"),
        (123, TypeError, r"event name to emit must be a str, got int: 123"),
        (None, TypeError, r"event name to emit must be a str, got NoneType"),
    ],
)
async def test_emit_rejects_bad_event_names_clearly(
    app_dir: AppDir,
    eventbus_app_factory: Factory,
    bad_name: Any,
    error: type[Exception],
    message: str,
) -> None:
    app = eventbus_app_factory(app_dir({"users/handlers.py": MATCHING_SRC}))
    handlers = domain("users.handlers")
    async with running(app):
        bus = eventbus_api()
        with pytest.raises(error, match=message):
            await bus.emit(bad_name, {"id": 1})
        with pytest.raises(error, match=message):
            bus.emit_nowait(bad_name, {"id": 1})
        assert bus.pending == 0
    assert handlers.calls == []


# ---------------------------------------------------------------- chaining

CHAIN_SRC = """
    import threading

    from fastapi_opinionated_eventbus import OnInternalEvent, current_event, eventbus_api

    seen = []


    def _record(tag, *values):
        event = current_event()
        seen.append((tag, event.name, event.chain, threading.get_ident(), *values))


    @OnInternalEvent("order.placed")
    async def request_invoice(order_id):
        _record("request_invoice", order_id)
        await eventbus_api().emit("invoice.requested", order_id)


    @OnInternalEvent("invoice.requested")
    async def build_invoice(order_id):
        _record("build_invoice", order_id)
        await eventbus_api().emit("invoice.sent", order_id)


    @OnInternalEvent("invoice.sent")
    def archive_invoice(order_id):
        _record("archive_invoice", order_id)


    @OnInternalEvent("report.requested")
    def start_report(report_id):
        child = eventbus_api().emit_nowait("report.built", report_id, pages=3)
        _record("start_report", report_id, child.chain)


    @OnInternalEvent("report.built")
    async def report_built(report_id, pages):
        _record("report_built", report_id, pages)
"""


async def test_handler_emitting_another_event_records_the_chain(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    app = eventbus_app_factory(app_dir({"orders/handlers.py": CHAIN_SRC}))
    handlers = domain("orders.handlers")
    async with running(app):
        result = await eventbus_api().emit("order.placed", "o-7")

    assert result.ok and result.handled == 1
    chains = {tag: (name, chain, value) for tag, name, chain, _, value in handlers.seen}
    assert chains == {
        "request_invoice": ("order.placed", (), "o-7"),
        "build_invoice": ("invoice.requested", ("order.placed",), "o-7"),
        "archive_invoice": ("invoice.sent", ("order.placed", "invoice.requested"), "o-7"),
    }


async def test_sync_handler_in_a_thread_emits_nowait_and_drain_runs_the_child(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    app = eventbus_app_factory(app_dir({"reports/handlers.py": CHAIN_SRC}))
    handlers = domain("reports.handlers")
    loop_thread = threading.get_ident()
    async with running(app):
        bus = eventbus_api()
        result = await bus.emit("report.requested", "r-1")
        assert await bus.drain(5) == 0
        assert bus.pending == 0

    assert result.ok
    by_tag = {entry[0]: entry[1:] for entry in handlers.seen}
    assert set(by_tag) == {"start_report", "report_built"}
    name, chain, thread, report_id, child_chain = by_tag["start_report"]
    assert (name, chain, report_id) == ("report.requested", (), "r-1")
    assert thread != loop_thread
    assert child_chain == ("report.requested",)
    name, chain, thread, report_id, pages = by_tag["report_built"]
    assert (name, chain, report_id, pages) == ("report.built", ("report.requested",), "r-1", 3)
    assert thread == loop_thread  # the async child runs on the app's loop


# ---------------------------------------------------------------- load

LOAD_SRC = """
    from fastapi_opinionated.decorators.routing import Post

    from fastapi_opinionated_eventbus import OnInternalEvent, eventbus_api

    async_calls = []
    sync_calls = []


    @OnInternalEvent("hit")
    async def count_async(n):
        async_calls.append(n)


    @OnInternalEvent("hit")
    def count_sync(n):
        sync_calls.append(n)


    @Post("/hits/{n}")
    async def hit(n: int):
        result = await eventbus_api().emit("hit", n)
        return {"n": n, "handled": result.handled, "ok": result.ok}
"""


async def test_200_concurrent_requests_each_emitting_call_each_handler_exactly_200_times(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    app = eventbus_app_factory(app_dir({"load/handlers.py": LOAD_SRC}))
    handlers = domain("load.handlers")
    async with (
        running(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        responses = await asyncio.gather(*(client.post(f"/hits/{n}") for n in range(200)))

    assert [r.status_code for r in responses] == [200] * 200
    assert [r.json() for r in responses] == [{"n": n, "handled": 2, "ok": True} for n in range(200)]
    assert len(handlers.async_calls) == 200
    assert sorted(handlers.async_calls) == list(range(200))
    assert len(handlers.sync_calls) == 200
    assert sorted(handlers.sync_calls) == list(range(200))
