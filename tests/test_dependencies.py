"""FastAPI ``Depends`` in handlers, through the real core: sync and async dependencies, a
sub-dependency tree with a shared dependency called once per run, ``yield`` teardowns
after success and failure, overrides, the EventEnvelope, retries, timeouts, and every
dispatch path (awaited, background, after response, replay)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Annotated, Any

import pytest
from fastapi import Depends
from support import AppDir, Factory, domain, serving, strip_ansi

from fastapi_opinionated_eventbus import (
    EventEnvelope,
    HandlerTimeout,
    RetryPolicy,
    current_event,
    eventbus_api,
)
from fastapi_opinionated_eventbus.testing import running, started_bus

# ---------------------------------------------------------------- a tree, sync and async

TREE_DEPS = """
    from __future__ import annotations

    import threading
    from typing import Annotated

    from fastapi import Depends

    calls = []


    def thread() -> str:
        return threading.current_thread().name


    def get_settings() -> dict:  # sync: runs in a worker thread
        calls.append(("get_settings", thread()))
        return {"dsn": "sqlite://shop"}


    async def get_connection(settings: Annotated[dict, Depends(get_settings)]) -> str:
        calls.append(("get_connection", thread()))
        return "connection to " + settings["dsn"]


    class Repo:  # a class: its __init__'s parameters are dependencies too
        def __init__(
            self,
            connection: Annotated[str, Depends(get_connection)],
            settings: dict = Depends(get_settings),
        ) -> None:
            calls.append(("Repo", thread()))
            self.connection = connection
            self.settings = settings


    def get_counter() -> int:
        calls.append(("get_counter", thread()))
        return len([c for c in calls if c[0] == "get_counter"])
"""

TREE_HANDLERS = """
    from __future__ import annotations

    import threading
    from typing import Annotated

    from fastapi import Depends

    from app.domains.shop.deps import Repo, get_counter, get_settings
    from fastapi_opinionated_eventbus import OnInternalEvent

    handled = []


    @OnInternalEvent("order.placed")
    async def record(
        order: dict,
        repo: Annotated[Repo, Depends()],
        settings: dict = Depends(get_settings),
        first: int = Depends(get_counter, use_cache=False),
        second: int = Depends(get_counter, use_cache=False),
    ) -> None:
        handled.append(
            ("record", order["id"], repo.connection, repo.settings is settings,
             first != second, threading.current_thread().name)
        )


    @OnInternalEvent("order.placed")
    def bill(order: dict, repo: Annotated[Repo, Depends(Repo)]) -> None:
        handled.append(("bill", order["id"], repo.connection, threading.current_thread().name))
