"""What the Kafka backend derives from the settings: topic and group names, the keyword
arguments of the aiokafka clients, and error texts without secrets."""

from __future__ import annotations

import inspect
import ssl
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import (
    AuthenticationFailedError,
    AuthenticationMethodNotSupported,
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
)
from aiokafka.helpers import create_ssl_context

from ..._core.errors import ConfigurationError
from ..._core.settings import BusSettings
from ..._secrets import mapping_secrets, redact
from ..naming import app_prefix

__all__ = ["KafkaConfig", "is_fatal", "is_transient"]

# Security settings aiokafka's clients take as they are.
_CLIENT_SECURITY = frozenset(
    {
        "security_protocol",
        "ssl_context",
        "sasl_mechanism",
        "sasl_plain_username",
        "sasl_plain_password",
        "sasl_kerberos_service_name",
        "sasl_kerberos_domain_name",
        "sasl_oauth_token_provider",
    }
)
# Settings that build an ssl_context: an SSLContext cannot come from an environment variable.
_SSL_FILES = {
    "ssl_cafile": "cafile",
    "ssl_capath": "capath",
    "ssl_certfile": "certfile",
    "ssl_keyfile": "keyfile",
    "ssl_password": "password",
}
_SSL_FLAGS = frozenset({"ssl_check_hostname"})

# What the backend decides itself: not overridable through kafka_*_options.
_OWNED = frozenset(
    {
        "loop",
        "bootstrap_servers",
        "client_id",
        "group_id",
        "enable_auto_commit",
        "key_serializer",
        "value_serializer",
        "key_deserializer",
        "value_deserializer",
        "acks",
        "enable_idempotence",
        "transactional_id",
        "api_version",
        *_CLIENT_SECURITY,
    }
)


@dataclass(frozen=True, slots=True)
class KafkaConfig:
    """Everything the backend's clients are built from, validated once."""

    servers: str
    """The bootstrap servers as configured, ``host:port`` comma-separated (no secrets)."""
    topic: str
    dead_letter_topic: str
    group: str
    client_id: str
    security: Mapping[str, Any]
    secrets: tuple[str, ...]
    consumer_options: Mapping[str, Any]
    producer_options: Mapping[str, Any]

    @classmethod
    def from_settings(cls, settings: BusSettings, app_name: str | None) -> KafkaConfig:
        prefix = app_prefix(app_name)
        topic = settings.kafka_topic or f"{prefix}.events"
        return cls(
            servers=settings.kafka_bootstrap_servers,
            topic=topic,
            dead_letter_topic=settings.kafka_dead_letter_topic or f"{topic}.dlq",
            group=settings.kafka_group_id or prefix,
            client_id=settings.kafka_client_id or prefix,
            security=_security(settings.kafka_security),
            secrets=mapping_secrets(settings.kafka_security),
            consumer_options=_options(
                "kafka_consumer_options", settings.kafka_consumer_options, AIOKafkaConsumer
            ),
            producer_options=_options(
                "kafka_producer_options", settings.kafka_producer_options, AIOKafkaProducer
            ),
        )

    @property
    def secure(self) -> bool:
        """Whether the clients use TLS or SASL: a ``security_protocol`` other than
        PLAINTEXT (SSL, SASL_PLAINTEXT, SASL_SSL)."""
        protocol = str(self.security.get("security_protocol", "PLAINTEXT")).upper()
        return protocol != "PLAINTEXT"

    @property
    def letters_group(self) -> str:
        """The group whose committed offsets mark the dead letters already replayed or
        purged (a topic cannot delete single records)."""
        return f"{self.group}.dead-letters"

    def common(self) -> dict[str, Any]:
        """Keyword arguments every client of this backend takes."""
        return {
            "bootstrap_servers": self.servers.split(","),
            "client_id": self.client_id,
            **self.security,
        }

    def describe(self, exc: BaseException, *, with_traceback: bool = False) -> str:
        """``Type: message`` (and the traceback), with every kafka_security secret removed."""
        text = f"{type(exc).__name__}: {exc}"
        if with_traceback:
            # The core's log formatter drops exc_info: the traceback must be in the text.
            text += "\n" + "".join(traceback.format_exception(exc)).rstrip()
        return redact(text, self.secrets)

    def __repr__(self) -> str:
        return f"<KafkaConfig {self.servers} topic={self.topic!r} group={self.group!r}>"


def _security(given: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(given) - _CLIENT_SECURITY - set(_SSL_FILES) - _SSL_FLAGS)
    if unknown:
        known = sorted({*_CLIENT_SECURITY, *_SSL_FILES, *_SSL_FLAGS})
        raise ConfigurationError(
            f"option 'kafka_security': unknown key(s) {', '.join(map(repr, unknown))}; "
            f"known keys: {', '.join(known)}"
        )
    security = {k: v for k, v in given.items() if k in _CLIENT_SECURITY}
    files = {_SSL_FILES[k]: v for k, v in given.items() if k in _SSL_FILES}
    if files or "ssl_check_hostname" in given:
        if "ssl_context" in given:
            raise ConfigurationError(
                "option 'kafka_security': give either ssl_context or the ssl_* files, not both"
            )
        try:
            context = create_ssl_context(**files)
        except (OSError, ssl.SSLError, ValueError, TypeError) as exc:
            # The message may quote a path, never the password: only the type and errno.
            raise ConfigurationError(
                f"option 'kafka_security': cannot build a TLS context from "
                f"{', '.join(k for k in given if k in _SSL_FILES)}: {type(exc).__name__}"
                f"{f' (errno {exc.errno})' if isinstance(exc, OSError) and exc.errno else ''}"
            ) from None
        context.check_hostname = bool(given.get("ssl_check_hostname", True))
        security["ssl_context"] = context
    return security


def _options(option: str, given: Mapping[str, Any], client: type) -> dict[str, Any]:
    accepted = set(inspect.signature(client).parameters) - {"topics"}
    owned = sorted(set(given) & _OWNED)
    if owned:
        raise ConfigurationError(
            f"option {option!r}: {', '.join(map(repr, owned))} set by the backend itself "
            "(see the kafka_* options)"
        )
    unknown = sorted(set(given) - accepted)
    if unknown:
        raise ConfigurationError(
            f"option {option!r}: {', '.join(map(repr, unknown))} not accepted by {client.__name__}"
        )
    return dict(given)


def is_fatal(exc: BaseException) -> bool:
    """Wrong credentials or missing permissions: waiting will not help."""
    return isinstance(
        exc,
        AuthenticationFailedError
        | AuthenticationMethodNotSupported
        | SaslAuthenticationFailed
        | TopicAuthorizationFailedError
        | GroupAuthorizationFailedError
        | ClusterAuthorizationFailedError,
    )


def is_transient(exc: BaseException) -> bool:
    """A lost connection, a timeout, a broker or coordinator not ready: waiting may help."""
    if is_fatal(exc):
        return False
    if isinstance(exc, KafkaConnectionError | OSError | TimeoutError):
        return True
    return isinstance(exc, KafkaError) and bool(getattr(exc, "retriable", False))
