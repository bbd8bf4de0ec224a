"""A bus like the app's, for commands that publish or inspect: every broker operation of
the CLI goes through the backend, connected (never started: this process must not consume
the app's events) with a short connect timeout."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._core import declarations
from .._core.bus import EventBus
from .._core.errors import ConfigurationError
from .._core.settings import BusSettings
from .._secrets import mapping_secrets, redact, scrub
from .discovery import CliError, app_title, require_plugin_enabled, settings_from_env, warn

__all__ = [
    "CLI_CONNECT_TIMEOUT",
    "THIS_PROCESS_KEYS",
    "Target",
    "close_bus",
    "load_target",
    "one_line",
    "open_bus",
    "target_of",
    "with_bus",
    "without_secrets",
]


# A command answers quickly: a broker silent this long is reported, not waited for the way
# the app's startup waits for it (``connect_timeout``, 10 s by default).
CLI_CONNECT_TIMEOUT = 3.0


@dataclass(frozen=True, slots=True)
class Target:
    """An app directory, and what it takes to build a bus like the app's."""

    root: Path
    settings: BusSettings
    app_name: str | None
    """The app's title (backends derive their default key or topic names from it); None
    when ``main.py`` does not give it literally."""


def target_of(root: Path, settings: BusSettings) -> Target:
    """The app at ``root`` with ``settings``, connecting with the CLI's short timeout."""
    quick = settings.model_copy(
        update={"connect_timeout": min(settings.connect_timeout, CLI_CONNECT_TIMEOUT)}
    )
    return Target(root, quick, app_title(root))


def load_target(root: Path) -> Target:
    """The app's target for a command that needs the plugin enabled."""
    require_plugin_enabled(root)
    return target_of(root, settings_from_env())


# Health keys about the reporting process itself, not the app: a CLI process that only
# connected would report its own (an empty in-flight count, its own consumer name, no
# partitions assigned, nothing held).
THIS_PROCESS_KEYS = frozenset({"consumer", "in_flight", "assigned_partitions", "held"})


async def open_bus(
    target: Target,
    *,
    in_process: str | None = None,
    on_warning: Callable[[str], None] = warn,
) -> EventBus:
    """A bus like the plugin's, subscribed to every discovered handler, its backend
    connected but not started: this process publishes and inspects, and must not take the
    app's events. ``in_process`` is the error for a backend that runs handlers in the
    app's own process (``local``), for commands that make no sense there.
    """
    from fastapi_opinionated.app import App

    settings = target.settings
    try:
        bus = EventBus(settings=settings, app_name=target.app_name)
    except (ImportError, ConfigurationError) as exc:
        raise CliError(f"cannot use the {settings.backend} backend: {exc}") from None
    backend = bus.backend
    if in_process is not None and not backend.distributed:
        bus.close()
        raise CliError(in_process.format(backend=backend.name))
    # Handlers that emit follow-up events reach the bus through eventbus_api().
    App.plugin.eventbus = bus
    declarations.attach(bus)
    try:
        with _retries_unlogged():
            await bus.connect()
    except Exception as exc:
        await close_bus(bus)
        raise CliError(
            f"cannot connect to the {backend.name} backend: {one_line(exc, settings)}"
        ) from None
    if target.app_name is None and backend.distributed:
        on_warning(
            f"main.py has no App.create() with a literal title: the {backend.name} backend "
            "uses its default names here, not the ones derived from the app's title; if the "
            "app's differ, set them in the environment (e.g. EVENTBUS_REDIS_PREFIX, or "
            "EVENTBUS_KAFKA_TOPIC and EVENTBUS_KAFKA_GROUP_ID)"
        )
    return bus


@contextmanager
def _retries_unlogged() -> Iterator[None]:
    """Without ``-v``, hide the backend's "not reachable yet, retrying" warnings: the error
    that ends a failed connect says it all, on the one line a usage error gets."""
    root_logger = logging.getLogger()
    level = root_logger.level
    if level == logging.WARNING:
        root_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root_logger.setLevel(level)


async def with_bus[T](
    target: Target,
    what: str,
    action: Callable[[EventBus], Awaitable[T]],
    **open_options: Any,
) -> T:
    """``action(bus)`` on a freshly opened bus, closed afterwards; failures become one line."""
    bus = await open_bus(target, **open_options)
    try:
        return await action(bus)
    except CliError:
        raise
    except Exception as exc:
        raise CliError(f"{what} failed: {one_line(exc, target.settings)}") from None
    finally:
        await close_bus(bus)


async def close_bus(bus: EventBus) -> None:
    """Close a bus from :func:`open_bus`; handlers declared later (a module imported
    afterwards) are no longer routed to it."""
    try:
        await bus.aclose()
    finally:
        declarations.detach(bus)


def one_line(exc: BaseException, settings: BusSettings) -> str:
    """``Type: message`` on one line, without the Redis password or Kafka secrets."""
    text = f"{type(exc).__name__}: {exc}"
    return without_secrets(" ".join(text.split()), settings)


def without_secrets(text: str, settings: BusSettings) -> str:
    """``text`` without the Redis password and the secret values of kafka_security."""
    return redact(scrub(text, settings.redis_url), mapping_secrets(settings.kafka_security))
