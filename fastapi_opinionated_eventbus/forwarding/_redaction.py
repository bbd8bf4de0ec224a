"""A forwarder's secrets, kept out of its errors and out of its HTTP clients' log lines.

The errors are ours to word; the log lines are not: httpx logs every request's full URL
at INFO (a webhook's ``?token=`` with it), and botocore logs the signed request, access
key id and session token included, at DEBUG. A filter on exactly those loggers redacts
the secrets of every live forwarder from their records; other records pass untouched.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Iterable

from .._secrets import redact

__all__ = ["Secrets"]

# The loggers that may write a forwarder's secret: filters apply to a logger's own records
# only, not to its children's, so each is named.
_LOGGERS = ("httpx", "botocore.endpoint", "botocore.auth", "botocore.awsrequest")


class Secrets:
    """The secret strings of one forwarder, and the environment variables that may hold
    more (read when redacting: they can change after the forwarder was made)."""

    def __init__(self, values: Iterable[str] = (), *, environment: Iterable[str] = ()) -> None:
        self._values = {value for value in values if value}
        self._environment = tuple(environment)
        _filter.watch(self)

    def add(self, values: Iterable[str | None]) -> None:
        self._values.update(value for value in values if value)

    def values(self) -> set[str]:
        found = (os.environ.get(name) for name in self._environment)
        return self._values | {value for value in found if value}

    def redact(self, text: str) -> str:
        return redact(text, self.values())

    def explain(self, exc: BaseException) -> str:
        """``Type: message`` of ``exc``, redacted: for our own error messages."""
        return f"{type(exc).__name__}: {self.redact(str(exc)) or 'no detail'}"


class _RedactingFilter(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self._watched: weakref.WeakSet[Secrets] = weakref.WeakSet()
        self._installed = False

    def watch(self, secrets: Secrets) -> None:
        self._watched.add(secrets)
        if not self._installed:
            self._installed = True
            for name in _LOGGERS:
                logging.getLogger(name).addFilter(self)

    def filter(self, record: logging.LogRecord) -> bool:
        values = {value for secrets in list(self._watched) for value in secrets.values()}
        if values:
            message = record.getMessage()
            redacted = redact(message, values)
            if redacted != message:
                record.msg, record.args = redacted, None
        return True


_filter = _RedactingFilter()
