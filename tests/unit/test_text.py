"""loggable() and as_text(): anything read from outside becomes one printable, bounded
line before it reaches a log."""

from __future__ import annotations

import pytest

from fastapi_opinionated_eventbus._text import as_text, loggable


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("user.created", "user.created"),
        ("évènement 日本 ✓", "évènement 日本 ✓"),  # printable non-ASCII is kept
        ("line\nERROR [EventBus] forged", "line\\x0aERROR [EventBus] forged"),
        ("a\rb\tc\x00d", "a\\x0db\\x09c\\x00d"),
        ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
        ("del\x7f", "del\\x7f"),
        ("c1\x85\x9b", "c1\\x85\\x9b"),  # NEL and CSI: C1 controls
        ("line\u2028para\u2029", "line\\u2028para\\u2029"),
        ("lone\ud800surrogate", "lone\\ud800surrogate"),
    ],
    ids=[
        "plain",
        "non-ascii",
        "newline",
        "c0",
        "escape sequence",
        "del",
        "c1",
        "line separators",
        "lone surrogate",
    ],
)
def test_loggable_escapes_what_could_break_a_log_line(raw: str, shown: str) -> None:
    text = loggable(raw)

    assert text == shown
    assert text.isprintable()
    text.encode("utf-8")  # a log file can take it


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        # A right-to-left override makes a terminal show the rest of the line reversed.
        ("invoice\u202efdp.exe", "invoice\\u202efdp.exe"),
        ("zero\u200bwidth", "zero\\u200bwidth"),
        ("\ufeffbom", "\\ufeffbom"),
        ("tag\U000e0041", "tag\\U000e0041"),
    ],
    ids=["bidi override", "zero width space", "byte order mark", "tag character"],
)
def test_loggable_escapes_invisible_format_characters(raw: str, shown: str) -> None:
    assert loggable(raw) == shown


def test_loggable_output_is_printable_whatever_the_code_points() -> None:
    # The planes with assigned characters, the tags, and samples of the private-use planes.
    ranges = (range(0x30000), range(0xE0000, 0xE0200), range(0xF0000, 0xF0100))
    every = "".join(chr(code) for codes in ranges for code in codes)
    shown = loggable(every, limit=len(every) * 10)
    assert shown.isprintable()
    shown.encode("utf-8")


def test_loggable_decodes_bytes_and_shows_the_undecodable_ones() -> None:
    assert loggable(b"caf\xc3\xa9") == "café"
    assert loggable(b"bad\xff\xfe\n") == "bad\\xff\\xfe\\x0a"


def test_loggable_takes_any_object() -> None:
    assert loggable(42) == "42"
    assert loggable(ValueError("no\nway")) == "no\\x0away"


def test_loggable_caps_the_length_with_a_marker() -> None:
    assert loggable("a" * 200) == "a" * 200
    assert loggable("a" * 250) == "a" * 200 + "...[50 more]"
    assert loggable("abcdef", limit=4) == "abcd...[2 more]"


def test_the_cap_applies_after_escaping() -> None:
    shown = loggable("\n" * 100)  # 400 characters once escaped
    assert shown == "\\x0a" * 50 + "...[200 more]"


def test_as_text() -> None:
    assert as_text("already text") == "already text"
    assert as_text(b"\xe2\x9c\x93 ok") == "✓ ok"
    assert as_text(b"\xff") == "\\xff"
    assert as_text(3.5) == "3.5"
