"""Plugin options: keyword arguments of ``App.configurePlugin`` or ``EVENTBUS_*`` variables."""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import ConfigurationError
from .retry import RetryPolicy

__all__ = ["BusSettings", "load_settings"]


class BusSettings(BaseSettings):
    """Every option of the bus. Explicit options win over ``EVENTBUS_<NAME>`` variables."""

    model_config = SettingsConfigDict(env_prefix="EVENTBUS_", frozen=True, extra="ignore")

    disabled: bool = False
    """Turn every emit into a no-op (logged once): for tests and maintenance."""
    strict: bool = False
    """Raise an ExceptionGroup of handler failures from ``emit`` (after all handlers ran)."""
    max_pending: int = Field(10_000, gt=0)
    """Background events in flight before emit_nowait raises EventBusOverloaded."""
    shutdown_timeout: float = Field(10.0, ge=0)
    """Seconds shutdown waits for background events before cancelling and reporting them."""
    retry: RetryPolicy | None = None
    """Default retry policy of handlers that do not set their own (default: no retry)."""
    max_chain_depth: int = Field(32, gt=0)
    """Deepest allowed nesting of emits from handlers: catches handler cycles."""
    thread_pool_size: int | None = Field(None, gt=0)
    """Worker threads for sync handlers (default: min(32, CPUs + 4))."""
    dead_letter_capacity: int = Field(1_000, gt=0)
    """Dead letters kept in memory; the oldest are dropped (and counted) beyond it."""
    pattern_cache_size: int = Field(4_096, gt=0)
    """Distinct event names whose resolved handlers are cached."""


OPTION_NAMES = tuple(BusSettings.model_fields)


def load_settings(**options: Any) -> BusSettings:
    """Validate options (and the environment) into settings, or raise ConfigurationError."""
    unknown = sorted(set(options) - set(OPTION_NAMES))
    if unknown:
        raise ConfigurationError(
            f"Unknown EventBusPlugin option(s): {', '.join(map(repr, unknown))}. "
            f"Valid options: {', '.join(OPTION_NAMES)}."
        )
    try:
        return BusSettings(**options)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            option = str(error["loc"][0]) if error["loc"] else "?"
            source = (
                "option" if option in options else f"environment variable EVENTBUS_{option.upper()}"
            )
            problems.append(f"{source} {option!r}: {error['msg']} (got {error.get('input')!r})")
        raise ConfigurationError(
            "Invalid EventBusPlugin configuration: " + "; ".join(problems)
        ) from None
