"""The example app, as its own ``main.py`` builds it: under TestClient, and served by a real
uvicorn process over HTTP. Users are stored in SQLite (a file of the test's own) and
``user.created`` goes through the outbox, so its handlers run just after the commit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from catalog_support import validate_asyncapi
from fastapi.testclient import TestClient
from support import EXAMPLE_APP, REPO_ROOT, Factory, check_activity, free_port, strip_ansi

PYTHON = REPO_ROOT / ".venv" / "bin" / "python"

NEW_USER = {"name": "Jane Doe", "email": "jane@example.com"}
PAYMENT = {"payment_id": "p_123", "status": "success", "amount": 99.99}


@pytest.fixture
def forget_main() -> Iterator[None]:
    """load_app imports the example's ``main``: do not leave it in sys.modules."""
    yield
    sys.modules.pop("main", None)


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The example's database, in tmp_path instead of example_app/example.db."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'example.db'}"
    monkeypatch.setenv("EXAMPLE_DATABASE_URL", url)
    return url


def _activity_of(get: Callable[[], list[dict[str, Any]]], kinds: set[str]) -> list[dict[str, Any]]:
    """The activity records once every kind in ``kinds`` is there (handlers run after the
    commit, in the background)."""
    deadline = time.monotonic() + 15
    while True:
        entries = get()
        if kinds <= {entry["kind"] for entry in entries}:
            return entries
        assert time.monotonic() < deadline, f"no {kinds} activity: {entries}"
        time.sleep(0.02)  # polling interval, not synchronisation


def _by_kind(entries: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Records grouped by kind, without the recording process's id and the event's id and
    attempt (checked, then dropped)."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        entry = dict(entry)
        assert isinstance(entry.pop("pid"), int)
        assert isinstance(entry.pop("event_id"), str)
        assert entry.pop("attempt") == 1
        grouped.setdefault(entry["kind"], []).append(entry)
    return grouped


def test_example_app_under_testclient(
    eventbus_app_factory: Factory, forget_main: None, database: str
) -> None:
    app = eventbus_app_factory(EXAMPLE_APP, main="main:app")
    with TestClient(app) as client:
        assert client.get("/users/activity").json() == []

        created = client.post("/users/", json=NEW_USER)
        assert created.status_code == 200
        user = created.json()
        assert user == {"id": user["id"], **NEW_USER, "event_id": user["event_id"]}
        assert client.get("/users/").json() == [{"id": user["id"], **NEW_USER}]  # stored

        def current_activity() -> list[dict[str, Any]]:
            return client.get("/users/activity").json()  # type: ignore[no-any-return]

        records = _activity_of(current_activity, {"welcome", "audit"})
        after_user = _by_kind(records)
        paid = client.post("/users/payments", json=PAYMENT)
        assert paid.status_code == 200
        activity = client.get("/users/activity").json()
        after_payment = _by_kind(activity)
        other = client.post("/users/", json=NEW_USER).json()

    assert set(after_user) == {"welcome", "audit"}
    # Each record names the event it handled: the one this signup emitted.
    assert {r["event_id"] for r in records} == {user["event_id"]}
    [welcome] = after_user["welcome"]
    # The handlers saw the event id the route got from the outbox (checked above).
    assert welcome == {"kind": "welcome", "event": "user.created", "user_id": user["id"]}
    [audit] = after_user["audit"]
    assert audit["user_id"] == user["id"]
    assert audit["thread"] != "MainThread"
    assert audit["thread"].startswith("eventbus")  # the bus's worker threads

    assert after_payment["payment"] == [
        {"kind": "payment", "event": "payment.processed", **PAYMENT}
    ]
    assert other["id"] != user["id"] and other["event_id"] != user["event_id"]

    checked = check_activity("-", json.dumps(activity))
    assert checked.returncode == 0, checked.stdout
    assert checked.stdout == (
        "2 event(s), each handled exactly once by each of its handlers, in 1 process(es)\n"
    )


def test_the_activity_check_names_what_ran_twice_or_not_at_all(tmp_path: Path) -> None:
    def line(kind: str, event_id: str, event: str = "user.created") -> str:
        record = {"kind": kind, "event": event, "event_id": event_id, "attempt": 1, "pid": 7}
        return json.dumps(record) + "\n"

    log = tmp_path / "activity.jsonl"
    log.write_text(
        line("welcome", "e1")
        + line("audit", "e1")
        + line("welcome", "e2")
        + line("audit", "e2")
        + line("audit", "e2")  # e2 audited twice
        + line("welcome", "e3")  # e3 never audited
        + line("payment", "e4", "payment.processed")
    )

    result = check_activity(str(log))

    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "user.created e2: handled 2 times by audit",
        "user.created e3: never handled by audit",
        "2 problem(s) in 4 event(s)",
    ]


