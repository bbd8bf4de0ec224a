"""``fastapi-opinionated-eventbus``: inspect and exercise an app's event bus from its root.

Exit codes: 0 success; 1 a problem found in the app (``doctor`` errors, failed handlers);
2 the command could not run (not an app directory, plugin not enabled, bad input,
the backend unreachable, an event nothing subscribes to, a command the backend does not
support).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from .._core.bus import EventBus
from .._core.errors import EventBusError
from .._core.registry import check_event_name
from .._core.results import EmitResult
from .._core.settings import BusSettings
from .asyncapi import asyncapi_command
from .connect import (
    THIS_PROCESS_KEYS,
    Target,
    close_bus,
    load_target,
    one_line,
    open_bus,
    with_bus,
    without_secrets,
)
from .dead_letters import dead_letters_app
from .discovery import (
    ENABLE_COMMAND,
    CliError,
    discover_handlers,
    enabled_plugins,
    enter_app,
    installed_version,
    plugin_enabled,
    warn,
)
from .doctor import diagnose
from .outbox import outbox_app
from .render import (
    console,
    findings_report,
    handlers_table,
    print_json,
    stats_table,
)
from .scan import unsubscribed_emit

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
app.add_typer(dead_letters_app, name="dead-letters")
app.add_typer(outbox_app, name="outbox")
app.command("asyncapi")(asyncapi_command)  # options and body in asyncapi.py

# For a backend that runs handlers in the app's own process (local): its counters live in
# that process's memory, out of this one's reach.
_IN_PROCESS_STATS = (
    "the {backend} backend keeps its counters in the memory of the app's process, out of "
    "this command's reach: read them in the app with `await eventbus_api().health()` or on "
    "the introspection endpoint (introspection_path option); `handlers` lists the "
    "subscriptions. With a broker backend (EVENTBUS_BACKEND=redis or kafka) this command "
    "reads the broker"
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


# ====================================================================== running
def _enter_app(ctx: typer.Context) -> Path:
    return enter_app(ctx.obj)


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
        print_json([info.to_json() for info in infos])
        return
    out = console()
    if not infos:
        out.print("No handlers found under app/domains.")
        return
    out.print(handlers_table(infos, out.width))
    events = len({info.event for info in infos})
    out.print(f"{len(infos)} handler(s), {events} event name(s) or pattern(s)")


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
    findings_report(findings, as_json)
    if any(f.level == "error" for f in findings):
        raise typer.Exit(1)


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
    result = asyncio.run(_emit(target, event, args))
    out = console()
    for line in _describe_emit(event, result, target.settings):
        out.print(line)
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


# ====================================================================== stats
@app.command()
def stats(
    ctx: typer.Context,
    as_json: JsonFlag = False,
) -> None:
    """What a broker backend reports about the app as a whole (for redis: stream length,
    consumer-group lag, pending entries per consumer, dead letters; for kafka: topics,
    group, partitions, committed offsets, dead letters). Exit code 2 for the
    local backend, whose counters live in the app's process."""
    target = _target(ctx)
    report = asyncio.run(with_bus(target, "stats", _stats, in_process=_IN_PROCESS_STATS))
    if as_json:
        print_json(report)
        return
    console().print(stats_table(report, lambda text: without_secrets(text, target.settings)))


async def _stats(bus: EventBus) -> dict[str, Any]:
    """The backend's health report, whatever its keys, minus those describing this
    process (it only connected: it consumes nothing)."""
    health: Mapping[str, Any] = await bus.backend.health()
    if not health.get("reachable", False):
        reason = health.get("error") or "no reason given"
        raise CliError(f"the {bus.backend.name} backend did not answer: {reason}")
    return {key: value for key, value in health.items() if key not in THIS_PROCESS_KEYS}
