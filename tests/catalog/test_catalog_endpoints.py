"""The catalog's endpoints without a browser: what the page and its JSON are made of, how
they are protected, and the options that mount them."""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import pytest
from catalog_support import HOSTILE
from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from fastapi.testclient import TestClient
from support import Factory

from fastapi_opinionated_eventbus import ConfigurationError
from fastapi_opinionated_eventbus._observability import ui

STATIC = Path(ui.__file__).parent / "static"
PAGE_PATHS = ("/_eventbus/ui", "/_eventbus/ui/catalog.js", "/_eventbus/ui/catalog.css")


@pytest.fixture
def forget_main() -> Iterator[None]:
    yield
    sys.modules.pop("main", None)


def test_the_page_and_its_assets_are_served_with_a_strict_policy(
    eventbus_app_factory: Factory, shop_app: Path
) -> None:
    app = eventbus_app_factory(shop_app, introspection_path="/_eventbus")
    with TestClient(app) as client:
        responses = {path: client.get(path) for path in PAGE_PATHS}

    page = responses["/_eventbus/ui"]
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.content == (STATIC / "catalog.html").read_bytes()
    assert (
        responses["/_eventbus/ui/catalog.js"].headers["content-type"].startswith("text/javascript")
    )
    assert responses["/_eventbus/ui/catalog.css"].headers["content-type"].startswith("text/css")
    for response in responses.values():
        policy = response.headers["content-security-policy"]
        assert "default-src 'none'" in policy
        assert "script-src 'self';" in policy  # no inline script, no eval, no CDN
        assert response.headers["x-content-type-options"] == "nosniff"
    # Everything the page loads is its own: no absolute URL anywhere.
    for name in ("catalog.html", "catalog.js", "catalog.css"):
        assert not re.search(r"https?://|//cdn", (STATIC / name).read_text()), name


