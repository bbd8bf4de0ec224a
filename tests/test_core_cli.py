"""The core's own CLI in a subprocess, run the way a user runs it: in the app directory,
with no PYTHONPATH. Our package is installed (editable) in the venv, so `plugins enable`
imports it and must never fall back to installing anything."""

from __future__ import annotations

import os
import re
import subprocess
import textwrap
from pathlib import Path

from support import REPO_ROOT, strip_ansi

VENV_BIN = REPO_ROOT / ".venv" / "bin"
CLI = VENV_BIN / "fastapi-opinionated"
PYTHON = VENV_BIN / "python"
PLUGIN_PATH = "fastapi_opinionated_eventbus.plugin.EventBusPlugin"

BILLING = """
    from fastapi_opinionated_eventbus import OnInternalEvent


    @OnInternalEvent("payment.processed")
    async def record_payment(payment_id, status, amount):
        pass


    @OnInternalEvent("payment.processed")
    def write_ledger(payment_id, status, amount):
        pass


    @OnInternalEvent("refund.issued")
    async def notify_customer(refund_id):
        pass
"""

# A nested module that imports a sibling through the app package: needs the app root
# on sys.path, which the plain console script does not provide by itself.
WELCOME = """
    from app.domains.users.templates import WELCOME_TEXT
    from fastapi_opinionated_eventbus import OnInternalEvent


    @OnInternalEvent("user.created")
    async def send_welcome(user):
        return WELCOME_TEXT
"""

TEMPLATES = """
    WELCOME_TEXT = "Welcome!"
"""

EXPECTED = {
    ("payment.processed", "record_payment", "app/domains/billing/handlers.py"),
    ("payment.processed", "write_ledger", "app/domains/billing/handlers.py"),
    ("refund.issued", "notify_customer", "app/domains/billing/handlers.py"),
    ("user.created", "send_welcome", "app/domains/users/notifications/welcome.py"),
}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.pop("VIRTUAL_ENV", None)
    return env


def _run(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(arg) for arg in args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _write(root: Path, relative: str, source: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))


def _parse_handlers(output: str) -> set[tuple[str, str, str]]:
    """(event, handler, file) of every entry `list handlers` printed."""
    entries = re.findall(
        r"- event: (\S+)\s+handler: (\S+)\s+file: (\S+)", strip_ansi(output), flags=re.M
    )
    return set(entries)


def test_cli_enables_the_plugin_then_lists_every_handler_plainly(tmp_path: Path) -> None:
    root = tmp_path / "shop"
    _write(root, "app/domains/billing/handlers.py", BILLING)
    _write(root, "app/domains/users/templates.py", TEMPLATES)
    _write(root, "app/domains/users/notifications/welcome.py", WELCOME)

    # Guard: if the plugin path did not import here, `plugins enable` would pip install the
    # old 0.1.1 from the index over the checkout. Fail instead of letting that happen.
    probe = _run(PYTHON, "-c", f"import {PLUGIN_PATH.rsplit('.', 1)[0]}", cwd=root)
    assert probe.returncode == 0, probe.stderr

    enable = _run(CLI, "plugins", "enable", PLUGIN_PATH, cwd=root)
    assert enable.returncode == 0, enable.stdout + enable.stderr
    assert "Installing" not in enable.stdout
    assert f"Enabled plugin: {PLUGIN_PATH}" in enable.stdout

    enabled_file = root / ".fastapi_opinionated" / "enabled_plugins.py"
    namespace: dict[str, object] = {}
    exec(enabled_file.read_text(), namespace)
    assert namespace["ENABLED_PLUGINS"] == [PLUGIN_PATH]

    listed = _run(CLI, "list", "handlers", "--plugin", "eventbus", cwd=root)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    output = strip_ansi(listed.stdout)
    assert "Traceback" not in output + listed.stderr
    assert "eventbus" in output
    assert _parse_handlers(listed.stdout) == EXPECTED
