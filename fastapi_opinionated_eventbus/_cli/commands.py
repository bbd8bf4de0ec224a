"""``fastapi-opinionated-eventbus``: inspect and exercise an app's event bus from its root.

Exit codes: 0 success; 1 a problem found in the app (``doctor`` errors, failed handlers);
2 the command could not run (not an app directory, plugin not enabled, bad input,
Redis unreachable, a command the backend does not support).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .._core.bus import EventBus
from .._core.dead_letters import DeadLetter
from .._core.errors import EventBusError
from .._core.registry import check_event_name
from .._core.results import EmitResult
from .._core.settings import BusSettings
from .._secrets import scrub
from .discovery import (
    ENABLE_COMMAND,
    THIS_PROCESS_KEYS,
    CliError,
    HandlerInfo,
    Target,
    close_bus,
    configure_core_logs,
    discover_handlers,
    enabled_plugins,
    installed_version,
    load_target,
    one_line,
    open_bus,
    plugin_enabled,
    require_app_root,
    warn,
    with_bus,
)
from .scan import Finding, diagnose, unsubscribed_emit

__all__ = ["app", "main"]

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON to stdout instead.")]

app = typer.Typer(
    name="fastapi-opinionated-eventbus",
    help="Inspect and exercise the event bus of the fastapi-opinionated app in this directory.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
dead_letters_app = typer.Typer(
    help="The dead letters a broker backend (redis) stores.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(dead_letters_app, name="dead-letters")

# For a backend that runs handlers in the app's own process (local): what these commands
# would read lives in that process's memory, out of this one's reach.
_IN_PROCESS_DEAD_LETTERS = (
    "the {backend} backend keeps dead letters in the memory of the app's process, out of "
    "this command's reach: read them in the app with `await eventbus_api().dead_letters()` "
    "(replay with `replay_dead_letters()`, delete with `purge_dead_letters()`); the "
    "introspection endpoint shows only their count. A broker backend "
    "(EVENTBUS_BACKEND=redis) keeps them where this command can read them"
)
_IN_PROCESS_STATS = (
    "the {backend} backend keeps its counters in the memory of the app's process, out of "
    "this command's reach: read them in the app with `await eventbus_api().health()` or on "
    "the introspection endpoint (introspection_path option); `handlers` lists the "
    "subscriptions. With a broker backend (EVENTBUS_BACKEND=redis) this command reads the "
    "broker"
)


@dataclass(frozen=True, slots=True)
class Options:
    app_dir: Path
    verbose: bool


def main() -> None:
    """The console script: one line on stderr and exit code 2 for a usage problem."""
    try:
        app()
    except CliError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(2)


def _print_version(value: bool) -> None:
    # Another project on the package index has this name (0.1.1): which one runs?
    if value:
        print(installed_version())
        raise typer.Exit()


@app.callback()
def _global_options(
    ctx: typer.Context,
    app_dir: Annotated[
        Path,
        typer.Option(
            "--app-dir",
            "-C",
            metavar="DIR",
            show_default=False,
            help="The app's root (default: current directory).",
        ),
    ] = Path("."),
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show the core's INFO logs.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            is_eager=True,
            callback=_print_version,
            help="Print the installed versions (this package's and the core's) and exit.",
        ),
    ] = False,
) -> None:
    # Validated by each command, so `<command> --help` works anywhere.
    ctx.obj = Options(app_dir, verbose)


# ====================================================================== output
def _no_color() -> bool:
    return bool(os.environ.get("NO_COLOR"))


def _console() -> Console:
    # Rich keeps bold/dim escapes under NO_COLOR; no colour system means no escapes at all.
    # The width follows the terminal (COLUMNS when not a terminal, else 80).
    return Console(color_system=None if _no_color() else "auto", highlight=False)


def _print_json(data: object) -> None:
    # Plain print: rich would wrap long lines and break the JSON.
    print(json.dumps(data, indent=2, default=str))


def _enter_app(ctx: typer.Context) -> Path:
    """Validate the app root, make it the current directory (the core reads its files
    relative to it) and quiet the core's logs."""
    options: Options = ctx.obj
    root = require_app_root(options.app_dir.resolve())
    os.chdir(root)
    configure_core_logs(verbose=options.verbose, plain=_no_color() or not sys.stderr.isatty())
    return root


