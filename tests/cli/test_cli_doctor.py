"""``doctor``: plugin enabled, handlers found, Redis reachable, emits match subscriptions."""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from subprocess import CompletedProcess

import pytest

import fastapi_opinionated_eventbus

Run = Callable[..., CompletedProcess[str]]

ENABLE = "fastapi-opinionated plugins enable fastapi_opinionated_eventbus.plugin.EventBusPlugin"


def test_clean_app_passes(cli: Run, shop_app: Path) -> None:
    result = cli(shop_app, "doctor")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 error(s), 0 warning(s)" in result.stdout
    assert "2 emit(s) found" in result.stdout  # the literal and the typed one


def test_typo_in_an_emitted_name_is_an_error_with_its_location(
    cli: Run, shop_app: Path, line_of: Callable[[Path, str], int]
) -> None:
    service = shop_app / "app/domains/shop/service.py"
    service.write_text(service.read_text().replace('"user.created"', '"usr.created"'))

    result = cli(shop_app, "doctor", COLUMNS="200")

    assert result.returncode == 1
    line = line_of(service, "usr.created")
    assert (
        f"error app/domains/shop/service.py:{line}: 'usr.created' is emitted but no handler "
        "subscribes to it (did you mean 'user.created'?)"
    ) in result.stdout
    # ... and user.created is now emitted nowhere.
    assert "app.domains.shop.handlers:welcome subscribes to 'user.created' but nothing emits" in (
        result.stdout
    )


def test_handler_nothing_emits_is_a_warning(
    cli: Run, shop_app: Path, line_of: Callable[[Path, str], int]
) -> None:
    handlers = shop_app / "app/domains/shop/handlers.py"
    handlers.write_text(
        handlers.read_text()
        + '\n\n@OnInternalEvent("order.cancelled")\nasync def refund(order: Any) -> None:\n'
        "    pass\n"
    )

    result = cli(shop_app, "doctor", "--json")

    assert result.returncode == 0, result.stdout
    report = json.loads(result.stdout)
    assert (report["errors"], report["warnings"]) == (0, 1)
    (warning,) = [f for f in report["findings"] if f["level"] == "warning"]
    line = line_of(handlers, '"order.cancelled"')
    assert warning == {
        "level": "warning",
        "location": f"app/domains/shop/handlers.py:{line}",
        "message": "app.domains.shop.handlers:refund subscribes to 'order.cancelled' but "
        "nothing emits it",
    }


def test_emits_outside_domains_count_and_other_emitters_do_not(cli: Run, shop_app: Path) -> None:
    # A pattern covers user.deleted; socket.emit is not the bus; an ignore comment works.
    (shop_app / "jobs.py").write_text(
        "from fastapi_opinionated_eventbus import EventBus\n"
        "async def job(events: EventBus, sio: object) -> None:\n"
        '    await events.emit("user.deleted")\n'
        '    await sio.emit("chat.message")\n'
        '    events.emit_after_response("nobody.listens")  # eventbus: ignore\n'
        '    events.emit_nowait("nobody.either")\n'
    )

    result = cli(shop_app, "doctor", "--json")

    report = json.loads(result.stdout)
    errors = [(f["location"], f["message"]) for f in report["findings"] if f["level"] == "error"]
    assert errors == [("jobs.py:6", "'nobody.either' is emitted but no handler subscribes to it")]
    assert result.returncode == 1


def test_emits_through_the_outbox_count(cli: Run, shop_app: Path) -> None:
    # The example app's form, and an outbox kept in a variable; user.created's only
    # literal emit is replaced, so without them its handler would be "emitted nowhere".
    service = shop_app / "app/domains/shop/service.py"
    service.write_text(
        service.read_text().replace(
            'await eventbus_api().emit("user.created", {"id": 1})',
            'await eventbus_api().outbox(session).emit("user.created", {"id": 1})',
        )
        + "\n\nasync def later(session: object) -> None:\n"
        "    outbox = eventbus_api().outbox(session)\n"
        '    await outbox.emit("user.nobody")\n'
    )

    result = cli(shop_app, "doctor", "--json")

    findings = json.loads(result.stdout)["findings"]
    assert {"level": "ok", "location": None, "message": "3 emit(s) found in 2 file(s)"} in (
        findings
    )
    problems = [f["message"] for f in findings if f["level"] != "ok"]
    assert problems == []  # user.nobody is covered by the user.* pattern
    assert result.returncode == 0


