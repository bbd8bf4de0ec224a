"""Text from outside (stream entries, records, rows, headers) made safe to show.

Anything a broker hands us may hold bytes that are not UTF-8, newlines or terminal escape
sequences: written into a log line as is, a newline forges a second line (``ERROR
[EventBus] ...``) and an escape sequence rewrites the terminal. Every such value goes
through :func:`loggable` before it reaches a log line or an error message.
"""

from __future__ import annotations

__all__ = ["as_text", "loggable"]

# C0 and C1 control characters, DEL, and the Unicode line/paragraph separators: each is
# shown as an escape instead.
_UNSAFE = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))}
_UNSAFE |= {0x2028: "\\u2028", 0x2029: "\\u2029"}


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def as_text(value: object) -> str:
    """``value`` as text: bytes decoded as UTF-8 (undecodable bytes shown as ``\\xNN``)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return value if isinstance(value, str) else str(value)


def loggable(value: object, limit: int = 200) -> str:
    """``value`` as one printable line of at most ``limit`` characters (plus a marker)."""
    text = as_text(value)
    if not text.isprintable():
        # Lone surrogates are not printable either: they cannot be encoded to a log file.
        text = text.translate(_UNSAFE).encode("utf-8", "backslashreplace").decode("utf-8")
        if not text.isprintable():
            # Rarer, and invisible: format characters such as bidi overrides (they reorder
            # what a terminal shows), zero-width ones, private-use and unassigned ones.
            text = "".join(char if char.isprintable() else _escape(char) for char in text)
    if len(text) > limit:
        return f"{text[:limit]}...[{len(text) - limit} more]"
    return text
