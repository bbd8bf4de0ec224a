"""``asyncapi``: the AsyncAPI 3.0.0 document of the app in this directory.

The app's handlers are discovered as ``handlers`` discovers them (app/domains imported in
the core's metadata mode), subscribed to a bus built like the app's from the
``EVENTBUS_*`` variables (never connected: the servers come from the backend's settings),
and the code is scanned as ``doctor`` scans it, every file. ``main.py`` is read, not run:
the title and version are the literal ones it passes to ``App.create()``.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from .._core import declarations
from .._core.bus import EventBus
from .._core.errors import ConfigurationError
from .._observability.asyncapi import asyncapi_document, dump_document
from .._observability.catalog import build_catalog, describe_servers, typed_event_names
from .discovery import (
    ENABLE_COMMAND,
    CliError,
    app_title,
    app_version,
    discover_handlers,
    enabled_plugins,
    enter_app,
    plugin_enabled,
    settings_from_env,
    warn,
)
from .scan import scan_app

__all__ = ["asyncapi_command", "build_document"]


class Format(StrEnum):
    JSON = "json"
    YAML = "yaml"


def asyncapi_command(
    ctx: typer.Context,
    fmt: Annotated[
        Format | None,
        typer.Option(
            "--format",
            help="json or yaml (default: from the output file's suffix, else json).",
            show_default=False,
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", metavar="FILE", help="Write to FILE instead of stdout."),
    ] = None,
    exclude: Annotated[
        list[str] | None,
        typer.Option(
            metavar="GLOB",
            help="Skip files matching this glob when looking for emits (repeatable).",
        ),
    ] = None,
) -> None:
    """Print the AsyncAPI 3.0.0 document of the app's events: a channel per event name or
    pattern, a receive operation per handler, a send operation per literal emit."""
    # The output path is the user's, relative to where they ran the command.
    target = None if output is None else output.resolve()
    root = enter_app(ctx.obj)
    document = build_document(root, exclude or ())
    if fmt is None:
        as_yaml = target is not None and target.suffix in (".yaml", ".yml")
    else:
        as_yaml = fmt is Format.YAML
    text = dump_document(document, as_yaml=as_yaml)
    if target is None:
        typer.echo(text, nl=False)
        return
    try:
        target.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot write {target}: {exc.strerror or exc}") from None
    typer.echo(
        f"wrote {target}: {len(document['channels'])} channel(s), "
        f"{len(document['operations'])} operation(s)"
    )


def build_document(root: Path, exclude: tuple[str, ...] | list[str] = ()) -> dict[str, Any]:
    """The AsyncAPI document of the app at ``root`` (the current directory)."""
    if not plugin_enabled(enabled_plugins(root)):
        warn(f"the EventBus plugin is not enabled, these handlers never run: `{ENABLE_COMMAND}`")
    settings = settings_from_env()
    discover_handlers(root)
    title = app_title(root)
    if title is None:
        title = root.name
        warn(f"main.py has no App.create() with a literal title: the document says {title!r}")
    try:
        bus = EventBus(settings=settings, app_name=title)
    except (ImportError, ConfigurationError) as exc:
        raise CliError(f"cannot use the {settings.backend} backend: {exc}") from None
    try:
        declarations.attach(bus)
        schemas = bus.schemas()
        catalog = build_catalog(
            bus.subscriptions(),
            schemas,
            scan_app(root, typed_event_names(schemas), exclude),
            root,
            title=title,
            version=app_version(root) or "unknown",
            backend=settings.backend,
            servers=describe_servers(bus.backend),
        )
        return asyncapi_document(catalog)
    finally:
        declarations.detach(bus)
        bus.close()