"""


def names(calls: list[tuple[str, str]], name: str) -> list[str]:
    return [thread for called, thread in calls if called == name]


async def test_a_tree_of_sync_and_async_dependencies_each_called_once_per_run(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    app = eventbus_app_factory(
        app_dir({"shop/deps.py": TREE_DEPS, "shop/handlers.py": TREE_HANDLERS})
    )
    deps, handlers = domain("shop.deps"), domain("shop.handlers")
    async with running(app):
        result = await eventbus_api().emit("order.placed", {"id": 7})

    assert result.ok and result.handled == 2
    loop_thread = threading.main_thread().name
    record = next(h for h in handlers.handled if h[0] == "record")
    bill = next(h for h in handlers.handled if h[0] == "bill")
    # The shared get_settings gave `record` and its Repo the same object; the two
    # use_cache=False parameters got two calls.
    assert record == ("record", 7, "connection to sqlite://shop", True, True, loop_thread)
    assert bill[:3] == ("bill", 7, "connection to sqlite://shop")
    assert bill[3].startswith("eventbus"), "a sync handler runs in a worker thread"
    calls = deps.calls
    # Three levels (Repo -> get_connection -> get_settings), get_settings also named by
    # Repo and by `record` itself: once per handler run, two runs.
    assert len(names(calls, "get_settings")) == 2
    assert len(names(calls, "get_connection")) == 2
    assert len(names(calls, "Repo")) == 2
    # use_cache=False: called for each parameter that names it.
    assert len(names(calls, "get_counter")) == 2
    # Sync dependencies (and classes) off the loop, async ones on it.
    off_loop = names(calls, "get_settings") + names(calls, "Repo")
    assert all(thread.startswith("eventbus") for thread in off_loop)
    assert names(calls, "get_connection") == [loop_thread, loop_thread]


async def test_each_run_resolves_its_dependencies_again() -> None:
    made: list[int] = []

    async def get_token() -> int:
        made.append(len(made) + 1)
        return made[-1]

    seen: list[int] = []

    async def handler(token: int = Depends(get_token)) -> None:
        seen.append(token)

    async with started_bus() as bus:
        sub = bus.subscribe("tick", handler)
        assert sub.injection is not None and not sub.plain
        await bus.emit("tick")
        await bus.emit("tick")
    assert seen == [1, 2]


async def test_handlers_without_dependencies_stay_plain() -> None:
    async def plain(user: dict[str, Any]) -> None:
        pass

    async def annotated_only(user: Annotated[dict[str, Any], "a note"]) -> None:
        pass

    async with started_bus() as bus:
        for handler in (plain, annotated_only):
            sub = bus.subscribe("x", handler)
            assert sub.injection is None and sub.plain


# ---------------------------------------------------------------- yield dependencies

YIELD_HANDLERS = """
    import threading
    from typing import Annotated

    from fastapi import Depends

    from fastapi_opinionated_eventbus import OnInternalEvent

    log = []
    failing = set()


    def where() -> str:
        return "worker" if threading.current_thread().name.startswith("eventbus") else "loop"


    async def get_transaction():
        log.append("begin")
        try:
            yield "tx"
        except Exception as exc:
            log.append(f"rollback ({type(exc).__name__}: {exc})")
            raise
        else:
            log.append("commit")
        finally:
            log.append("transaction closed")


    def get_file(tx: Annotated[str, Depends(get_transaction)]):
        log.append(f"open file in {tx} ({where()})")
        try:
            yield "file"
        except Exception as exc:
            log.append(f"file saw {type(exc).__name__}")
            raise
        finally:
            log.append(f"close file ({where()})")


    @OnInternalEvent("report.build")
    async def build(name, f: Annotated[str, Depends(get_file)], tx=Depends(get_transaction)):
        log.append(f"build {name} with {f} and {tx}")
        if name in failing:
            raise ValueError(f"cannot build {name}")


    @OnInternalEvent("report.print")
    def print_report(name, f: Annotated[str, Depends(get_file)]):
        log.append(f"print {name} with {f} ({where()})")
        if name in failing:
            raise OSError(f"printer jammed on {name}")
