"""The live page in a real browser (headless Chromium), against apps served by uvicorn:
the example app's page lists its handlers and counts a signup; a test app's page shows a
failure and renders a hostile event name as text. Screenshots are written to the test's
tmp dir (the path is printed); the example app's also to EVENTBUS_TEST_SCREENSHOT_DIR when
it is set (the README's docs/catalog.png)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from catalog_support import HOSTILE, MAIN, SHOP_APP
from chromium import chromium, console_errors, serving, wait_for
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from support import EXAMPLE_APP, uvicorn, write_app

CONTROLLER = f"""\
from fastapi_opinionated.decorators.routing import Controller, Post

from fastapi_opinionated_eventbus import eventbus_api


@Controller("/shop")
class ShopController:
    @Post("/hostile")
    async def hostile(self) -> dict:
        result = await eventbus_api().emit({HOSTILE!r}, {{"card": "4111-1111-1111-1111"}})
        return {{"event_id": result.event_id}}
"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    with chromium(tmp_path_factory.mktemp("chromium-profile")) as driver:
        yield driver


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTBUS_")}
    return {**env, **extra}


def _row(driver: WebDriver, table: str, attribute: str, value: str) -> dict[str, Any] | None:
    """What a row of ``table`` shows (the first whose ``attribute`` is ``value``): its
    cells' texts, its counters by name, its event-name text; None when there is none."""
    for row in driver.find_elements(By.CSS_SELECTOR, f"#{table} tbody tr"):
        if row.get_attribute(attribute) != value:
            continue
        cells = row.find_elements(By.TAG_NAME, "td")
        names = row.find_elements(By.CSS_SELECTOR, ".event-name")
        return {
            "cells": [cell.text for cell in cells],
            "counts": {
                (cell.get_attribute("class") or "").split()[1].removeprefix("c-"): cell.text
                for cell in cells
                if "num" in (cell.get_attribute("class") or "").split()
            },
            "name": names[0].text if names else None,
            "text": row.text,
        }
    return None


def _counts(driver: WebDriver, event: str) -> dict[str, str] | None:
    row = _row(driver, "events", "data-event", event)
    return None if row is None else dict(row["counts"])


def _screenshot(driver: WebDriver, path: Path, *, readme: bool = False) -> None:
    """Save a screenshot; the README's (docs/catalog.png) is taken with
    ``EVENTBUS_TEST_SCREENSHOT_DIR=docs``."""
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 10_000
    print(f"screenshot of the catalog page: {path}")
    directory = os.environ.get("EVENTBUS_TEST_SCREENSHOT_DIR")
    if directory and readme:
        shutil.copy(path, Path(directory) / path.name)


def test_the_example_apps_page_lists_its_handlers_and_counts_a_signup(
    browser: WebDriver, tmp_path: Path
) -> None:
    env = _env(EXAMPLE_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'example.db'}")
    log = tmp_path / "uvicorn.log"
    with uvicorn(EXAMPLE_APP, "main:app", log=log, env=env) as base:
        serving(base, "/_eventbus", log)
        browser.get(f"{base}/_eventbus/ui")
        handlers = wait_for(
            "the handlers table",
            lambda: {
                row.get_attribute("data-handler")
                for row in browser.find_elements(By.CSS_SELECTOR, "#handlers tbody tr")
            },
        )
        assert handlers == {
            "app.domains.user.handlers:send_welcome_notification",
            "app.domains.user.handlers:write_audit_record",
            "app.domains.user.handlers:handle_payment_result",
        }
        created = wait_for(
            "the user.created row", lambda: _row(browser, "events", "data-event", "user.created")
        )
        assert (created["counts"]["emitted"], created["counts"]["handled"]) == ("0", "0")
        # Its emit site, through the outbox, exactly as the scan found it.
        controller = EXAMPLE_APP / "app/domains/user/controllers/controller.py"
        line = next(
            n
            for n, text in enumerate(controller.read_text().splitlines(), 1)
            if "outbox(session).emit(" in text
        )
        assert created["cells"][3] == f"app/domains/user/controllers/controller.py:{line}"

        signup = httpx.post(
            f"{base}/users/", json={"name": "Ada", "email": "ada@example.com"}, timeout=10
        )
        assert signup.status_code == 200
        wait_for(
            "user.created counted on the page",
            lambda: (
                (_counts(browser, "user.created") or {}).items()
                >= {"emitted": "1", "handled": "2"}.items()
            ),
        )
        paid = httpx.post(
            f"{base}/users/payments",
            json={"payment_id": "p_1", "status": "ok", "amount": 9.5},
            timeout=10,
        )
        assert paid.status_code == 200
        wait_for(
            "payment.processed counted",
            lambda: (_counts(browser, "payment.processed") or {}).get("handled") == "1",
        )
        assert browser.find_element(By.ID, "title").text == "EventBus example"
        assert "local: healthy" in browser.find_element(By.ID, "health").text
        _screenshot(browser, tmp_path / "catalog.png", readme=True)
        errors = console_errors(browser)
        browser.get("about:blank")  # stop refreshing before the server goes
    assert errors == []


def test_a_failure_is_shown_and_a_hostile_event_name_stays_text(
    browser: WebDriver, tmp_path: Path
) -> None:
    root = write_app(tmp_path / "shop", {**SHOP_APP, "shop/controller.py": CONTROLLER})
    (root / "main.py").write_text(MAIN)
    log = tmp_path / "uvicorn.log"
    with uvicorn(root, "main:app", log=log, env=_env()) as base:
        serving(base, "/_eventbus", log)
        browser.get(f"{base}/_eventbus/ui")
        hostile = wait_for(
            "the hostile event's row", lambda: _row(browser, "events", "data-event", HOSTILE)
        )
        assert hostile["name"] == HOSTILE
        emitted = httpx.post(
            f"{base}/shop/hostile", headers={"X-Correlation-ID": "req-browser-1"}, timeout=10
        )
        assert emitted.status_code == 200
        event_id = emitted.json()["event_id"]
        failure = wait_for(
            "the failure on the page", lambda: _row(browser, "failures", "data-event-id", event_id)
        )
        assert failure["cells"][1:] == [
            HOSTILE,
            event_id,
            "req-browser-1",
            "hostile",
            "RuntimeError",
            "1 (dead letter)",
        ]
        wait_for(
            "the failure counted",
            lambda: (_counts(browser, HOSTILE) or {}).get("failed") == "1",
        )
        # The name was never parsed as HTML: no <img> element, no alert.
        assert browser.find_elements(By.TAG_NAME, "img") == []
        with pytest.raises(NoAlertPresentException):
            browser.switch_to.alert.text  # noqa: B018 - raises when there is none
        assert "4111" not in browser.page_source  # never a payload
        _screenshot(browser, tmp_path / "catalog-failure.png")
        errors = console_errors(browser)
        browser.get("about:blank")
    assert errors == []
