"""Forwarding in an app, through the real core: the plugin option, ``forward_events`` in a
domain module, lifespans run twice, the introspection endpoint, and both CLIs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from fastapi.testclient import TestClient
from forwarding_support import RecordingForwarder
from support import AppDir, Factory, domain, strip_ansi

from fastapi_opinionated_eventbus.forwarding import Forward

PARTNER = """
    from fastapi_opinionated_eventbus.forwarding import forward_events


    class Partner:
        name = "Partner"

        def __init__(self) -> None:
            self.received = []

        async def send_many(self, envelopes) -> None:
            self.received.extend(envelopes)


    PARTNER = Partner()
    forward_events("order.*", PARTNER, max_wait=0.01, priority=5)
"""

ORDERS = """
    from fastapi_opinionated.decorators.routing import Controller, Post

    from fastapi_opinionated_eventbus import eventbus_api


    @Controller("/orders")
    class Orders:
        @Post("/")
        async def place(self) -> dict:
            event = eventbus_api().emit_after_response("order.placed", {"id": 1})
            return {"event_id": event.id}

        @Post("/awaited")
        async def awaited(self) -> dict:
            result = await eventbus_api().emit("order.paid", {"id": 1})
            return {"event_id": result.event_id, "ok": result.ok}
"""

APP = {"orders/partner.py": PARTNER, "orders/controller.py": ORDERS}


def test_a_forwarder_declared_in_a_domain_module_forwards_in_every_lifespan(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    app = eventbus_app_factory(app_dir(APP))
    partner = domain("orders.partner").PARTNER
    placed = []
    for _ in range(2):  # the same app's lifespan twice: subscribed again
        with TestClient(app) as client:
            placed.append(client.post("/orders/").json()["event_id"])
            paid = client.post("/orders/awaited").json()
            assert paid["ok"] is True
            assert paid["event_id"] in [e.id for e in partner.received]  # before the answer
        assert placed[-1] in [e.id for e in partner.received]  # flushed at shutdown
    assert sorted(e.name for e in partner.received) == ["order.paid"] * 2 + ["order.placed"] * 2


def test_the_forward_option_subscribes_forwarders_and_introspection_shows_them(
    app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    orders, audit = RecordingForwarder("Orders"), RecordingForwarder("Audit")
    app = eventbus_app_factory(
        app_dir({"orders/controller.py": ORDERS}),
        forward=[Forward("order.*", orders, max_wait=0.01), ("order.placed", audit)],
        introspection_path="/_eventbus",
    )
    for _ in range(2):
        with TestClient(app) as client:
            event_id = client.post("/orders/").json()["event_id"]
            described = client.get("/_eventbus").json()
        assert event_id in [e.id for e in orders.events]
        assert event_id in [e.id for e in audit.events]
    handlers = {(s["event"], s["handler"]) for s in described["subscriptions"]}
    assert handlers == {("order.*", "forward:Orders"), ("order.placed", "forward:Audit")}
    forwarding = {f["forwarder"]: f for f in described["health"]["forwarding"]}
    assert forwarding["Orders"]["event"] == "order.*"
    assert forwarding["Orders"]["batches_failed"] == 0
    assert orders.closed == 2  # closed at each shutdown


def run_cli(root: Path, command: str, *args: str) -> subprocess.CompletedProcess[str]:
    """A console script of the venv, run plainly in the app's root."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVENTBUS_", "PYTHONPATH"))}
    result = subprocess.run(
        [str(Path(sys.executable).parent / command), *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result


def test_the_clis_list_forwarders_declared_in_domain_modules(app_dir: AppDir) -> None:
    root = app_dir(APP)
    ours = run_cli(root, "fastapi-opinionated-eventbus", "handlers", "--json")
    (entry,) = json.loads(ours.stdout)
    assert entry["event"] == "order.*" and entry["handler"] == "forward:Partner"
    assert (entry["file"], entry["line"]) == ("app/domains/orders/partner.py", 16)
    assert entry["priority"] == 5 and entry["is_async"] is True
    core = run_cli(root, "fastapi-opinionated", "list", "handlers", "--plugin", "eventbus")
    assert "forwards:" in strip_ansi(core.stdout) and "event: order.*" in strip_ansi(core.stdout)