"""


async def test_yield_dependencies_are_torn_down_after_the_handler_in_reverse_order(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    app = eventbus_app_factory(app_dir({"reports/handlers.py": YIELD_HANDLERS}))
    handlers = domain("reports.handlers")
    async with running(app):
        bus = eventbus_api()
        ok = await bus.emit("report.build", "r1")
        after_success = list(handlers.log)
        handlers.log.clear()
        handlers.failing.add("r2")
        failed = await bus.emit("report.build", "r2")
        after_failure = list(handlers.log)
        handlers.log.clear()
        handlers.failing.add("r3")
        failed_sync = await bus.emit("report.print", "r3")
        after_sync_failure = list(handlers.log)
        letters = await bus.dead_letters()

    assert ok.ok
    assert after_success == [
        "begin",
        "open file in tx (worker)",
        "build r1 with file and tx",
        "close file (worker)",
        "commit",
        "transaction closed",
    ]
    [failure] = failed.failures
    assert isinstance(failure.exception, ValueError)
    assert after_failure == [
        "begin",
        "open file in tx (worker)",
        "build r2 with file and tx",
        "file saw ValueError",  # the handler's exception, thrown in at the yield
        "close file (worker)",
        "rollback (ValueError: cannot build r2)",
        "transaction closed",
    ]
    [sync_failure] = failed_sync.failures
    assert isinstance(sync_failure.exception, OSError)
    assert after_sync_failure == [
        "begin",
        "open file in tx (worker)",
        "print r3 with file (worker)",
        "file saw OSError",
        "close file (worker)",
        "rollback (OSError: printer jammed on r3)",
        "transaction closed",
    ]
    assert [letter.exception_type for letter in letters] == ["ValueError", "OSError"]


async def test_a_teardown_that_swallows_the_exception_does_not_hide_the_failure() -> None:
    async def forgiving() -> Any:
        with contextlib.suppress(ValueError):  # swallowed: the handler still failed
            yield "resource"

    async def handler(resource: str = Depends(forgiving)) -> None:
        raise ValueError("broken")

    async with started_bus() as bus:
        bus.subscribe("x", handler)
        result = await bus.emit("x")
    [failure] = result.failures
    assert isinstance(failure.exception, ValueError)


async def test_a_teardown_that_raises_is_the_failure_and_names_its_dependency(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def leaky() -> Any:
        yield "resource"
        raise RuntimeError("could not release the resource")

    async def handler(resource: str = Depends(leaky)) -> None:
        pass

    async with started_bus() as bus:
        bus.subscribe("x", handler)
        result = await bus.emit("x")
    [failure] = result.failures
    assert str(failure.exception) == "could not release the resource"
    assert "(raised by the teardown of dependency test_dependencies:" in strip_ansi(caplog.text)


# ---------------------------------------------------------------- overrides, envelope

MAIL_HANDLERS = """
    from typing import Annotated

    from fastapi import Depends
    from fastapi_opinionated.decorators.routing import Controller, Get

    from fastapi_opinionated_eventbus import EventEnvelope, OnInternalEvent, eventbus_api

    sent = []


    def get_smtp_host() -> str:
        return "smtp.example.com"


    async def get_mailer(host: Annotated[str, Depends(get_smtp_host)]) -> str:
        return f"mailer via {host}"


    def get_tenant(event: EventEnvelope) -> str:
        # The tenant is the part of the correlation id before its first dot.
        return event.correlation_id.split(".")[0]


    @OnInternalEvent("user.created")
    async def welcome(
        user: str,
        mailer: Annotated[str, Depends(get_mailer)],
        tenant: Annotated[str, Depends(get_tenant)],
        event: EventEnvelope,
    ) -> None:
        sent.append((user, mailer, tenant, event.id))


    @Controller("/users")
    class Users:
        @Get("/mailer")
        async def mailer(self, mailer: Annotated[str, Depends(get_mailer)]) -> dict:
            return {"mailer": mailer}

        @Get("/signup/{name}")
        async def signup(self, name: str) -> dict:
            result = await eventbus_api().emit("user.created", name)
            return {"event_id": result.event_id}