def test_plugin_not_enabled_is_an_error_with_the_fix(
    cli: Run, make_app: Callable[..., Path]
) -> None:
    root = make_app({"a.py": "X = 1\n"}, enable=False)

    result = cli(root, "doctor", COLUMNS="200")

    assert result.returncode == 1
    assert f"the EventBus plugin is not enabled: run `{ENABLE}`" in result.stdout


def test_unreachable_redis_is_an_error_and_the_password_is_masked(
    cli: Run, shop_app: Path, closed_redis_url: str
) -> None:
    url = closed_redis_url
    result = cli(
        shop_app, "doctor", COLUMNS="200", EVENTBUS_BACKEND="redis", EVENTBUS_REDIS_URL=url
    )

    assert result.returncode == 1
    # Asked through the backend, with the CLI's short connect timeout (not the app's 10 s).
    assert (
        "error cannot connect to the redis backend: BackendUnavailable: Cannot reach Redis at "
        f"redis://app:***@127.0.0.1:{url.rsplit(':', 1)[1]}: gave up after "
        "connect_timeout=3.0s"
    ) in result.stdout
    assert "s3cr3t" not in result.stdout + result.stderr


def test_reachable_redis_passes(cli: Run, shop_app: Path, redis_url: str) -> None:
    (shop_app / "main.py").write_text(
        "from fastapi_opinionated.app import App\napp = App.create(title='Shop API')\n"
    )
    result = cli(
        shop_app, "doctor", COLUMNS="200", EVENTBUS_BACKEND="redis", EVENTBUS_REDIS_URL=redis_url
    )

    assert result.returncode == 0, result.stdout
    assert "0 error(s), 0 warning(s)" in result.stdout
    # The stream's name derives from main.py's title, as the app's own backend derives it.
    lines = [line.rstrip() for line in result.stdout.splitlines()]
    assert (
        f"ok backend redis reachable: stream={{shop-api}}:events, group=eventbus, "
        f"redis_url={redis_url}"
    ) in lines


@pytest.mark.parametrize("broken", ["import nothing_here\n", "def (:\n"])
def test_an_app_module_that_fails_to_import_is_reported(
    cli: Run, shop_app: Path, broken: str
) -> None:
    (shop_app / "app/domains/shop/broken.py").write_text(broken)

    result = cli(shop_app, "doctor")

    assert result.returncode == 1
    assert "cannot import the app's modules" in result.stdout
    assert "app/domains/shop/broken.py:1" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_reports_the_installed_versions(cli: Run, shop_app: Path) -> None:
    # The package index has an older, unrelated 0.1.1 under the same name: which one runs
    # must be plain to see.
    result = cli(shop_app, "doctor", "--json")

    [first, *_] = json.loads(result.stdout)["findings"]
    ours, core = version("fastapi-opinionated-eventbus"), version("fastapi-opinionated-core")
    assert first["level"] == "ok"
    assert first["message"].startswith(f"fastapi-opinionated-eventbus {ours} (from ")
    assert first["message"].endswith(f"), fastapi-opinionated-core {core}")
    package = Path(fastapi_opinionated_eventbus.__file__).parent
    assert f"(from {package})" in first["message"]


def test_version_option_works_anywhere(cli: Run, tmp_path: Path) -> None:
    result = cli(tmp_path, "--version")  # not an app directory: no matter

    assert result.returncode == 0, result.stderr
    ours, core = version("fastapi-opinionated-eventbus"), version("fastapi-opinionated-core")
    assert result.stdout.startswith(f"fastapi-opinionated-eventbus {ours} (from ")
    assert result.stdout.endswith(f"), fastapi-opinionated-core {core}\n")
