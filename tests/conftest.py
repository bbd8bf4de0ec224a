"""Fixtures shared by every test.

The core is imported first: it replaces the root logger's handlers at import, and pytest's
``caplog`` only sees records if that happened before any test ran.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import fastapi_opinionated.app  # noqa: F401 - import order matters, see above
import pytest
from support import EXAMPLE_APP, REPO_ROOT, strip_ansi, write_app

__all__ = ["EXAMPLE_APP", "REPO_ROOT", "strip_ansi", "write_app"]


@pytest.fixture
def app_dir(tmp_path: Path) -> Callable[..., Path]:
    """``app_dir({"orders/handlers.py": "..."})`` -> a fresh app root in tmp_path."""
    counter = iter(range(1_000_000))

    def make(domain_files: dict[str, str], *, enable: bool = True) -> Path:
        return write_app(tmp_path / f"app{next(counter)}", domain_files, enable=enable)

    return make