def test_the_script_never_parses_data_as_html() -> None:
    script = (STATIC / "catalog.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script, sink


def test_the_json_endpoint_carries_the_catalog(
    eventbus_app_factory: Factory, shop_app: Path, forget_main: None
) -> None:
    app = eventbus_app_factory(shop_app, main="main:app")
    with TestClient(app) as client:
        report = client.get("/_eventbus").json()

    assert report["app"] == {"title": "Shop", "version": "2.1.0"}
    assert report["asyncapi_path"] == "/asyncapi.json"
    assert report["introspection_path"] == "/_eventbus"
    catalog = report["catalog"]
    events = {event["name"]: event for event in catalog["events"]}
    assert list(events)[-1] == "order.*"  # names first, then patterns
    order = events["order.placed"]
    assert order["schema"].endswith(".events:OrderPlaced")
    # The page's schemas are self-contained: each carries the definitions it uses.
    assert order["payload"]["$ref"] == "#/$defs/OrderPlaced"
    assert set(order["payload"]["$defs"]) == {"OrderPlaced", "Address"}
    assert order["also_handled_by"] == ["order.*"]
    assert order["emit_sites"] == [f"app/domains/shop/service.py:{_line('emit(')}"]
    [handler] = order["handlers"]
    assert handler["priority"] == 5 and handler["retry"]["max_attempts"] == 3
    assert events[HOSTILE]["handlers"][0]["handler"].endswith(":hostile")
    assert catalog["scan"] == {"files": 4, "truncated": False, "computed_names": 1}
    assert catalog["servers"] == []
    assert report["recent_failures"] == []


def _line(text: str) -> int:
    from catalog_support import SERVICE, line_of

    return line_of(SERVICE, text)


def test_failures_and_counters_reach_the_json_without_payloads(
    eventbus_app_factory: Factory, shop_app: Path
) -> None:
    from fastapi_opinionated_eventbus import eventbus_api

    app = eventbus_app_factory(shop_app, introspection_path="/_eventbus")

    @app.post("/hostile")
    async def emit_hostile() -> dict[str, Any]:
        result = await eventbus_api().emit(HOSTILE, {"card": "4111-1111-1111-1111"})
        return {"event_id": result.event_id}

    with TestClient(app) as client:
        emitted = client.post("/hostile", headers={"X-Correlation-ID": "req-7"}).json()
        report = client.get("/_eventbus").json()

    [failure] = report["recent_failures"]
    assert failure["event"] == HOSTILE
    assert failure["event_id"] == emitted["event_id"]
    assert failure["correlation_id"] == "req-7"
    assert failure["handler"].endswith(":hostile")
    assert failure["exception_type"] == "RuntimeError"
    assert report["counters"]["events"][HOSTILE]["dead_lettered"] == 1
    text = str(report)
    assert "4111" not in text
    assert "the hostile event's handler fails" not in text  # the message is not kept


async def _require_token(request: Request) -> None:
    if request.headers.get("x-token") != "let-me-in":
        raise HTTPException(status_code=401, detail="token required")


def _protected(factory: Factory, root: Path, dependency: Any, **options: Any) -> Any:
    """The app with the JSON view, the page and the document behind ``dependency``."""
    return factory(
        root,
        introspection_path="/_eventbus",
        asyncapi_path="/asyncapi.json",
        dependencies=[Depends(dependency)],
        **options,
    )


def test_dependencies_protect_every_endpoint_of_the_plugin(
    eventbus_app_factory: Factory, shop_app: Path
) -> None:
    app = _protected(
        eventbus_app_factory,
        shop_app,
        _require_token,
        metrics="prometheus",
        metrics_path="/metrics",
    )
    paths = ("/_eventbus", *PAGE_PATHS, "/asyncapi.json", "/metrics")
    with TestClient(app) as client:
        refused = {path: client.get(path).status_code for path in paths}
        allowed = {
            path: client.get(path, headers={"x-token": "let-me-in"}).status_code for path in paths
        }
    assert refused == dict.fromkeys(paths, 401)
    assert allowed == dict.fromkeys(paths, 200)


def test_everything_is_off_by_default(eventbus_app_factory: Factory, shop_app: Path) -> None:
    app = eventbus_app_factory(shop_app)
    with TestClient(app) as client:
        for path in ("/_eventbus", *PAGE_PATHS, "/asyncapi.json"):
            assert client.get(path).status_code == 404, path


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"asyncapi_path": "asyncapi.json"}, "option 'asyncapi_path': Value error, must be a URL"),
        ({"introspection_path": "/_eventbus/"}, "option 'introspection_path'"),
        ({"metrics_path": "/"}, "option 'metrics_path'"),
        ({"dependencies": [_require_token]}, "option 'dependencies': Value error, must be a list"),
        ({"dependencies": Depends(_require_token)}, "option 'dependencies'"),
    ],
)
def test_bad_options_name_the_option(
    eventbus_app_factory: Factory, shop_app: Path, options: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(problem)):
        eventbus_app_factory(shop_app, **options)


def test_dependencies_cannot_come_from_the_environment(
    eventbus_app_factory: Factory, shop_app: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVENTBUS_DEPENDENCIES", "require_admin")
    with pytest.raises(ConfigurationError, match="environment variable EVENTBUS_DEPENDENCIES"):
        eventbus_app_factory(shop_app)


def test_the_plugin_imports_the_scan_without_the_cli_commands() -> None:
    # The plugin's catalog reuses doctor's scan; typer and rich stay out of the app.
    code = (
        "import sys, fastapi_opinionated_eventbus.plugin, fastapi_opinionated_eventbus._cli.scan;"
        "print(sorted(m for m in ('typer', 'rich') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


# The README's example (at module level: FastAPI resolves the annotations here).
basic = HTTPBasic()


def require_operator(credentials: Annotated[HTTPBasicCredentials, Depends(basic)]) -> None:
    if not secrets.compare_digest(credentials.password.encode(), b"change-me"):
        raise HTTPException(401, headers={"WWW-Authenticate": "Basic"})


def test_the_readmes_http_basic_example_protects_the_page(
    eventbus_app_factory: Factory, shop_app: Path
) -> None:
    app = _protected(eventbus_app_factory, shop_app, require_operator)
    with TestClient(app) as client:
        anonymous = client.get("/_eventbus/ui")
        wrong = client.get("/_eventbus/ui", auth=("ops", "guess"))
        operator = [
            client.get(path, auth=("ops", "change-me")).status_code
            for path in (*PAGE_PATHS, "/_eventbus", "/asyncapi.json")
        ]
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == "Basic"  # the browser asks for a password
    assert wrong.status_code == 401
    assert operator == [200] * 5
