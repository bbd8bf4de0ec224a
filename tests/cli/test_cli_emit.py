"""``emit``: run the app's handlers from the command line."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import pytest

Run = Callable[..., CompletedProcess[str]]

RECORDING = """\
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi_opinionated_eventbus import OnInternalEvent, eventbus_api


@OnInternalEvent("user.created")
async def write_async(*args: Any) -> None:
    Path("async.json").write_text(json.dumps(list(args)))
    # Handlers reach the bus the usual way, even when run by the CLI.
    await eventbus_api().emit("user.welcomed", args[0])


@OnInternalEvent("user.created")
def write_sync(*args: Any) -> None:
    Path("sync.json").write_text(json.dumps(list(args)))


@OnInternalEvent("user.welcomed")
async def welcomed(user: Any) -> None:
    Path("welcomed.json").write_text(json.dumps(user))


@OnInternalEvent("user.broken")
async def broken(*args: Any) -> None:
    raise ValueError("no luck")
"""


@pytest.fixture
def recording_app(make_app: Callable[..., Path]) -> Path:
    return make_app({"users/handlers.py": RECORDING})


def test_object_payload_is_one_dict_argument(cli: Run, recording_app: Path) -> None:
    result = cli(recording_app, "emit", "user.created", "--json", '{"id": 1}')

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("user.created: 2 handler(s) ran, 0 failed (event id ")
    assert json.loads((recording_app / "async.json").read_text()) == [{"id": 1}]
    assert json.loads((recording_app / "sync.json").read_text()) == [{"id": 1}]
    assert json.loads((recording_app / "welcomed.json").read_text()) == {"id": 1}


def test_list_payload_is_positional_arguments(cli: Run, recording_app: Path) -> None:
    result = cli(recording_app, "emit", "user.created", "--json", '[1, "two", null]')

    assert result.returncode == 0, result.stderr
    assert json.loads((recording_app / "sync.json").read_text()) == [1, "two", None]


def test_failing_handler_exits_1_and_is_named(cli: Run, recording_app: Path) -> None:
    result = cli(recording_app, "emit", "user.broken", COLUMNS="200")

    assert result.returncode == 1
    assert "user.broken: 1 handler(s) ran, 1 failed" in result.stdout
    assert (
        "failed: app.domains.users.handlers:broken after 1 attempt(s): ValueError: no luck"
        in result.stdout
    )


def test_a_name_nothing_subscribes_to_is_refused_with_the_closest_names(
    cli: Run, recording_app: Path
) -> None:
    result = cli(recording_app, "emit", "user.create", "--json", '{"id": 1}')

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        "error: no handler subscribes to 'user.create', so nothing was emitted "
        "(did you mean 'user.created'?)\n"
    )
    assert not (recording_app / "async.json").exists()


def test_several_close_names_are_suggested(cli: Run, recording_app: Path) -> None:
    result = cli(recording_app, "emit", "user.wrecked")

    assert result.returncode == 2
    assert "(did you mean 'user.welcomed' or 'user.created'?)" in result.stderr


def test_a_name_far_from_every_subscription_points_to_the_handlers_list(
    cli: Run, recording_app: Path
) -> None:
    result = cli(recording_app, "emit", "nobody.cares")

    assert result.returncode == 2
    assert result.stderr == (
        "error: no handler subscribes to 'nobody.cares', so nothing was emitted "
        "(`fastapi-opinionated-eventbus handlers` lists the 3 subscribed names)\n"
    )


def test_a_pattern_subscription_counts(cli: Run, make_app: Callable[..., Path]) -> None:
    root = make_app(
        {
            "h.py": "from fastapi_opinionated_eventbus import OnInternalEvent\n"
            '@OnInternalEvent("audit.*")\nasync def audit(*args: object) -> None: ...\n'
        }
    )

    result = cli(root, "emit", "audit.anything")

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("audit.anything: 1 handler(s) ran, 0 failed")
