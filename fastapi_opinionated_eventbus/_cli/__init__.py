"""The ``fastapi-opinionated-eventbus`` command line (private; the console script)."""

from __future__ import annotations

from .commands import app, main

__all__ = ["app", "main"]
