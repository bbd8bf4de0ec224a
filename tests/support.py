"""Helpers shared by the test modules (import them as ``from support import ...``).

They live here, not in conftest.py: tests/cli has a conftest.py of its own, and two
modules named ``conftest`` cannot both be imported by name.
"""

from __future__ import annotations

import importlib
import re
import textwrap
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from fastapi import FastAPI

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


AppDir = Callable[..., Path]
Factory = Callable[..., FastAPI]


def domain(module: str) -> ModuleType:
    """A module of the app under test, e.g. ``domain("orders.handlers")``."""
    return importlib.import_module(f"app.domains.{module}")
