"""Fixtures of the event catalog's tests (the data lives in tests/catalog_support.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from catalog_support import MAIN, SHOP_APP


@pytest.fixture
def shop_app(app_dir: Callable[..., Path]) -> Path:
    """The shop app, with a main.py that mounts the JSON endpoint and the document."""
    root = app_dir(SHOP_APP)
    (root / "main.py").write_text(MAIN)
    return root
