"""Outside text as it may appear in a message or a log line: escaped and short.

A type name, a tag or a value read from a stream entry is whatever its writer chose: shown
raw, a newline or an ANSI escape in it could forge a log line, and its length is unbounded.
"""

from __future__ import annotations

__all__ = ["clipped", "shown"]

LIMIT = 120


def shown(value: object, limit: int = LIMIT) -> str:
    """``repr(value)``, which escapes control characters, line breaks and lone surrogates,
    cut to about ``limit`` characters with a note of the full length."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


def clipped(text: str, limit: int = 4 * LIMIT) -> str:
    """``text`` (an exception's message, say) on one line: cut to about ``limit``
    characters, with the characters that are not printable escaped as in ``repr``."""
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text)} characters)"
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