def _wait_until_serving(
    client: httpx.Client, process: subprocess.Popen[bytes], log: Path, deadline: float
) -> None:
    while True:
        if process.poll() is not None:
            pytest.fail(f"uvicorn exited with {process.returncode}:\n{log.read_text()}")
        try:
            if client.get("/users/activity").status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"uvicorn did not serve within the deadline:\n{log.read_text()}")
        time.sleep(0.05)  # polling interval, not synchronisation


def test_example_app_served_by_uvicorn(tmp_path: Path, database: str) -> None:
    port = free_port()
    log = tmp_path / "uvicorn.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTBUS_")}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(PYTHON),
                "-m",
                "uvicorn",
                "main:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            cwd=EXAMPLE_APP,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            _wait_until_serving(client, process, log, time.monotonic() + 30)
            created = client.post("/users/", json=NEW_USER)
            paid = client.post("/users/payments", json=PAYMENT)
            activity = _activity_of(
                lambda: client.get("/users/activity").json(), {"welcome", "audit", "payment"}
            )
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            returncode = process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            pytest.fail(f"uvicorn did not exit on SIGTERM:\n{log.read_text()}")

    output = strip_ansi(log.read_text())
    assert created.status_code == 200, output
    assert set(created.json()) == {"id", "name", "email", "event_id"}
    assert paid.status_code == 200 and paid.json() == {"ok": True}

    kinds = _by_kind(activity)
    assert set(kinds) == {"welcome", "audit", "payment"}
    user_id = created.json()["id"]
    assert [entry["user_id"] for entry in kinds["welcome"]] == [user_id]
    [audit] = kinds["audit"]
    assert audit["user_id"] == user_id
    assert audit["thread"] != "MainThread"  # uvicorn's loop runs in the main thread
    assert kinds["payment"] == [{"kind": "payment", "event": "payment.processed", **PAYMENT}]

    # uvicorn >= 0.29 re-raises the captured SIGTERM after a graceful shutdown.
    assert returncode in (0, -signal.SIGTERM), output
    assert "Traceback" not in output
    assert "ERROR" not in output
    # The graceful path ran the plugin's shutdown (the core logs it before on_shutdown).
    assert "Shutting down plugin 'eventbus'" in output


def test_example_app_shows_metrics_and_introspection(
    eventbus_app_factory: Factory, forget_main: None, database: str
) -> None:
    app = eventbus_app_factory(EXAMPLE_APP, main="main:app")
    with TestClient(app) as client:
        client.post("/users/", json={"name": "Ada", "email": "ada@example.com"})
        _activity_of(lambda: client.get("/users/activity").json(), {"welcome", "audit"})
        metrics = client.get("/metrics")
        deadline = time.monotonic() + 15
        # The row is deleted once its handlers ran: a moment after they recorded.
        while (report := client.get("/_eventbus").json())["health"]["outbox"]["pending"]:
            assert time.monotonic() < deadline, report
            time.sleep(0.02)
    assert metrics.status_code == 200
    assert 'eventbus_events_emitted_total{event="user.created"} 1.0' in metrics.text
    assert (
        'eventbus_events_handled_total{handler="app.domains.user.handlers:write_audit_record",'
        'subscription="user.created"} 1.0' in metrics.text
    )
    assert report["counters"]["handled"] == 2
    assert report["health"]["outbox"]["reachable"] is True
    assert "eventbus_outbox_pending_rows" in metrics.text
    assert {sub["event"] for sub in report["subscriptions"]} == {
        "user.created",
        "payment.processed",
    }


def test_example_app_asyncapi_document_is_valid_and_the_cli_says_the_same(
    eventbus_app_factory: Factory, forget_main: None, database: str
) -> None:
    app = eventbus_app_factory(EXAMPLE_APP, main="main:app")
    with TestClient(app) as client:
        served = client.get("/asyncapi.json").json()
        page = client.get("/_eventbus/ui")
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTBUS_")}
    cli = REPO_ROOT / ".venv" / "bin" / "fastapi-opinionated-eventbus"
    printed = subprocess.run(
        [str(cli), "asyncapi"],
        cwd=EXAMPLE_APP,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    validate_asyncapi(served)
    assert printed.returncode == 0, printed.stderr
    assert json.loads(printed.stdout) == served
    assert page.status_code == 200
    assert set(served["channels"]) == {"user.created", "payment.processed"}
    messages = served["components"]["messages"]
    assert messages["payment.processed"]["payload"]["items"] == [
        {"type": "string", "title": "payment_id"},
        {"type": "string", "title": "status"},
        {"type": "number", "title": "amount"},
    ]
    sends = {
        op["channel"]["$ref"]: op["x-eventbus-emit-site"]["file"]
        for op in served["operations"].values()
        if op["action"] == "send"
    }
    # user.created is written through the outbox: that is its emit site.
    assert sends == {
        "#/channels/user.created": "app/domains/user/controllers/controller.py",
        "#/channels/payment.processed": "app/domains/user/controllers/controller.py",
    }
