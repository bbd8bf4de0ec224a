"""``handlers``: the table and the JSON list of every subscription."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

Run = Callable[..., CompletedProcess[str]]


def test_json_lists_every_handler_with_its_options(
    cli: Run, shop_app: Path, line_of: Callable[[Path, str], int]
) -> None:
    result = cli(shop_app, "handlers", "--json")

    assert result.returncode == 0, result.stderr
    handlers = json.loads(result.stdout)  # the core's logs stay on stderr
    source = shop_app / "app/domains/shop/handlers.py"
    file = "app/domains/shop/handlers.py"
    module = "app.domains.shop.handlers"
    assert handlers == [
        {
            "event": "order.placed",
            "pattern": False,
            "handler": f"{module}:ship",
            "is_async": True,
            "file": file,
            # A decorated function's line is its (first) decorator's.
            "line": line_of(source, "OrderPlaced, priority=5") - 1,
            "priority": 5,
            "retry": {
                "max_attempts": 3,
                "initial_delay": 0.1,
                "backoff_factor": 2.0,
                "max_delay": 30.0,
                "jitter": 0.1,
            },
            "timeout": 2.5,
            "broadcast": True,
            "schema": f"{module}:OrderPlaced",
            "dependencies": [],
        },
        {
            "event": "user.created",
            "pattern": False,
            "handler": f"{module}:welcome",
            "is_async": True,
            "file": file,
            "line": line_of(source, '@OnInternalEvent("user.created")'),
            "priority": 0,
            "retry": None,
            "timeout": None,
            "broadcast": False,
            "schema": None,
            "dependencies": [],
        },
        {
            "event": "user.*",
            "pattern": True,
            "handler": f"{module}:audit_users",
            "is_async": False,
            "file": file,
            "line": line_of(source, '@OnInternalEvent("user.*")'),
            "priority": 0,
            "retry": None,
            "timeout": None,
            "broadcast": False,
            "schema": None,
            "dependencies": [],
        },
    ]


LONG_NAMES = """\
from fastapi_opinionated_eventbus import OnInternalEvent


@OnInternalEvent("user.created")
async def send_a_rather_long_welcome_notification_to_the_new_user(user: object) -> None:
    pass
"""


def test_table_names_every_subscription_and_fits_80_columns(cli: Run, shop_app: Path) -> None:
    long_module = shop_app / "app/domains/customer_notifications/user_lifecycle_handlers.py"
    long_module.parent.mkdir()
    long_module.write_text(LONG_NAMES)

    result = cli(shop_app, "handlers", COLUMNS="80")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    text = result.stdout
    for expected in (
        "order.placed",
        "user.created",
        "user.* (pattern)",
        "app.domains.shop.handlers:",
        "ship",
        "welcome",
        "audit_users",
        "app/domains/shop/handlers.py:",
    ):
        assert expected in text
    ship_row = next(line for line in lines if "async" in line and "yes" in line)
    assert ship_row.split()[-5:] == ["async", "5", "3x", "2.5s", "yes"]
    assert any(line.split()[-5:] == ["sync", "0", "-", "-", "-"] for line in lines)
    # Long names are cut over several lines of the first column: glue them back.
    first_column = lines[0].index("Mode")
    glued = "".join(line[:first_column].strip() for line in lines)
    assert (
        "app.domains.customer_notifications.user_lifecycle_handlers:"
        "send_a_rather_long_welcome_notification_to_the_new_user"
        "app/domains/customer_notifications/user_lifecycle_handlers.py:4"
    ) in glued
    assert "4 handler(s), 3 event name(s) or pattern(s)" in text


def test_wide_terminal_keeps_module_and_qualname_on_one_line(cli: Run, shop_app: Path) -> None:
    result = cli(shop_app, "handlers", COLUMNS="160")

    assert "app.domains.shop.handlers:audit_users" in result.stdout


def test_disabled_plugin_still_lists_but_warns_on_stderr(
    cli: Run, make_app: Callable[..., Path]
) -> None:
    root = make_app(
        {
            "a.py": "from fastapi_opinionated_eventbus import OnInternalEvent\n"
            '@OnInternalEvent("a.b")\nasync def h() -> None: ...\n'
        },
        enable=False,
    )

    result = cli(root, "handlers", "--json")

    assert result.returncode == 0
    assert [h["event"] for h in json.loads(result.stdout)] == ["a.b"]
    assert "fastapi-opinionated plugins enable" in result.stderr


def test_app_dir_option_runs_from_anywhere(cli: Run, shop_app: Path, tmp_path: Path) -> None:
    result = cli(tmp_path, "--app-dir", str(shop_app), "handlers", "--json")

    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)) == 3


WITH_DEPENDENCIES = """\
from typing import Annotated

from fastapi import Depends

from fastapi_opinionated_eventbus import EventEnvelope, OnInternalEvent


def get_settings() -> dict:
    return {}


async def get_session(settings: Annotated[dict, Depends(get_settings)]):
    yield "session"


@OnInternalEvent("invoice.sent")
def store_invoice_in_the_accounting_database(
    invoice: dict,
    session: Annotated[str, Depends(get_session)],
    settings: dict = Depends(get_settings, use_cache=False),
    event: EventEnvelope = None,
) -> None:
    pass
"""


def test_handlers_show_their_dependencies(cli: Run, make_app: Callable[..., Path]) -> None:
    root = make_app({"billing/handlers.py": WITH_DEPENDENCIES})
    module = "app.domains.billing.handlers"

    listed = cli(root, "handlers", "--json")
    table = cli(root, "handlers", COLUMNS="80")

    assert listed.returncode == 0, listed.stderr
    [handler] = json.loads(listed.stdout)
    settings = {
        "parameter": "settings",
        "dependency": f"{module}:get_settings",
        "kind": "sync",
        "use_cache": True,
        "dependencies": [],
    }
    assert handler["dependencies"] == [
        {
            "parameter": "session",
            "dependency": f"{module}:get_session",
            "kind": "async yield",
            "use_cache": True,
            "dependencies": [settings],
        },
        {**settings, "use_cache": False},
        {"parameter": "event", "dependency": "EventEnvelope", "kind": "event"},
    ]
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    first_column = lines[0].index("Mode")
    glued = "".join(line[:first_column].strip() for line in lines)
    assert (
        f"session=Depends({module}:get_session)"
        f"settings=Depends({module}:get_settings)"
        "event: EventEnvelope"
    ) in glued
