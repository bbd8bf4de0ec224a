"""The core's own ``fastapi-opinionated list handlers`` works in a plain app directory."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

Run = Callable[..., CompletedProcess[str]]


def test_core_cli_lists_pattern_typed_and_option_handlers(core_cli: Run, shop_app: Path) -> None:
    # No PYTHONPATH: the plugin puts the app root on sys.path in metadata mode.
    result = core_cli(shop_app, "list", "handlers", "--plugin", "eventbus")

    assert result.returncode == 0, result.stderr
    text = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout)
    entries = {
        (event, handler) for event, handler in re.findall(r"event: (\S+)\s+handler: (\S+)", text)
    }
    assert entries == {
        ("user.created", "welcome"),
        ("user.*", "audit_users"),  # a pattern
        ("order.placed", "ship"),  # a typed event class, with priority/retry/timeout
    }
    assert text.count("file: app/domains/shop/handlers.py") == 3
