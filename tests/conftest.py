"""Shared test support.

The core is imported first: it replaces the root logger's handlers at import, and pytest's
``caplog`` only sees records if that happened before any test ran.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable
from pathlib import Path

import fastapi_opinionated.app  # noqa: F401 - import order matters, see above
import pytest

from fastapi_opinionated_eventbus.plugin import PLUGIN_PATH

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_APP = REPO_ROOT / "example_app"

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def strip_ansi(text: str) -> str:
    """The core's log formatter always colours its output."""
    return _ANSI.sub("", text)


def write_app(root: Path, domain_files: dict[str, str], *, enable: bool = True) -> Path:
    """Write a fastapi-opinionated app: ``app/domains/<path>`` files, the plugin enabled."""
    if enable:
        config = root / ".fastapi_opinionated"
        config.mkdir(parents=True, exist_ok=True)
        (config / "enabled_plugins.py").write_text(
            f'ENABLED_PLUGINS = [\n    "{PLUGIN_PATH}",\n]\n'
        )
    for relative, source in domain_files.items():
        path = root / "app" / "domains" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    return root


@pytest.fixture
def app_dir(tmp_path: Path) -> Callable[..., Path]:
    """``app_dir({"orders/handlers.py": "..."})`` -> a fresh app root in tmp_path."""
    counter = iter(range(1_000_000))

    def make(domain_files: dict[str, str], *, enable: bool = True) -> Path:
        return write_app(tmp_path / f"app{next(counter)}", domain_files, enable=enable)

    return make
