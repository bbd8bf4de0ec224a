"""``fastapi-opinionated-eventbus outbox ...``: the transactional outbox table."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from .._core.errors import EventBusError
from .._secrets import scrub
from .discovery import CliError, enter_app, settings_from_env

__all__ = ["outbox_app"]

outbox_app = typer.Typer(
    help="The transactional outbox (EVENTBUS_OUTBOX_URL).",
    no_args_is_help=True,
    rich_markup_mode=None,
)

_OFF = (
    "the outbox is off: set EVENTBUS_OUTBOX_URL to the app's outbox database (as the app "
    "does with the outbox_url option), e.g. postgresql+asyncpg://user:password@host/db"
)


@outbox_app.command("stats")
def stats(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON to stdout instead.")] = False,
) -> None:
    """Rows waiting to be dispatched, the oldest one's age, rows moved aside (they do not
    decode or kept failing) and, with outbox_keep, dispatched rows kept."""
    enter_app(ctx.obj)
    no_color = bool(os.environ.get("NO_COLOR"))
    settings = settings_from_env()
    if settings.outbox_url is None:
        raise CliError(_OFF)
    try:
        from ..outbox._service import inspect_outbox

        report: dict[str, Any] = asyncio.run(inspect_outbox(settings))
    except ImportError as exc:
        raise CliError(
            f"the outbox needs its extra: pip install 'fastapi-opinionated-eventbus[outbox]' "
            f"({exc})"
        ) from None
    except (EventBusError, OSError, TimeoutError) as exc:
        raise CliError(scrub(str(exc), settings.outbox_url)) from None
    if as_json:
        print(json.dumps(report, indent=2))
        return
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    table.add_column("Outbox", style="cyan", overflow="fold")
    table.add_column("Value", overflow="fold")
    for key, value in report.items():
        if key == "oldest_age_seconds" and value is not None:
            value = f"{value:.1f}"
        table.add_row(key, "-" if value is None else str(value))
    Console(color_system=None if no_color else "auto", highlight=False).print(table)
