"""Helpers shared by the test modules (import them as ``from support import ...``).

They live here, not in conftest.py: tests/cli has a conftest.py of its own, and two
modules named ``conftest`` cannot both be imported by name.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.resources
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from fastapi import FastAPI
from postgres_server import PostgresServer, installed

from fastapi_opinionated_eventbus.plugin import PLUGIN_PATH

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from fastapi_opinionated_eventbus import EventBus, EventEnvelope

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_APP = REPO_ROOT / "example_app"

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def strip_ansi(text: str) -> str:
    """The core's log formatter always colours its output."""
    return _ANSI.sub("", text)


def write_app(root: Path, domain_files: dict[str, str], *, enable: bool = True) -> Path:
    """Write a fastapi-opinionated app: ``app/domains/<path>`` files, the plugin enabled."""
    if enable:
        config = root / ".fastapi_opinionated"
        config.mkdir(parents=True, exist_ok=True)
        (config / "enabled_plugins.py").write_text(
            f'ENABLED_PLUGINS = [\n    "{PLUGIN_PATH}",\n]\n'
        )
    for relative, source in domain_files.items():
        path = root / "app" / "domains" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    return root


_USERS_HANDLERS = """
    from fastapi_opinionated_eventbus import OnInternalEvent


    @OnInternalEvent("user.created")
    async def welcome(user: dict) -> None:
        pass


    @OnInternalEvent("user.*")
    def audit(*args: object) -> None:
        pass
"""

_USERS_CONTROLLER = """
    from fastapi_opinionated.decorators.routing import Controller, Post

    from fastapi_opinionated_eventbus import eventbus_api


    @Controller("/users")
    class Users:
        @Post("/")
        async def create(self) -> dict:
            await eventbus_api().emit("user.created", {"id": 1})
            return {"ok": True}
"""

# A small app: two handlers of user.created (one by pattern), a route that emits it.
USERS_APP = {"users/handlers.py": _USERS_HANDLERS, "users/controller.py": _USERS_CONTROLLER}


AppDir = Callable[..., Path]
Factory = Callable[..., FastAPI]


def domain(module: str) -> ModuleType:
    """A module of the app under test, e.g. ``domain("orders.handlers")``."""
    return importlib.import_module(f"app.domains.{module}")


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app's lifespan running, and an httpx client calling it in-process."""
    from fastapi_opinionated_eventbus.testing import running

    transport = httpx.ASGITransport(app=app)
    async with running(app), httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        yield client


def free_port() -> int:
    """A TCP port nothing listens on now, on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def uvicorn(cwd: Path, *args: str, log: Path, env: dict[str, str]) -> Iterator[str]:
    """``python -m uvicorn ARGS`` run in ``cwd`` on a free 127.0.0.1 port, its output in
    ``log``; yields the base URL. Stopped with SIGTERM (killed after 30 s) on exit."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", *args, "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        server = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        if stop_process(server, timeout=30) not in (0, -signal.SIGTERM):
            print(log.read_text(errors="replace"))


