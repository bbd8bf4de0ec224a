"""How the CLI shows things: tables that fit the terminal, the doctor's report, JSON.

Dotted names and paths have no spaces for rich to wrap at, and rich folds them wherever a
column ends (``handle_pay``/``ment_result``): :func:`cut` breaks them after a dot instead.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .._core.dead_letters import DeadLetter
from .._text import loggable
from .discovery import HandlerInfo
from .doctor import Finding

__all__ = [
    "console",
    "cut",
    "findings_report",
    "handlers_table",
    "letters_table",
    "no_color",
    "plain_table",
    "print_json",
    "printable",
    "stats_table",
]


def printable(text: str) -> str:
    """Text read from a broker (a dead letter's handler and error, a health report) as a
    terminal may show it: escape sequences and other control characters escaped (rich
    writes them as they are), line breaks kept."""
    return "\n".join(loggable(line, 2_000) for line in text.split("\n"))


def no_color() -> bool:
    return bool(os.environ.get("NO_COLOR"))


def console() -> Console:
    # Rich keeps bold/dim escapes under NO_COLOR; no colour system means no escapes at all.
    # The width follows the terminal (COLUMNS when not a terminal, else 80).
    return Console(color_system=None if no_color() else "auto", highlight=False)


def print_json(data: object) -> None:
    # Plain print: rich would wrap long lines and break the JSON.
    print(json.dumps(data, indent=2, default=str))


# Columns right of the handler's, gaps included: what a handler name has left to fit in.
_OPTION_COLUMNS_WIDTH = 36


def plain_table() -> Table:
    return Table(
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
        header_style="bold",
    )


def handlers_table(infos: list[HandlerInfo], width: int) -> Table:
    """One row per event name or pattern, then one per handler, in the order they run."""
    table = plain_table()
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
        parts = [(line, "") for line in cut(f"{module}:", width, _NAME_BREAKS)]
        parts += [(line, "bold") for line in cut(qualname, width, _NAME_BREAKS)]
    parts += [(line, "dim") for line in cut(info.location, width, ("/", "._"))]
    for dependency in info.dependencies:  # "repo=Depends(app.deps:get_repo)", a line each
        parts += [(line, "green") for line in cut(dependency, width, _NAME_BREAKS)]
    cell = Text()
    for index, (text, style) in enumerate(parts):
        joined = index == 1 and len(info.handler) <= width  # qualname after its module
        cell.append(text if joined else ("\n  " if index else "  ") + text, style=style)
    return cell


# Where a dotted name (or an event id) may be cut: after a dot or colon, else after an
# underscore or a dash.
_NAME_BREAKS = (".:", "_-")


def cut(text: str, width: int, breaks: Sequence[str]) -> list[str]:
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
    return Text("\n".join(cut(text, width, _NAME_BREAKS)), style=style)


_LABELS = {"ok": ("ok", "green"), "warning": ("warn", "yellow"), "error": ("error", "bold red")}


def findings_report(findings: list[Finding], as_json: bool) -> None:
    errors = sum(f.level == "error" for f in findings)
    warnings = sum(f.level == "warning" for f in findings)
    if as_json:
        data = [f.to_json() for f in findings]
        print_json({"errors": errors, "warnings": warnings, "findings": data})
        return
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True)
    grid.add_column(overflow="fold")
    for finding in findings:
        label, style = _LABELS[finding.level]
        where = f"{finding.location}: " if finding.location else ""
        grid.add_row(Text(label, style=style), Text(where + finding.message))
    out = console()
    out.print(grid)
    out.print(f"{errors} error(s), {warnings} warning(s)")


# The letters table's fixed columns: "YYYY-MM-DD" over the time, "Tries", 3 gaps of 2.
_LETTER_FIXED_WIDTH = 10 + 5 + 3 * 2


def letters_table(letters: list[DeadLetter], width: int) -> Table:
    """Event names, ids and handlers are cut after dots (or underscores) to fit ``width``;
    error messages wrap at spaces."""
    room = max(width - _LETTER_FIXED_WIDTH, 30)
    longest_name = max(len(x.event.name) for x in letters)
    longest_id = max(len(x.event.id) for x in letters)  # uncut when it can be: it is copied
    event_width = min(max(longest_name, longest_id), max(room * 2 // 5, longest_id))
    handler_width = room - event_width
    table = plain_table()
    table.add_column("Failed at", no_wrap=True)
    table.add_column("Event / id", width=event_width, no_wrap=True)
    table.add_column("Handler / error", width=handler_width, overflow="fold")
    table.add_column("Tries", justify="right", no_wrap=True)
    for letter in letters:
        event = _fitted(printable(letter.event.name), event_width, "cyan")
        event.append("\n").append_text(_fitted(printable(letter.event.id), event_width, "dim"))
        handler = _fitted(printable(letter.handler), handler_width)
        error = printable(f"{letter.exception_type}: {letter.message}")
        handler.append(f"\n{error}", style="red")
        when = letter.failed_at.strftime("%Y-%m-%d\n%H:%M:%SZ")  # UTC
        table.add_row(when, event, handler, str(letter.attempts))
    return table


def stats_table(report: dict[str, Any], clean: Callable[[str], str]) -> Table:
    """A backend's health report, nested keys flattened (``committed_offsets.0``); every
    value passes through ``clean`` (secrets out), then :func:`printable`."""
    table = plain_table()
    table.add_column("Metric", style="cyan", overflow="fold")
    table.add_column("Value", overflow="fold")
    for key, value in _flatten(report):
        shown = "-" if value is None or value == {} else str(value)
        table.add_row(printable(key), printable(clean(shown)))
    return table


def _flatten(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            rows.extend(_flatten(value, f"{name}."))
        else:
            rows.append((name, value))
    return rows
