"""The Redis client, and waiting politely for a Redis that went away."""

from __future__ import annotations

import traceback
from typing import Any

from fastapi_opinionated.shared.logger import ns_logger
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, AuthorizationError, ConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..._secrets import mask_url, scrub, url_problem
from ..backoff import Backoff

logger = ns_logger("EventBus.redis")

__all__ = [
    "Backoff",
    "Entry",
    "Reconnecting",
    "describe_error",
    "entries_of",
    "is_fatal",
    "is_transient",
    "make_client",
]

# How long a blocking read waits before it looks around (stop requested, no handlers).
BLOCK_SECONDS = 2.0


def make_client(url: str, *, connect_timeout: float) -> Redis:
    """An asyncio client for ``url`` (``redis://``, ``rediss://`` for TLS, ``unix://``).

    redis-py's own retries are off: the backend decides how long to wait for Redis (the
    publish and connect timeouts), and hidden retries would stretch both.
    """
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(
            f"unsupported Redis URL {mask_url(url)!r}: use redis://, rediss:// (TLS) or unix://"
        )
    try:
        return Redis.from_url(
            url,
            decode_responses=False,
            socket_connect_timeout=min(connect_timeout, 5.0),
            # Longer than a blocking read; notices a server that vanished without a word.
            socket_timeout=BLOCK_SECONDS + 10.0,
            socket_keepalive=True,
            retry=Retry(NoBackoff(), 0),
            client_name="fastapi-opinionated-eventbus",
        )
    except ValueError:
        # Never redis-py's message: it quotes the part it could not parse, which may be a
        # piece of the password.
        problem = url_problem(url) or "redis-py cannot parse it (host, port or database)"
        raise ValueError(f"invalid Redis URL {mask_url(url)!r}: {problem}") from None


def is_transient(exc: BaseException) -> bool:
    """A lost or refused connection, or a timeout: waiting may help."""
    if isinstance(exc, AuthenticationError | AuthorizationError):
        return False
    return isinstance(exc, ConnectionError | RedisTimeoutError | OSError | TimeoutError)


def is_fatal(exc: BaseException) -> bool:
    """A wrong password or missing permission: waiting will not help."""
    return isinstance(exc, AuthenticationError | AuthorizationError)


def describe_error(exc: BaseException, url: str, *, with_traceback: bool = False) -> str:
    """``Type: message`` (and the traceback), with the URL's password scrubbed out."""
    text = f"{type(exc).__name__}: {exc}"
    if with_traceback:
        # The core's log formatter drops exc_info: the traceback must be in the text.
        text += "\n" + "".join(traceback.format_exception(exc)).rstrip()
    return scrub(text, url)


Entry = tuple[bytes, dict[bytes, bytes]]


def entries_of(reply: Any) -> list[Entry]:
    """The entries of an XREAD/XREADGROUP reply on one stream."""
    if not reply:
        return []
    return list(reply[0][1])


class Reconnecting:
    """Logs a lost connection once, and its return once, with the URL masked."""

    def __init__(self, url: str, what: str) -> None:
        self._url = url
        self._what = what
        self.down = False
        self.backoff = Backoff(initial=0.05, maximum=2.0)

    async def failed(self, exc: Exception) -> None:
        if not self.down:
            self.down = True
            logger.warning(
                f"{self._what}: lost Redis at {mask_url(self._url)} "
                f"({describe_error(exc, self._url)}); reconnecting with backoff"
            )
        await self.backoff.sleep()

    def worked(self) -> None:
        if self.down:
            self.down = False
            logger.info(f"{self._what}: reconnected to Redis at {mask_url(self._url)}")
        self.backoff.reset()
