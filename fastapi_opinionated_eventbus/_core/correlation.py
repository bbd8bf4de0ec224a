"""Correlation ids: one per HTTP request (or per root event), carried by every event."""

from __future__ import annotations

import re
import secrets
from contextvars import ContextVar

__all__ = [
    "HEADER",
    "INCOMING_HEADERS",
    "is_valid_correlation_id",
    "new_correlation_id",
    "request_correlation_id",
]

HEADER = b"x-correlation-id"
INCOMING_HEADERS = (b"x-correlation-id", b"x-request-id")

# What a client may send: short, and nothing that could forge a log line or a header.
_VALID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}")

request_correlation_id: ContextVar[str | None] = ContextVar(
    "eventbus_request_correlation_id", default=None
)


def new_correlation_id() -> str:
    return secrets.token_hex(16)


def is_valid_correlation_id(text: str) -> bool:
    """Whether ``text`` is a correlation id that may go into a log line as it is."""
    return _VALID.fullmatch(text) is not None


def accept_header(value: bytes) -> str | None:
    """The header value as a correlation id, or None when it is not a safe one."""
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        return None
    return text if _VALID.fullmatch(text) else None
