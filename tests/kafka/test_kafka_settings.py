"""Kafka options: validated with errors naming the option, defaults derived from the app
title, and kafka_security secrets kept out of logs, errors, repr and health."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from fastapi_opinionated_eventbus import BackendUnavailable, ConfigurationError, EventBus
from fastapi_opinionated_eventbus._observability.introspection import describe_bus
from fastapi_opinionated_eventbus.backends.kafka import KafkaBackend

SECRET = "s3cr3t-Pa55-w0rd"
SECURITY = {
    "security_protocol": "SASL_PLAINTEXT",
    "sasl_mechanism": "PLAIN",
    "sasl_plain_username": "alice",
    "sasl_plain_password": SECRET,
}


def backend(bus: EventBus) -> KafkaBackend:
    assert isinstance(bus.backend, KafkaBackend)
    return bus.backend


def test_topic_group_and_client_default_to_the_app_title() -> None:
    config = backend(EventBus(backend="kafka", app_name="Orders API")).config
    assert (config.topic, config.dead_letter_topic) == (
        "orders-api.events",
        "orders-api.events.dlq",
    )
    assert (config.group, config.client_id) == ("orders-api", "orders-api")
    assert config.servers == "localhost:9092"
    custom = backend(
        EventBus(
            backend="kafka",
            kafka_bootstrap_servers=["k1:9092", " k2:9093"],
            kafka_topic="orders",
            kafka_group_id="billing",
        )
    ).config
    assert (custom.servers, custom.dead_letter_topic, custom.group) == (
        "k1:9092,k2:9093",
        "orders.dlq",
        "billing",
    )


def test_the_environment_configures_the_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENTBUS_BACKEND", "kafka")
    monkeypatch.setenv("EVENTBUS_KAFKA_BOOTSTRAP_SERVERS", "a:1,b:2")
    monkeypatch.setenv("EVENTBUS_KAFKA_SECURITY", json.dumps(SECURITY))
    monkeypatch.setenv("EVENTBUS_KAFKA_CONSUMER_OPTIONS", '{"session_timeout_ms": 6000}')
    config = backend(EventBus(app_name="Shop")).config
    assert config.servers == "a:1,b:2"
    assert config.security["sasl_plain_password"] == SECRET  # handed to aiokafka as is
    assert config.consumer_options == {"session_timeout_ms": 6000}
    assert SECRET not in repr(config)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"kafka_bootstrap_servers": ""}, "'kafka_bootstrap_servers'"),
        ({"kafka_bootstrap_servers": "host-without-port"}, "is not 'host:port'"),
        ({"kafka_bootstrap_servers": "h:99999"}, "a port from 1 to 65535"),
        ({"kafka_partitions": 0}, "'kafka_partitions'"),
        ({"kafka_concurrency": -1}, "'kafka_concurrency'"),
        ({"kafka_topic": " "}, "'kafka_topic'"),
        ({"kafka_security": "not a mapping"}, "'kafka_security'"),
        ({"kafka_security": {"sasl_plain_pasword": "x"}}, "unknown key(s) 'sasl_plain_pasword'"),
        ({"kafka_consumer_options": {"group_id": "x"}}, "'group_id' set by the backend"),
        ({"kafka_consumer_options": {"no_such_option": 1}}, "not accepted by AIOKafkaConsumer"),
        ({"kafka_producer_options": {"acks": 1}}, "'acks' set by the backend"),
    ],
)
def test_bad_options_name_the_problem(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        EventBus(backend="kafka", **options)
    assert message in str(caught.value)


def test_secrets_stay_out_of_repr_and_configuration_errors() -> None:
    bus = EventBus(backend="kafka", kafka_security=SECURITY)
    assert SECRET not in repr(bus.settings) and "'sasl_plain_password': '***'" in repr(bus.settings)
    assert SECRET not in str(bus.settings)
    # A key the client does not know, and one that is not even a string.
    bad_securities: tuple[dict[Any, Any], ...] = ({**SECURITY, "typo_key": 1}, {**SECURITY, 5: "x"})
    for bad in bad_securities:
        with pytest.raises(ConfigurationError) as caught:
            EventBus(backend="kafka", kafka_security=bad)
        assert SECRET not in str(caught.value)


async def test_secrets_stay_out_of_logs_errors_health_and_introspection(
    kafka_servers: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # aiokafka's own debug logs too
    bus = EventBus(
        backend="kafka",
        kafka_bootstrap_servers=kafka_servers,
        kafka_security=SECURITY,
        connect_timeout=1.0,
        introspection_path="/_eventbus",
    )
    with pytest.raises(BackendUnavailable) as caught:  # this broker refuses SASL
        await bus.start()
    assert f"Cannot reach Kafka at {kafka_servers}" in str(caught.value)
    health = await bus.health()
    described = await describe_bus(bus)
    await bus.aclose()
    assert "UnsupportedSaslMechanism" in caplog.text  # the logs did capture the attempt
    for text in (str(caught.value), caplog.text, json.dumps(health), json.dumps(described)):
        assert SECRET not in text


def test_an_unparsable_variable_is_a_configuration_error_without_its_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EVENTBUS_KAFKA_SECURITY", '{"sasl_plain_password": "' + SECRET)
    with pytest.raises(ConfigurationError) as caught:
        EventBus(backend="kafka")
    assert "kafka_security" in str(caught.value)
    assert SECRET not in str(caught.value)
