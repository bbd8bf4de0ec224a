"""The ``fastapi-opinionated-eventbus`` command line (private; the console script).

The commands (typer, rich) load only when the console script runs: the plugin imports
the static scan (:mod:`.scan`) from here at run time, and must not pull them in.
"""

from __future__ import annotations

from typing import Any

__all__ = ["app", "main"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import commands

        return getattr(commands, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