"""


async def test_app_dependency_overrides_serve_handlers_and_routes_alike(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    app = eventbus_app_factory(app_dir({"users/handlers.py": MAIL_HANDLERS}))
    users = domain("users.handlers")
    async with serving(app) as client:
        bus = eventbus_api()
        await bus.emit("user.created", "ann")
        # Set after startup, as tests do: read on every run.
        app.dependency_overrides[users.get_mailer] = lambda: "fake mailer"
        await bus.emit("user.created", "bob")
        route = (await client.get("/users/mailer")).json()
        # Overriding a sub-dependency reaches it through the real parent.
        app.dependency_overrides = {users.get_smtp_host: lambda: "localhost"}
        await bus.emit("user.created", "cid")
        app.dependency_overrides.clear()
        await bus.emit("user.created", "dan")

    mailers = [(user, mailer) for user, mailer, _, _ in users.sent]
    assert mailers == [
        ("ann", "mailer via smtp.example.com"),
        ("bob", "fake mailer"),
        ("cid", "mailer via localhost"),
        ("dan", "mailer via smtp.example.com"),
    ]
    assert route == {"mailer": "fake mailer"}


async def test_a_dependency_derives_the_tenant_from_the_events_correlation_id(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    app = eventbus_app_factory(app_dir({"users/handlers.py": MAIL_HANDLERS}))
    users = domain("users.handlers")
    async with serving(app) as client:
        response = await client.get("/users/signup/eve", headers={"X-Correlation-ID": "acme.r-1"})
    assert response.status_code == 200, response.text
    [(user, _, tenant, event_id)] = users.sent
    assert (user, tenant, event_id) == ("eve", "acme", response.json()["event_id"])


async def test_a_standalone_bus_has_overrides_of_its_own() -> None:
    def get_clock() -> str:
        return "real clock"

    seen: list[str] = []

    async def handler(clock: str = Depends(get_clock)) -> None:
        seen.append(clock)

    async with started_bus() as bus:
        bus.subscribe("x", handler)
        bus.dependency_overrides[get_clock] = lambda: "frozen clock"
        await bus.emit("x")
        bus.dependency_overrides.clear()
        await bus.emit("x")
    assert seen == ["frozen clock", "real clock"]


# ---------------------------------------------------------------- failures, retries, replay

FLAKY_HANDLERS = """
    from typing import Annotated

    from fastapi import Depends

    from fastapi_opinionated_eventbus import EventEnvelope, OnInternalEvent, RetryPolicy

    TWICE = RetryPolicy(max_attempts=2, initial_delay=0.01, jitter=0)
    THRICE = RetryPolicy(max_attempts=3, initial_delay=0.01, jitter=0)
    database_up = False
    resolved = []
    closed = []
    calls = []


    async def get_db(event: EventEnvelope):
        resolved.append(event.attempt)
        if not database_up:
            raise ConnectionError(f"database down (attempt {event.attempt})")
        yield "db"


    async def get_session(event: EventEnvelope):
        resolved.append(("session", event.attempt))
        try:
            yield f"session {event.attempt}"
        finally:
            closed.append(event.attempt)


    @OnInternalEvent("invoice.sent", retry=TWICE)
    async def store(invoice: str, db: Annotated[str, Depends(get_db)]) -> None:
        calls.append(("store", invoice, db))


    @OnInternalEvent("invoice.sent")
    async def unaffected(invoice: str) -> None:
        calls.append(("unaffected", invoice))


    @OnInternalEvent("invoice.paid", retry=THRICE)
    async def settle(invoice: str, session: Annotated[str, Depends(get_session)]) -> None:
        calls.append(("settle", invoice, session))
        if session != "session 3":
            raise RuntimeError(f"settlement refused with {session}")
