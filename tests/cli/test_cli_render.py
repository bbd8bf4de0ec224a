"""What the CLI prints from a broker is shown, never obeyed: dead letters and health
reports hold text anyone with write access to the stream or topic may have written."""

from __future__ import annotations

import io

from rich.console import Console

from fastapi_opinionated_eventbus._cli.render import letters_table, stats_table
from fastapi_opinionated_eventbus._core.dead_letters import DeadLetter
from fastapi_opinionated_eventbus._core.envelope import EventEnvelope

HOSTILE = "boom\x1b]0;pwned\x07\x1b[2J\rforged"


def _rendered(table: object) -> str:
    out = io.StringIO()
    Console(file=out, color_system=None, width=200).print(table)
    return out.getvalue()


def test_a_dead_letter_s_handler_and_error_reach_the_terminal_escaped() -> None:
    letter = DeadLetter(
        event=EventEnvelope("job.run", (), {}),
        handler=f"app.jobs:{HOSTILE}",
        exception_type=f"Error{HOSTILE}",
        message=f"first line\n{HOSTILE}",
        traceback="",
        attempts=3,
    )

    shown = _rendered(letters_table([letter], 200))

    assert "\x1b" not in shown and "\r" not in shown
    assert "\\x1b[2J" in shown
    assert "first line" in shown  # a message's own lines stay lines


def test_a_health_report_s_keys_and_values_reach_the_terminal_escaped() -> None:
    report = {"pending_by_consumer": {HOSTILE: 1}, "error": HOSTILE}

    shown = _rendered(stats_table(report, lambda text: text))

    assert "\x1b" not in shown and "\r" not in shown
    assert shown.count("\\x1b[2J") == 2
