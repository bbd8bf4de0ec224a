"""Plugin options: keyword arguments of ``App.configurePlugin`` or ``EVENTBUS_*`` variables."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from .._secrets import MASK, mask_mapping, mask_url, url_problem
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

    # ---------------------------------------------------------------- backend
    backend: str = "local"
    """``local``: handlers run in this process. ``redis`` (Redis Streams) and ``kafka``:
    events go through the broker and are handled once by the app as a whole (needs the
    ``[redis]`` or ``[kafka]`` extra). Other names come from packages that add a backend
    (entry points)."""
    backend_options: dict[str, Any] = Field(default_factory=dict)
    """Options of a backend added by another package, handed to it untouched."""
    redis_url: str = "redis://localhost:6379/0"
    """``redis://``, ``rediss://`` (TLS) or ``unix://`` URL; its password never appears in
    logs."""
    redis_prefix: str | None = None
    """Key prefix; default derived from the app's title, so two apps on one Redis don't mix."""
    redis_group: str = "eventbus"
    """Consumer group: every process of one app shares it."""
    redis_consumer: str | None = None
    """This process's consumer name (default ``<host>:<pid>``); unique per process."""
    redis_batch_size: int = Field(64, gt=0)
    """Entries read per XREADGROUP call."""
    redis_concurrency: int = Field(64, gt=0)
    """Entries whose handlers may be in flight at once in this process."""
    visibility_timeout: float = Field(30.0, gt=0)
    """Seconds before an entry left pending by a silent consumer is claimed by another."""
    max_deliveries: int = Field(5, gt=0)
    """Deliveries of one entry before it goes to the dead-letter stream (or topic)."""
    max_stream_length: int = Field(1_000_000, gt=0)
    """Approximate cap of the events stream (XADD MAXLEN ~)."""
    publish_timeout: float = Field(5.0, gt=0)
    """Seconds ``emit`` waits for the broker to store an event before BackendUnavailable."""
    connect_timeout: float = Field(10.0, gt=0)
    """Seconds startup keeps retrying an unreachable broker (or outbox database) before
    failing."""

    # ---------------------------------------------------------------- kafka
    kafka_bootstrap_servers: str = "localhost:9092"
    """``host:port`` of one or more brokers, comma-separated (a list is accepted too)."""
    kafka_topic: str | None = None
    """The events topic; default ``<prefix>.events``, the prefix derived from the app title."""
    kafka_dead_letter_topic: str | None = None
    """The dead-letter topic; default ``<topic>.dlq``."""
    kafka_group_id: str | None = None
    """The consumer group every process of the app joins; default: the prefix."""
    kafka_client_id: str | None = None
    """The client id the broker sees (logs, quotas); default: the prefix."""
    kafka_partitions: int = Field(6, gt=0)
    """Partitions of the events topic when the backend creates it."""
    kafka_replication_factor: int | None = Field(None, gt=0)
    """Replicas of the topics the backend creates; default: min(3, brokers in the cluster)."""
    kafka_create_topics: bool = True
    """Create the events and dead-letter topics at startup when they are missing."""
    kafka_concurrency: int = Field(64, gt=0)
    """Records whose handlers may run at once in this process."""
    kafka_security: dict[str, Any] = Field(default_factory=dict)
    """TLS/SASL settings of the aiokafka clients (``security_protocol``, ``sasl_*``,
    ``ssl_context``, or ``ssl_cafile``/``ssl_certfile``/``ssl_keyfile``/``ssl_password``);
    secret values never appear in logs, errors, the CLI or the introspection endpoint."""
    kafka_consumer_options: dict[str, Any] = Field(default_factory=dict)
    """More keyword arguments of ``AIOKafkaConsumer`` (e.g. ``session_timeout_ms``)."""
    kafka_producer_options: dict[str, Any] = Field(default_factory=dict)
    """More keyword arguments of ``AIOKafkaProducer`` (e.g. ``linger_ms``)."""

    # ---------------------------------------------------------------- transactional outbox
    outbox_url: str | None = None
    """The outbox relay's own database URL (SQLAlchemy, async driver), e.g.
    ``postgresql+asyncpg://user:pw@host/db`` or ``sqlite+aiosqlite:///./app.db``; None: the
    outbox is off. Needs the ``[outbox]`` extra; its password never appears in logs."""
    outbox_table: str = "eventbus_outbox"
    """The outbox table's name."""
    outbox_poll_interval: float = Field(1.0, gt=0)
    """Seconds between the relay's polls for rows committed by other processes (or left by
    a crash); commits in this process wake it at once."""
    outbox_batch_size: int = Field(100, gt=0, le=10_000)
    """Rows the relay claims and dispatches at a time."""
    outbox_keep: bool = False
    """Keep dispatched rows (marked with ``dispatched_at``) for audit instead of deleting
    them."""
    outbox_create_table: bool = True
    """Create the outbox table (and its indexes) at startup when it is missing."""

    # ---------------------------------------------------------------- forwarding
    forward: Any = ()
    """Forward events to other services: ``Forward(...)`` objects or ``(event, forwarder)``
    pairs (see ``fastapi_opinionated_eventbus.forwarding``), subscribed when the bus is
    built. Objects built in code: no environment variable."""

    # ---------------------------------------------------------------- observability
    metrics: Any = None
    """``"prometheus"`` or a collector instance (see observability); None: no metrics."""
    metrics_max_event_names: int = Field(500, gt=0)
    """Event names that get their own ``event`` label (emitted, lost); later ones are
    counted under ``event="(other)"``, so dynamic names cannot grow the series without
    bound."""
    metrics_path: str | None = None
    """Mount the Prometheus text endpoint here (e.g. ``/metrics``)."""
    tracing: bool = False
    """OpenTelemetry spans per emit and per handler (needs the ``[otel]`` extra)."""
    introspection_path: str | None = None
    """Mount a read-only JSON endpoint describing the bus (e.g. ``/_eventbus``), and the
    event catalog's page at ``<introspection_path>/ui``."""
    asyncapi_path: str | None = None
    """Mount the AsyncAPI 3.0.0 document of the app's events here (e.g. ``/asyncapi.json``;
    a path ending in ``.yaml`` or ``.yml`` serves YAML)."""
    dependencies: Any = None
    """FastAPI dependencies (``[Depends(require_admin)]``) run before every endpoint the
    plugin mounts: metrics, introspection and its page, the AsyncAPI document."""

    @field_validator("metrics_path", "introspection_path", "asyncapi_path")
    @classmethod
    def _endpoint_path(cls, path: str | None) -> str | None:
        if path is None:
            return None
        if not _ENDPOINT_PATH.fullmatch(path):
            raise ValueError(
                "must be a URL path starting with '/', such as '/_eventbus', without a "
                "trailing '/', spaces, '?' or '#'"
            )
        return path

    @field_validator("dependencies")
    @classmethod
    def _dependencies(cls, value: Any) -> tuple[Any, ...] | None:
        from fastapi import params

        if value is None:
            return None
        if isinstance(value, list | tuple) and all(isinstance(d, params.Depends) for d in value):
            return tuple(value)
        raise ValueError(
            "must be a list of FastAPI dependencies, such as [Depends(require_admin)] "
            "(from fastapi import Depends)"
        )

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, name: str) -> str:
        from ..backends.factory import backend_names

        known = backend_names()
        if name not in known:
            raise ValueError(
                f"unknown backend {name!r}; known backends: {', '.join(map(repr, known))} "
                "(a package can add one through the entry-point group "
                "'fastapi_opinionated_eventbus.backends')"
            )
        return name

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, url: str) -> str:
        if not url.startswith(("redis://", "rediss://", "unix://")):
            scheme = url.partition("://")[0] if "://" in url else "no scheme"
            raise ValueError(
                f"must start with redis://, rediss:// (TLS) or unix://, not {scheme!r}"
            )
        problem = url_problem(url)
        if problem is not None:
            raise ValueError(f"is not a valid URL: {problem}")
        return url

    @field_validator("kafka_bootstrap_servers", mode="before")
    @classmethod
    def _bootstrap_servers(cls, value: Any) -> str:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
            raise ValueError("must be 'host:port', several separated by commas, or a list of them")
        servers = [item.strip() for item in items if item.strip()]
        if not servers:
            raise ValueError("must name at least one broker as 'host:port'")
        for server in servers:
            host, sep, port = server.rpartition(":")
            if not (sep and host and port.isdigit() and 0 < int(port) < 65536):
                raise ValueError(f"{server!r} is not 'host:port' (a port from 1 to 65535)")
        return ",".join(servers)

    @field_validator("kafka_topic", "kafka_dead_letter_topic", "kafka_group_id", "kafka_client_id")
    @classmethod
    def _kafka_name(cls, name: str | None) -> str | None:
        if name is not None and not name.strip():
            raise ValueError("must not be empty (leave it unset for the default)")
        return name

    @field_validator("kafka_security", "kafka_consumer_options", "kafka_producer_options")
    @classmethod
    def _str_keys(cls, mapping: dict[str, Any]) -> dict[str, Any]:
        # The keys are keyword arguments of the aiokafka clients (checked by the backend).
        bad = [key for key in mapping if not (isinstance(key, str) and key.isidentifier())]
        if bad:
            raise ValueError(f"keys must be parameter names, got {bad!r}")
        return mapping

    @field_validator("outbox_url")
    @classmethod
    def _outbox_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        if "://" not in url:
            raise ValueError(
                "must be a SQLAlchemy database URL such as postgresql+asyncpg://user:pw@host/db "
                "or sqlite+aiosqlite:///./app.db"
            )
        return url

    @field_validator("forward")
    @classmethod
    def _forwards(cls, value: Any) -> Any:
        if value is None or (isinstance(value, list | tuple) and not value):
            return ()  # no forwarding: its package is not even imported
        from ..forwarding._spec import as_forwards

        return as_forwards(value)

    @field_validator("outbox_table")
    @classmethod
    def _outbox_table(cls, name: str) -> str:
        if not _TABLE_NAME.fullmatch(name):
            raise ValueError(
                "must be a plain table name: a letter or underscore, then letters, digits "
                "or underscores (at most 40 characters, so that its index names fit)"
            )
        return name

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # repr(settings) may end up in a log line or a traceback: no secrets in it.
        for name, value in super().__repr_args__():
            if name == "kafka_security" and isinstance(value, Mapping):
                yield name, mask_mapping(value)
            elif name is not None and name.endswith("_url") and isinstance(value, str):
                yield name, mask_url(value)
            else:
                yield name, value


_ENDPOINT_PATH = re.compile(r"/[^\s?#]*(?<!/)")

# Index names add up to 16 characters; PostgreSQL allows 63. Such a name never needs quoting.
_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")

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
    except SettingsError as exc:
        # pydantic-settings cannot parse an EVENTBUS_* variable (e.g. not JSON); its
        # message names the variable, not the value.
        raise ConfigurationError(f"Invalid EventBusPlugin configuration: {exc}") from None
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            option = str(error["loc"][0]) if error["loc"] else "?"
            source = (
                "option" if option in options else f"environment variable EVENTBUS_{option.upper()}"
            )
            given = _masked(option, error.get("input"))
            problems.append(f"{source} {option!r}: {error['msg']} (got {given!r})")
        raise ConfigurationError(
            "Invalid EventBusPlugin configuration: " + "; ".join(problems)
        ) from None


def _masked(option: str, given: Any) -> Any:
    """An invalid value as an error message may show it: never a password."""
    if option.endswith("_url") and isinstance(given, str):
        return mask_url(given)
    if option == "kafka_security":
        return mask_mapping(given) if isinstance(given, Mapping) else MASK
    return given
