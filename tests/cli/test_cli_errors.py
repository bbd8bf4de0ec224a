"""Usage problems: one line on stderr, exit code 2, never a traceback; colours and width."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import pytest

Run = Callable[..., CompletedProcess[str]]
ANSI = re.compile(r"\x1b\[")


def assert_usage_error(result: CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in result.stderr


def test_malformed_json_payload(cli: Run, shop_app: Path) -> None:
    result = cli(shop_app, "emit", "user.created", "--json", '{"id": 1')

    assert_usage_error(result, "--json is not valid JSON", "line 1, column 9")


@pytest.mark.parametrize("command", [["handlers"], ["emit", "x"]])
def test_not_an_app_directory(cli: Run, tmp_path: Path, command: list[str]) -> None:
    result = cli(tmp_path, *command)

    assert_usage_error(result, "is not a fastapi-opinionated app directory", "app/domains")


def test_emit_needs_the_plugin_enabled(cli: Run, make_app: Callable[..., Path]) -> None:
    root = make_app({"a.py": "X = 1\n"}, enable=False)

    result = cli(root, "emit", "x")

    assert_usage_error(
        result,
        "fastapi-opinionated plugins enable fastapi_opinionated_eventbus.plugin.EventBusPlugin",
    )


DEAD_LETTERS_IN_APP = (
    "the local backend keeps dead letters in the memory of the app's process, out of this "
    "command's reach: read them in the app with `await eventbus_api().dead_letters()`"
)


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["dead-letters", "list"], DEAD_LETTERS_IN_APP),
        (["dead-letters", "replay"], DEAD_LETTERS_IN_APP),
        (["dead-letters", "purge", "--yes"], DEAD_LETTERS_IN_APP),
        (["dead-letters", "list"], "the introspection endpoint shows only their count"),
        (
            ["stats"],
            "the local backend keeps its counters in the memory of the app's process, out of "
            "this command's reach: read them in the app with `await eventbus_api().health()`",
        ),
    ],
)
def test_broker_commands_with_the_local_backend(
    cli: Run, shop_app: Path, command: list[str], message: str
) -> None:
    assert_usage_error(cli(shop_app, *command), message)


def test_unreachable_redis(cli: Run, shop_app: Path, closed_redis_url: str) -> None:
    result = cli(shop_app, "stats", EVENTBUS_BACKEND="redis", EVENTBUS_REDIS_URL=closed_redis_url)

    assert_usage_error(
        result,
        "cannot connect to the redis backend: BackendUnavailable: Cannot reach Redis at "
        "redis://app:***@127.0.0.1:",
        "gave up after connect_timeout=3.0s",
    )
    assert "s3cr3t" not in result.stderr


def test_invalid_setting_in_the_environment(cli: Run, shop_app: Path) -> None:
    result = cli(shop_app, "emit", "x", EVENTBUS_BACKEND="carrier-pigeon")

    assert_usage_error(result, "EVENTBUS_BACKEND")


def test_no_color_means_no_escape_codes(cli: Run, make_app: Callable[..., Path]) -> None:
    # Disabled plugin: the output includes a warning on stderr too.
    root = make_app(
        {
            "a.py": "from fastapi_opinionated_eventbus import OnInternalEvent\n"
            '@OnInternalEvent("a.b")\nasync def h() -> None: ...\n'
        },
        enable=False,
    )
    coloured = cli(root, "handlers", FORCE_COLOR="1")
    plain = cli(root, "handlers", FORCE_COLOR="1", NO_COLOR="1")

    assert ANSI.search(coloured.stdout)  # the check below can fail
    assert "a.b" in plain.stdout
    assert not ANSI.search(plain.stdout + plain.stderr)