def _run[T](coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


# ====================================================================== handlers
@app.command()
def handlers(
    ctx: typer.Context,
    as_json: JsonFlag = False,
) -> None:
    """List every @OnInternalEvent handler the app declares under app/domains."""
    root = _enter_app(ctx)
    if not plugin_enabled(enabled_plugins(root)):
        warn(f"the EventBus plugin is not enabled, these handlers never run: `{ENABLE_COMMAND}`")
    infos = sorted(discover_handlers(root), key=lambda h: (h.is_pattern, h.event, -h.priority))
    if as_json:
        _print_json([info.to_json() for info in infos])
        return
    console = _console()
    if not infos:
        console.print("No handlers found under app/domains.")
        return
    console.print(_handlers_table(infos, console.width))
    events = len({info.event for info in infos})
    console.print(f"{len(infos)} handler(s), {events} event name(s) or pattern(s)")


# Columns right of the handler's, gaps included: what a handler name has left to fit in.
_OPTION_COLUMNS_WIDTH = 36


def _table() -> Table:
    return Table(
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
        header_style="bold",
    )


def _handlers_table(infos: list[HandlerInfo], width: int) -> Table:
    """One row per event name or pattern, then one per handler, in the order they run."""
    table = _table()
    table.add_column("Event / handler, file:line", overflow="fold")
    table.add_column("Mode", no_wrap=True)
    table.add_column("Prio", justify="right", no_wrap=True)
    table.add_column("Retry", justify="right", no_wrap=True)
    table.add_column("Timeout", justify="right", no_wrap=True)
    table.add_column("Bcast", no_wrap=True)
    room = width - _OPTION_COLUMNS_WIDTH
    event = None
    for info in infos:
        if info.event != event:
            event = info.event
            kind = " (pattern)" if info.is_pattern else ""
            table.add_row(Text(event, style="bold cyan").append(kind, style="cyan"))
        table.add_row(
            _handler_cell(info, room),
            "async" if info.is_async else "sync",
            str(info.priority),
            "-" if info.retry is None else f"{info.retry.max_attempts}x",
            "-" if info.timeout is None else f"{info.timeout:g}s",
            "yes" if info.broadcast else "-",
        )
    return table


def _handler_cell(info: HandlerInfo, room: int) -> Text:
    """``module:qualname`` then ``file:line``, indented under the event's row.

    Dotted names and paths have no spaces for rich to wrap at: they are cut after a dot,
    an underscore or a slash instead, so that the table fits the terminal.
    """
    width = max(room - 2, 16)
    module, _, qualname = info.handler.rpartition(":")
    if len(info.handler) <= width:
        parts = [(f"{module}:", ""), (qualname, "bold")]
    else:
        parts = [(line, "") for line in _cut(f"{module}:", width, _NAME_BREAKS)]
        parts += [(line, "bold") for line in _cut(qualname, width, _NAME_BREAKS)]
    parts += [(line, "dim") for line in _cut(info.location, width, ("/", "._"))]
    cell = Text()
    for index, (text, style) in enumerate(parts):
        joined = index == 1 and len(info.handler) <= width  # qualname after its module
        cell.append(text if joined else ("\n  " if index else "  ") + text, style=style)
    return cell


# Where a dotted name (or an event id) may be cut: after a dot or colon, else after an
# underscore or a dash.
_NAME_BREAKS = (".:", "_-")


def _cut(text: str, width: int, breaks: Sequence[str]) -> list[str]:
    """``text`` in pieces of at most ``width``, each cut just after a character of the
    first group of ``breaks`` that has one in reach (dots before underscores, say), and
    mid-word only where none has."""
    pieces = []
    while len(text) > width:
        cut = 0
        for group in breaks:
            cut = max(text.rfind(char, 0, width) for char in group) + 1
            if cut > 0:
                break
        if cut <= 0:
            cut = width
        pieces.append(text[:cut])
        text = text[cut:]
    pieces.append(text)
    return pieces


def _fitted(text: str, width: int, style: str = "") -> Text:
    """A dotted name cut over lines of at most ``width`` (never wrapped mid-word by rich)."""
    return Text("\n".join(_cut(text, width, _NAME_BREAKS)), style=style)


# ====================================================================== doctor
@app.command()
def doctor(
    ctx: typer.Context,
    as_json: JsonFlag = False,
    exclude: Annotated[
        list[str] | None,
        typer.Option(
            metavar="GLOB", help="Skip files matching this glob in the code scan (repeatable)."
        ),
    ] = None,
) -> None:
    """Check the installed version, that the plugin is enabled, the backend answers and
    handlers are found, and that emitted names and subscriptions match up.

    Exit code 1 when an error was found; warnings alone exit 0.
    """
    findings = diagnose(_enter_app(ctx), exclude or ())
    _report(findings, as_json)
    if any(f.level == "error" for f in findings):
        raise typer.Exit(1)


_LABELS = {"ok": ("ok", "green"), "warning": ("warn", "yellow"), "error": ("error", "bold red")}


def _report(findings: list[Finding], as_json: bool) -> None:
    errors = sum(f.level == "error" for f in findings)
    warnings = sum(f.level == "warning" for f in findings)
    if as_json:
        data = [f.to_json() for f in findings]
        _print_json({"errors": errors, "warnings": warnings, "findings": data})
        return
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True)
    grid.add_column(overflow="fold")
    for finding in findings:
        label, style = _LABELS[finding.level]
        where = f"{finding.location}: " if finding.location else ""
        grid.add_row(Text(label, style=style), Text(where + finding.message))
    console = _console()
    console.print(grid)
    console.print(f"{errors} error(s), {warnings} warning(s)")