"""


async def test_a_retried_handler_resolves_its_dependencies_for_each_attempt(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    app = eventbus_app_factory(app_dir({"billing/handlers.py": FLAKY_HANDLERS}))
    billing = domain("billing.handlers")
    async with running(app):
        result = await eventbus_api().emit("invoice.paid", "inv-1")
    assert result.ok
    assert billing.resolved == [("session", 1), ("session", 2), ("session", 3)]
    assert billing.closed == [1, 2, 3]  # each attempt's session torn down
    assert [call[2] for call in billing.calls] == ["session 1", "session 2", "session 3"]


async def test_a_failing_dependency_is_the_handlers_failure_retried_dead_lettered_replayed(
    app_dir: AppDir, eventbus_app_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    app = eventbus_app_factory(app_dir({"billing/handlers.py": FLAKY_HANDLERS}))
    billing: Any = domain("billing.handlers")  # the app's module: its names unknown to mypy
    async with running(app):
        bus = eventbus_api()
        result = await bus.emit("invoice.sent", "inv-2")
        letters = await bus.dead_letters()
        billing.database_up = True
        replayed = await bus.replay_dead_letters()
        left = await bus.dead_letters()

    [failure] = result.failures  # `unaffected` ran: the failure is isolated
    assert failure.handler == "app.domains.billing.handlers:store"
    assert isinstance(failure.exception, ConnectionError)
    assert failure.attempts == 2
    assert billing.calls == [("unaffected", "inv-2"), ("store", "inv-2", "db")]
    [letter] = letters
    assert letter.exception_type == "ConnectionError"
    assert replayed.handled == 1 and replayed.ok and left == []
    assert billing.resolved == [1, 2, 1]  # two attempts, then the replay resolved it anew
    log = strip_ansi(caplog.text)
    dependency = "app.domains.billing.handlers:get_db"
    assert (
        "(attempt 1/2): ConnectionError: database down (attempt 1) "
        f"(raised by dependency {dependency}); retrying" in log
    )
    assert (
        f"after 2 attempt(s): ConnectionError: database down (attempt 2) "
        f"(raised by dependency {dependency})." in log
    )


async def test_a_timeout_covers_resolution_and_the_teardown_sees_it() -> None:
    log: list[str] = []

    async def get_lock() -> Any:
        log.append("locked")
        try:
            yield "lock"
        except HandlerTimeout:
            log.append("released after the timeout")
            raise

    async def get_slow_client(lock: str = Depends(get_lock)) -> str:
        import asyncio

        await asyncio.sleep(30)
        return "client"

    async def handler(client: str = Depends(get_slow_client)) -> None:
        log.append("handler ran")

    async with started_bus() as bus:
        bus.subscribe("x", handler, timeout=0.05)
        result = await bus.emit("x")
    [failure] = result.failures
    assert isinstance(failure.exception, HandlerTimeout)
    assert log == ["locked", "released after the timeout"]


# ---------------------------------------------------------------- background, after response

BACKGROUND_HANDLERS = """
    from typing import Annotated

    from fastapi import Depends
    from fastapi_opinionated.decorators.routing import Controller, Post

    from fastapi_opinionated_eventbus import EventEnvelope, OnInternalEvent, eventbus_api

    handled = []
    torn_down = []


    async def get_audit_log(event: EventEnvelope):
        yield f"audit log of {event.name}"
        torn_down.append(event.id)


    def get_clock() -> str:
        return "12:00"


    @OnInternalEvent("order.*")
    async def audit(order_id: int, log: Annotated[str, Depends(get_audit_log)]) -> None:
        handled.append(("audit", order_id, log))


    @OnInternalEvent("order.*")
    def stamp(order_id: int, clock: Annotated[str, Depends(get_clock)]) -> None:
        handled.append(("stamp", order_id, clock))


    @Controller("/orders")
    class Orders:
        @Post("/{order_id}")
        async def place(self, order_id: int) -> dict:
            event = eventbus_api().emit_after_response("order.confirmed", order_id)
            handled.append(("response sent?", order_id, len(handled)))
            return {"event_id": event.id}
"""


async def test_dependencies_in_background_and_after_response_events(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    app = eventbus_app_factory(app_dir({"orders/handlers.py": BACKGROUND_HANDLERS}))
    orders = domain("orders.handlers")
    async with serving(app) as client:
        bus = eventbus_api()
        background = bus.emit_nowait("order.queued", 1)
        assert await bus.drain(5) == 0
        response = await client.post("/orders/2")
        assert await bus.drain(5) == 0
    assert response.status_code == 200
    assert sorted(orders.handled[:2]) == [
        ("audit", 1, "audit log of order.queued"),
        ("stamp", 1, "12:00"),
    ]
    assert orders.handled[2] == ("response sent?", 2, 2)  # nothing ran before the response
    assert sorted(orders.handled[3:]) == [
        ("audit", 2, "audit log of order.confirmed"),
        ("stamp", 2, "12:00"),
    ]
    assert orders.torn_down == [background.id, response.json()["event_id"]]


# ---------------------------------------------------------------- what the emit must fill

TYPED_HANDLERS = """
    from typing import Annotated

    from fastapi import Depends

    from fastapi_opinionated_eventbus import OnInternalEvent, TypedEvent

    received = []


    class UserCreated(TypedEvent):
        __event_name__ = "user.created"
        id: int


    class Repo:
        def save(self, item):
            received.append(item)


    @OnInternalEvent(UserCreated)
    async def save_user(event: UserCreated, repo: Annotated[Repo, Depends(Repo)]) -> None:
        repo.save(("typed", event.id))


    @OnInternalEvent("user.renamed")
    async def rename(repo: Annotated[Repo, Depends(Repo)], user_id: int, *, name: str) -> None:
        repo.save(("renamed", user_id, name))
