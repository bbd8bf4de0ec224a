"""``fastapi-opinionated-eventbus dead-letters ...``: the dead letters a broker backend
stores (list, replay, purge)."""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated, Any

import typer
from rich.text import Text

from .._core.dead_letters import DeadLetter
from .connect import Target, load_target, with_bus
from .discovery import CliError, discover_handlers, enter_app
from .render import console, letters_table, print_json, printable

__all__ = ["dead_letters_app"]

dead_letters_app = typer.Typer(
    help="The dead letters a broker backend (redis, kafka) stores.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

# For a backend that runs handlers in the app's own process (local): the dead letters live
# in that process's memory, out of this one's reach.
_IN_PROCESS = (
    "the {backend} backend keeps dead letters in the memory of the app's process, out of "
    "this command's reach: read them in the app with `await eventbus_api().dead_letters()` "
    "(replay with `replay_dead_letters()`, delete with `purge_dead_letters()`); the "
    "introspection endpoint shows only their count. A broker backend "
    "(EVENTBUS_BACKEND=redis or kafka) keeps them where this command can read them"
)


def _target(ctx: typer.Context) -> Target:
    return load_target(enter_app(ctx.obj))


@dead_letters_app.command("list")
def dead_letters_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON to stdout instead.")] = False,
) -> None:
    """List the dead letters (handler failures after their last attempt), oldest first."""
    target = _target(ctx)
    letters = asyncio.run(
        with_bus(
            target, "dead-letters list", lambda bus: bus.dead_letters(), in_process=_IN_PROCESS
        )
    )
    if as_json:
        print_json([_letter_json(letter) for letter in letters])
        return
    out = console()
    if not letters:
        out.print("No dead letters.")
        return
    out.print(letters_table(letters, out.width))
    out.print(f"{len(letters)} dead letter(s)")


def _letter_json(letter: DeadLetter) -> dict[str, Any]:
    return {
        "event": letter.event.name,
        "event_id": letter.event.id,
        "args": list(letter.event.args),
        "kwargs": letter.event.kwargs,
        "handler": letter.handler,
        "exception_type": letter.exception_type,
        "message": letter.message,
        "attempts": letter.attempts,
        "failed_at": letter.failed_at.isoformat(),
        "reason": letter.reason,
    }


@dead_letters_app.command("replay")
def dead_letters_replay(ctx: typer.Context) -> None:
    """Run each dead letter's handler again; the ones failing again stay dead letters."""
    target = _target(ctx)
    discover_handlers(target.root)  # replayed handlers run in this process
    result = asyncio.run(
        with_bus(
            target,
            "dead-letters replay",
            lambda bus: bus.replay_dead_letters(),
            in_process=_IN_PROCESS,
        )
    )
    out = console()
    out.print(f"Replayed {result.handled} dead letter(s): {len(result.failures)} failed again")
    for failure in result.failures:
        exc = failure.exception
        # The handler ran on an event read from the broker: its message may quote it.
        line = printable(f"failed: {failure.handler}: {type(exc).__name__}: {exc}")
        out.print(Text(line, style="red"))
    if result.failures:
        raise typer.Exit(1)


@dead_letters_app.command("purge")
def dead_letters_purge(
    ctx: typer.Context,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete every dead letter."""
    target = _target(ctx)
    if not yes:
        if not sys.stdin.isatty():
            raise CliError("refusing to purge dead letters without --yes (no terminal to ask)")
        typer.confirm("Delete every dead letter?", abort=True)
    purged = asyncio.run(
        with_bus(
            target,
            "dead-letters purge",
            lambda bus: bus.purge_dead_letters(),
            in_process=_IN_PROCESS,
        )
    )
    console().print(f"Purged {purged} dead letter(s)")
