"""Run the console script in app directories written by the tests."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from support import free_port, write_app

BIN = Path(sys.executable).parent
CLI = BIN / "fastapi-opinionated-eventbus"
CORE_CLI = BIN / "fastapi-opinionated"
ANSI = re.compile(r"\x1b\[")

Run = Callable[..., subprocess.CompletedProcess[str]]

__all__ = ["write_app"]


def clean_env(**overrides: str) -> dict[str, str]:
    """The environment minus what would change the output or leak the app root onto
    sys.path (the CLI must do that itself)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("EVENTBUS_")
        and key
        not in {
            "PYTHONPATH",
            "NO_COLOR",
            "FORCE_COLOR",
            "COLUMNS",
            "TERM",
            "PYTHONDONTWRITEBYTECODE",
        }
    }
    env.update(overrides)
    return env


@pytest.fixture(scope="session")
def bytecode_cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A private bytecode cache shared by every CLI run: without one (the venv has no .pyc
    files and PYTHONDONTWRITEBYTECODE may be set) each run compiles FastAPI anew (~1 s)."""
    return str(tmp_path_factory.mktemp("pycache"))


def _runner(executable: Path, cache: str) -> Run:
    def run(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(executable), *args],
            cwd=cwd,
            env=clean_env(PYTHONPYCACHEPREFIX=cache, **env),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    return run


@pytest.fixture
def cli(bytecode_cache: str) -> Run:
    """``cli(cwd, "handlers", "--json", COLUMNS="80")`` runs the console script."""
    return _runner(CLI, bytecode_cache)


@pytest.fixture
def python(bytecode_cache: str) -> Run:
    """``python(cwd, "script.py", **env)`` with the venv's interpreter."""
    return _runner(Path(sys.executable), bytecode_cache)


@pytest.fixture
def core_cli(bytecode_cache: str) -> Run:
    """The core's ``fastapi-opinionated`` console script, run the same way."""
    return _runner(CORE_CLI, bytecode_cache)


@pytest.fixture
def make_app(tmp_path: Path) -> Callable[..., Path]:
    counter = iter(range(1_000_000))

    def make(domain_files: dict[str, str], *, enable: bool = True) -> Path:
        return write_app(tmp_path / f"app{next(counter)}", domain_files, enable=enable)

    return make


@pytest.fixture
def closed_redis_url() -> str:
    """A Redis URL with a password, on a port nothing listens on."""
    return f"redis://app:s3cr3t@127.0.0.1:{free_port()}/0"


HANDLERS = '''\
"""Handlers of the test app: exact, pattern and typed subscriptions, one with options."""
from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel

from fastapi_opinionated_eventbus import OnInternalEvent, RetryPolicy


class OrderPlaced(BaseModel):
    __event_name__: ClassVar[str] = "order.placed"
    order_id: int


@OnInternalEvent("user.created")
async def welcome(user: dict[str, Any]) -> None:
    pass


@OnInternalEvent("user.*")
def audit_users(*args: Any) -> None:
    pass


@OnInternalEvent(
    OrderPlaced, priority=5, retry=RetryPolicy(max_attempts=3), timeout=2.5, broadcast=True
)
async def ship(order: OrderPlaced) -> None:
    pass
'''

SERVICE = """\
from __future__ import annotations

from fastapi_opinionated_eventbus import eventbus_api

from .handlers import OrderPlaced


async def sign_up() -> None:
    await eventbus_api().emit("user.created", {"id": 1})


def place_order() -> None:
    bus = eventbus_api()
    bus.emit_nowait(OrderPlaced(order_id=1))
"""


@pytest.fixture
def shop_app(make_app: Callable[..., Path]) -> Path:
    """A clean app: everything emitted is subscribed, every exact subscription emitted."""
    return make_app({"shop/handlers.py": HANDLERS, "shop/service.py": SERVICE})


@pytest.fixture
def line_of() -> Callable[[Path, str], int]:
    """``line_of(path, text)``: the 1-based number of the first line containing ``text``."""

    def find(path: Path, text: str) -> int:
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if text in line:
                return number
        raise AssertionError(f"{text!r} not in {path}")

    return find