"""


async def test_typed_events_and_injected_parameters_before_emitted_ones(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    app = eventbus_app_factory(app_dir({"users/handlers.py": TYPED_HANDLERS}))
    users = domain("users.handlers")
    async with running(app):
        bus = eventbus_api()
        typed = await bus.emit(users.UserCreated(id=3))
        renamed = await bus.emit("user.renamed", 3, name="Jo")
    assert typed.ok and renamed.ok
    assert users.received == [("typed", 3), ("renamed", 3, "Jo")]


async def test_a_mismatch_names_the_parameters_the_emit_must_fill(
    app_dir: AppDir, eventbus_app_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    app = eventbus_app_factory(app_dir({"users/handlers.py": TYPED_HANDLERS}))
    async with running(app):
        bus = eventbus_api()
        missing = await bus.emit("user.renamed", name="Jo")
        clash = await bus.emit("user.renamed", 3, name="Jo", repo="mine")
        too_many = await bus.emit("user.renamed", 3, 4, name="Jo")
    for result in (missing, clash, too_many):
        [failure] = result.failures
        assert isinstance(failure.exception, TypeError)
    assert "'repo' have the name of dependency parameter(s)" in str(clash.failures[0].exception)
    log = strip_ansi(caplog.text)
    signature = "rename(user_id: int, *, name: str) -> None (injected: repo)"
    assert f"do not match the handler's signature {signature}: missing a required" in log
    assert f"{signature}: got an unexpected keyword argument 'repo'" in log
    assert f"{signature}: too many positional arguments" in log


# ---------------------------------------------------------------- the current event


async def test_current_event_and_the_injected_envelope_agree_in_sync_dependencies() -> None:
    seen: list[tuple[str, str, int]] = []

    def get_event_id(event: EventEnvelope) -> str:
        return f"{event.id}/{current_event().id}"

    def handler(marker: str = Depends(get_event_id)) -> None:
        event = current_event()
        seen.append((marker, event.id, event.attempt))

    async with started_bus() as bus:
        bus.subscribe("x", handler, retry=RetryPolicy(max_attempts=1))
        result = await bus.emit("x")
    assert result.event is not None
    event_id = result.event.id
    assert seen == [(f"{event_id}/{event_id}", event_id, 1)]


def get_name() -> str:
    return "repo"


async def test_emitted_arguments_reach_their_parameters_around_injected_ones() -> None:
    seen: list[tuple[str, str, str, str]] = []

    async def handler(
        first: str, /, repo: Annotated[str, Depends(get_name)], second: str, third: str = "c"
    ) -> None:
        seen.append((first, repo, second, third))

    async with started_bus() as bus:
        sub = bus.subscribe("x", handler)
        await bus.emit("x", "a", "b")
        await bus.emit("x", "a", "b", "d")
        too_many = await bus.emit("x", "a", "b", "d", "e")
    assert sub.injection is not None and sub.injection.positional == ("second", "third")
    assert seen == [("a", "repo", "b", "c"), ("a", "repo", "b", "d")]
    [failure] = too_many.failures
    assert "takes 3 emitted positional argument(s) but 4 were emitted" in str(failure.exception)


async def test_an_abandoned_sync_handlers_dependencies_are_torn_down_once_it_returns() -> None:
    release = threading.Event()
    log: list[str] = []

    def get_connection() -> Any:
        log.append("open")
        try:
            yield "connection"
        except HandlerTimeout:
            log.append("close after the timeout")
            raise

    def handler(connection: str = Depends(get_connection)) -> None:
        release.wait(10)
        log.append(f"handler done with {connection}")

    async with started_bus() as bus:
        bus.subscribe("x", handler, timeout=0.05)
        result = await bus.emit("x")
        [failure] = result.failures
        assert isinstance(failure.exception, HandlerTimeout)
        assert log == ["open"]  # the abandoned thread still uses the connection
        assert bus.abandoned_threads == 1
        release.set()
        async with asyncio.timeout(5):  # the late teardown, once the thread returned
            while True:
                if len(log) == 3:
                    break
                await asyncio.sleep(0.005)
    assert log == ["open", "handler done with connection", "close after the timeout"]