def check_activity(source: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """The example's ``check_activity.py`` on a JSON-lines file, or ``-`` and ``stdin``."""
    return subprocess.run(
        [sys.executable, str(EXAMPLE_APP / "check_activity.py"), source],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


REDIS_SCRIPT = REPO_ROOT / "scripts" / "redis-server.sh"


class RedisServer:
    """A private redis-server, driven through scripts/redis-server.sh."""

    def __init__(self, directory: Path, *, appendonly: bool = False, password: str = "") -> None:
        self.port = free_port()
        self.directory = directory
        self.appendonly = appendonly
        self.password = password

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def url_with_password(self, password: str) -> str:
        return f"redis://:{password}@127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = ["--appendonly"] if self.appendonly else []
        if self.password:
            args += ["--requirepass", self.password]
        subprocess.run(
            ["bash", str(REDIS_SCRIPT), "start", str(self.port), str(self.directory), *args],
            check=True,
            capture_output=True,
            timeout=30,
        )

    def stop(self) -> None:
        subprocess.run(
            ["bash", str(REDIS_SCRIPT), "stop", str(self.port), str(self.directory)],
            check=True,
            capture_output=True,
            timeout=30,
        )


def service_missing(message: str) -> None:
    """Skip a test whose service is not there, loudly; on CI (``CI`` set) fail instead."""
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def no_redis(reason: str) -> None:
    """Skip a test that needs Redis, loudly; on CI (``CI`` set) fail instead."""
    service_missing(
        f"REDIS TESTS NOT RUN: {reason}. Install redis-server (apt-get install -y "
        "redis-server) or set EVENTBUS_TEST_REDIS_URL=redis://host:port/db."
    )


@dataclass(frozen=True)
class Postgres:
    """One PostgreSQL database, as URLs for the async and the sync driver."""

    async_url: str
    sync_url: str
    password: str


def no_postgres(reason: str) -> None:
    """Skip a test that needs PostgreSQL, loudly; on CI (``CI`` set) fail instead."""
    service_missing(
        f"POSTGRESQL TESTS NOT RUN: {reason}. Install PostgreSQL (apt-get install -y "
        "postgresql) or set EVENTBUS_TEST_POSTGRES_URL=postgresql://user:pw@host:port/db."
    )


def start_postgres() -> PostgresServer:
    """A started private cluster, or a loud skip (a failure on CI) saying why not."""
    if not installed():
        no_postgres(
            "no PostgreSQL under /usr/lib/postgresql and EVENTBUS_TEST_POSTGRES_URL is not set"
        )
    server = PostgresServer()
    try:
        server.start()
    except Exception as exc:
        server.cleanup()
        no_postgres(f"a private PostgreSQL cluster did not start: {exc}")
    return server


async def eventually(
    check: Callable[[], Awaitable[Any]], *, timeout: float = 30.0, what: str = "condition"
) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


# What anyone who can write to the broker may put in an event's identity, to forge a log
# line or hide in one (6b item 7): (name, event id, correlation id) by case. The codec's
# body around them is a valid one.
FORGED = "ERROR [EventBus] forged"
HOSTILE_IDENTITIES: dict[str, tuple[str, str, str | None]] = {
    "name-with-spaces": (" note ", "e-1", None),
    "name-with-newline": (f"note\n{FORGED} by a name", "e-1", None),
    "name-with-escape": ("note\x1b[2J", "e-1", None),
    "id-with-newline": ("note", f"e-1\n{FORGED} by an id", None),
    "cid-with-newline": ("note", "e-1", f"c-1\n{FORGED} by a correlation id"),
}


def hostile_body(cid: str | None) -> bytes:
    """A codec body as a foreign producer may write it, carrying ``cid``."""
    body = {"v": 1, "args": [], "kwargs": {}, "at": 1.0, "chain": [], "trace": {}, "cid": cid}
    return json.dumps(body).encode()


def assert_nothing_forged(caplog: pytest.LogCaptureFixture) -> None:
    """No log line starts anew with a forged message or carries a terminal escape."""
    for record in caplog.records:
        message = record.getMessage()
        assert f"\n{FORGED}" not in message, message
        assert "\x1b[2J" not in message, message


async def commit_three_and_roll_one_back(
    bus: EventBus, engine: AsyncEngine
) -> tuple[list[EventEnvelope], EventEnvelope]:
    """Through ``bus``'s outbox: three ``job`` events committed in one transaction, then
    one in a transaction rolled back. Returns the committed envelopes and the other one."""
    from sqlalchemy.ext.asyncio import AsyncSession

    async with AsyncSession(engine) as session, session.begin():
        committed = [await bus.outbox(session).emit("job", {"n": n}) for n in range(3)]
    try:
        async with AsyncSession(engine) as session, session.begin():
            rolled_back = await bus.outbox(session).emit("job", {"n": 99})
            raise LookupError("roll back")
    except LookupError:
        pass
    return committed, rolled_back


async def close_while_a_handler_ignores_cancellation(
    bus: EventBus, *, started_within: float = 20.0
) -> None:
    """Start ``bus`` (shutdown_timeout short) with a handler that swallows every
    CancelledError, emit to it, and check that aclose() returns all the same: bounded by
    the shutdown timeout, the backend's floor and the unwinding."""
    started = asyncio.Event()
    released = False

    async def stubborn() -> None:
        started.set()
        while not released:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                continue

    bus.subscribe("job", stubborn)
    await bus.start()
    await bus.emit("job")
    await asyncio.wait_for(started.wait(), started_within)
    try:
        await asyncio.wait_for(bus.aclose(), 15)
    finally:
        released = True
    await asyncio.sleep(0.05)  # the handler ends, before the test's loop closes


def spawn_worker(script: Path, config: dict[str, Any], log: Path) -> subprocess.Popen[bytes]:
    """Start ``python script '<config as JSON>'`` from the repository root, its output
    appended to ``log``: the worker processes of the Redis, Kafka and outbox tests."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, str(script), json.dumps(config)],
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 20.0) -> int | None:
    """SIGTERM and wait (SIGKILL after ``timeout``); returns the exit code."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    return proc.returncode


# ---------------------------------------------------------------------- uvicorn
@contextmanager
def two_uvicorn_workers(root: Path, log: Path, env: dict[str, str]) -> Iterator[str]:
    """``uvicorn main:app --workers 2`` in ``root`` with ``env`` added (the EVENTBUS_*
    variables of a broker backend), on a free port; yields its base URL."""
    full_env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), str(REPO_ROOT)]),
        **env,
    }
    with uvicorn(root, "main:app", "--workers", "2", log=log, env=full_env) as url:
        yield url


async def wait_until_serving(client: httpx.AsyncClient) -> None:
    async def up() -> bool:
        try:
            return (await client.get("/openapi.json")).status_code == 200
        except httpx.TransportError:
            return False

    await eventually(up, timeout=60, what="uvicorn to serve")
