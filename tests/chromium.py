"""A real browser for the tests: Debian's headless Chromium, driven by selenium.

``.ci/run`` installs ``chromium`` and ``chromium-driver``. Without them the browser tests
are skipped, loudly -- except on CI (``CI`` set), where that is a failure. Selenium is
always given both binaries, so it never tries to download a browser or a driver.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from support import service_missing

__all__ = ["chromium", "console_errors", "no_browser", "serving", "wait_for"]

FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1360,1100",
)


def no_browser(reason: str) -> None:
    """Skip a test that needs Chromium, loudly; on CI (``CI`` set) fail instead."""
    service_missing(
        f"BROWSER TESTS NOT RUN: {reason}. Install Debian's chromium and chromium-driver "
        "(apt-get install -y chromium chromium-driver)."
    )


@contextmanager
def chromium(profile: Path) -> Iterator[WebDriver]:
    """Headless Chromium with a fresh profile in ``profile``; its console log is kept."""
    browser = shutil.which("chromium")
    driver_binary = shutil.which("chromedriver")
    if browser is None or driver_binary is None:
        no_browser(f"chromium={browser}, chromedriver={driver_binary} on PATH")
    assert browser is not None and driver_binary is not None
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        driver = webdriver.Chrome(service=Service(executable_path=driver_binary), options=options)
    except WebDriverException as exc:
        no_browser(f"headless Chromium did not start: {exc.msg}")
        raise
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(driver: WebDriver) -> list[dict[str, Any]]:
    """The console entries of level SEVERE since the last call (the log is then empty)."""
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def wait_for[T](what: str, probe: Callable[[], T | None], timeout: float = 20) -> T:
    """``probe()``'s first truthy value, polled until ``timeout`` seconds passed.

    The page rebuilds its tables at every refresh: an element read as it is replaced
    is stale, and the probe is simply tried again.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = probe()
        except StaleElementReferenceException:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)  # polling interval, not synchronisation


def serving(base_url: str, path: str, log: Path) -> None:
    """Wait (30 s at most) until the server at ``base_url`` answers ``path`` with 200."""

    def answers() -> bool:
        try:
            return httpx.get(base_url + path, timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(f"{base_url}{path}", answers, timeout=30)
    except pytest.fail.Exception:
        pytest.fail(f"the app did not serve {path}:\n{log.read_text(errors='replace')}")