# ====================================================================== emit
@app.command()
def emit(
    ctx: typer.Context,
    event: Annotated[
        str, typer.Argument(metavar="EVENT", help="The event name, e.g. user.created.")
    ],
    payload: Annotated[
        str | None,
        typer.Option(
            "--json",
            metavar="PAYLOAD",
            help="JSON arguments: an object is passed as one dict, a list as positional args.",
        ),
    ] = None,
) -> None:
    """Emit EVENT through the app's handlers (or, with a broker backend, publish it).

    Settings come from EVENTBUS_* variables. Exit code 1 when a handler failed; 2 when no
    handler subscribes to EVENT (nothing is emitted; the closest names are suggested).
    """
    args = parse_payload(payload)
    try:
        check_event_name(event)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    target = _target(ctx)
    # A typo must not look like success: locally nothing would run, and a broker's
    # consumer would acknowledge an event no handler takes.
    problem = unsubscribed_emit(event, discover_handlers(target.root))
    if problem is not None:
        raise CliError(problem)
    result = _run(_emit(target, event, args))
    console = _console()
    for line in _describe_emit(event, result, target.settings):
        console.print(line)
    if result.failures:
        raise typer.Exit(1)


def parse_payload(text: str | None) -> tuple[Any, ...]:
    if text is None:
        return ()
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(
            f"--json is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    return tuple(value) if isinstance(value, list) else (value,)


def _target(ctx: typer.Context) -> Target:
    return load_target(_enter_app(ctx))


async def _emit(target: Target, event: str, args: tuple[Any, ...]) -> EmitResult:
    bus = await open_bus(target)
    try:
        return await bus.emit(event, *args, strict=False)
    except (EventBusError, ValueError, TypeError, ConnectionError, TimeoutError) as exc:
        raise CliError(f"cannot emit {event!r}: {one_line(exc, target.settings)}") from None
    finally:
        await close_bus(bus)


def _describe_emit(event: str, result: EmitResult, settings: BusSettings) -> list[Text]:
    if settings.disabled:
        return [Text(f"{event}: event dispatch is disabled (EVENTBUS_DISABLED); nothing ran")]
    if result.published:
        return [Text(f"{event}: published to {settings.backend} as event {result.event_id}")]
    summary = Text(
        f"{event}: {result.handled} handler(s) ran, {len(result.failures)} failed "
        f"(event id {result.event_id})"
    )
    lines = [summary]
    for failure in result.failures:
        exc = failure.exception
        lines.append(
            Text(
                f"failed: {failure.handler} after {failure.attempts} attempt(s): "
                f"{type(exc).__name__}: {exc}",
                style="red",
            )
        )
    return lines


# ====================================================================== Redis commands
@dead_letters_app.command("list")
def dead_letters_list(
    ctx: typer.Context,
    as_json: JsonFlag = False,
) -> None:
    """List the dead letters (handler failures after their last attempt), oldest first."""
    target = _target(ctx)
    letters = _run(
        with_bus(
            target,
            "dead-letters list",
            lambda bus: bus.dead_letters(),
            in_process=_IN_PROCESS_DEAD_LETTERS,
        )
    )
    if as_json:
        _print_json([_letter_json(letter) for letter in letters])
        return
    console = _console()
    if not letters:
        console.print("No dead letters.")
        return
    console.print(_letters_table(letters, console.width))
    console.print(f"{len(letters)} dead letter(s)")


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


# The letters table's fixed columns: "YYYY-MM-DD" over the time, "Tries", 3 gaps of 2.
_LETTER_FIXED_WIDTH = 10 + 5 + 3 * 2


def _letters_table(letters: list[DeadLetter], width: int) -> Table:
    """Event names, ids and handlers are cut after dots (or underscores) to fit ``width``;
    error messages wrap at spaces."""
    room = max(width - _LETTER_FIXED_WIDTH, 30)
    longest_name = max(len(x.event.name) for x in letters)
    longest_id = max(len(x.event.id) for x in letters)  # uncut when it can be: it is copied
    event_width = min(max(longest_name, longest_id), max(room * 2 // 5, longest_id))
    handler_width = room - event_width
    table = _table()
    table.add_column("Failed at", no_wrap=True)
    table.add_column("Event / id", width=event_width, no_wrap=True)
    table.add_column("Handler / error", width=handler_width, overflow="fold")
    table.add_column("Tries", justify="right", no_wrap=True)
    for letter in letters:
        event = _fitted(letter.event.name, event_width, "cyan")
        event.append("\n").append_text(_fitted(letter.event.id, event_width, "dim"))
        handler = _fitted(letter.handler, handler_width)
        handler.append(f"\n{letter.exception_type}: {letter.message}", style="red")
        when = letter.failed_at.strftime("%Y-%m-%d\n%H:%M:%SZ")  # UTC
        table.add_row(when, event, handler, str(letter.attempts))
    return table


@dead_letters_app.command("replay")
def dead_letters_replay(ctx: typer.Context) -> None:
    """Run each dead letter's handler again; the ones failing again stay dead letters."""
    target = _target(ctx)
    discover_handlers(target.root)  # replayed handlers run in this process
    result = _run(
        with_bus(
            target,
            "dead-letters replay",
            lambda bus: bus.replay_dead_letters(),
            in_process=_IN_PROCESS_DEAD_LETTERS,
        )
    )
    console = _console()
    console.print(f"Replayed {result.handled} dead letter(s): {len(result.failures)} failed again")
    for failure in result.failures:
        exc = failure.exception
        console.print(Text(f"failed: {failure.handler}: {type(exc).__name__}: {exc}", style="red"))
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
    purged = _run(
        with_bus(target, "dead-letters purge", _purge, in_process=_IN_PROCESS_DEAD_LETTERS)
    )
    _console().print(f"Purged {purged} dead letter(s)")


async def _purge(bus: EventBus) -> int:
    return await bus.purge_dead_letters()


# ====================================================================== stats
@app.command()
def stats(
    ctx: typer.Context,
    as_json: JsonFlag = False,
) -> None:
    """What a broker backend reports about the app as a whole (for redis: stream length,
    consumer-group lag, pending entries per consumer, dead letters). Exit code 2 for the
    local backend, whose counters live in the app's process."""
    target = _target(ctx)
    report = _run(with_bus(target, "stats", _stats, in_process=_IN_PROCESS_STATS))
    if as_json:
        _print_json(report)
        return
    table = _table()
    table.add_column("Metric", style="cyan", overflow="fold")
    table.add_column("Value", overflow="fold")
    for key, value in _flatten(report):
        shown = "-" if value is None or value == {} else str(value)
        table.add_row(key, scrub(shown, target.settings.redis_url))
    _console().print(table)


async def _stats(bus: EventBus) -> dict[str, Any]:
    """The backend's health report, whatever its keys, minus those describing this
    process (it only connected: it consumes nothing)."""
    health: Mapping[str, Any] = await bus.backend.health()
    if not health.get("reachable", False):
        reason = health.get("error") or "no reason given"
        raise CliError(f"the {bus.backend.name} backend did not answer: {reason}")
    return {key: value for key, value in health.items() if key not in THIS_PROCESS_KEYS}


def _flatten(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            rows.extend(_flatten(value, f"{name}."))
        else:
            rows.append((name, value))
    return rows
