"""``asyncapi``: the app's AsyncAPI 3.0.0 document from its directory, JSON or YAML."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import pytest
import yaml
from catalog_support import HOSTILE, MAIN, SHOP_APP, validate_asyncapi

Run = Callable[..., CompletedProcess[str]]


@pytest.fixture
def catalog_app(make_app: Callable[..., Path]) -> Path:
    root = make_app(SHOP_APP)
    (root / "main.py").write_text(MAIN)
    return root


def test_prints_a_valid_document_of_the_app(cli: Run, catalog_app: Path) -> None:
    result = cli(catalog_app, "asyncapi")

    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    validate_asyncapi(document)
    # main.py is read, not run: its literal title and version.
    assert document["info"]["title"] == "Shop"
    assert document["info"]["version"] == "2.1.0"
    assert document["channels"]["img_src_x_onerror_alert_1"]["address"] == HOSTILE
    receives = [op for op in document["operations"].values() if op["action"] == "receive"]
    sends = [op for op in document["operations"].values() if op["action"] == "send"]
    assert (len(receives), len(sends)) == (7, 4)
    assert document["x-eventbus"]["scan"]["files"] == 4
    assert result.stderr == ""


def test_yaml_by_option_or_by_the_output_file_suffix(cli: Run, catalog_app: Path) -> None:
    as_json = json.loads(cli(catalog_app, "asyncapi").stdout)

    printed = cli(catalog_app, "asyncapi", "--format", "yaml")
    written = cli(catalog_app, "asyncapi", "-o", "missing/asyncapi.yml")
    forced = cli(catalog_app, "asyncapi", "-o", "doc.yml", "--format", "json")

    assert printed.returncode == 0, printed.stderr
    assert yaml.safe_load(printed.stdout) == as_json
    assert written.returncode == 2  # missing/ does not exist
    assert written.stderr.startswith("error: cannot write ")
    assert forced.returncode == 0
    assert forced.stdout == f"wrote {catalog_app / 'doc.yml'}: 7 channel(s), 11 operation(s)\n"
    assert json.loads((catalog_app / "doc.yml").read_text()) == as_json
    ok = cli(catalog_app, "asyncapi", "--output", "asyncapi.yaml")
    assert ok.returncode == 0, ok.stderr
    assert yaml.safe_load((catalog_app / "asyncapi.yaml").read_text()) == as_json


def test_exclude_skips_files_in_the_emit_scan(cli: Run, catalog_app: Path) -> None:
    result = cli(catalog_app, "asyncapi", "--exclude", "app/domains/shop/service.py")

    document = json.loads(result.stdout)
    assert [op for op in document["operations"].values() if op["action"] == "send"] == []
    assert "order.cancelled" not in document["channels"]  # only service.py emitted it
    assert document["x-eventbus"]["scan"]["files"] == 3


def test_redis_servers_without_credentials_and_without_connecting(
    cli: Run, catalog_app: Path
) -> None:
    # Nothing listens there: the document is built from the settings alone.
    url = "rediss://app:s3cr3t-pw@cache.internal.example:6380/3?password=s3cr3t-q"
    result = cli(
        catalog_app,
        "asyncapi",
        EVENTBUS_BACKEND="redis",
        EVENTBUS_REDIS_URL=url,
        EVENTBUS_REDIS_PREFIX="shop",
    )

    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    validate_asyncapi(document)
    assert document["servers"] == {
        "redis": {
            "host": "cache.internal.example:6380",
            "protocol": "rediss",
            "pathname": "/3",
            "description": "Redis Streams: every event is an entry of the stream "
            "{shop}:events (its name in the entry's name field), read by the consumer group "
            "'eventbus'; dead letters in {shop}:dead.",
        }
    }
    assert "s3cr3t" not in result.stdout + result.stderr
    assert "app:" not in result.stdout


def test_kafka_servers_one_per_bootstrap_server_without_credentials(
    cli: Run, catalog_app: Path
) -> None:
    # Nothing listens there either: the document is built from the settings alone.
    secret = "s3cr3t-Pa55-w0rd"
    security = {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "PLAIN",
        "sasl_plain_username": "alice",
        "sasl_plain_password": secret,
    }
    result = cli(
        catalog_app,
        "asyncapi",
        EVENTBUS_BACKEND="kafka",
        EVENTBUS_KAFKA_BOOTSTRAP_SERVERS="k1.internal.example:9093, [2001:db8::1]:9094",
        EVENTBUS_KAFKA_SECURITY=json.dumps(security),
    )

    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    validate_asyncapi(document)
    description = (
        "Kafka: every event is a record of the topic shop.events (its name in the "
        "eventbus-name header), handled by the consumer group 'shop'; dead letters in "
        "shop.events.dlq."
    )
    assert document["servers"] == {
        "kafka": {
            "host": "k1.internal.example:9093",
            "protocol": "kafka-secure",
            "description": description,
        },
        "kafka-2": {
            "host": "[2001:db8::1]:9094",
            "protocol": "kafka-secure",
            "description": description,
        },
    }
    assert secret not in result.stdout + result.stderr
    assert "alice" not in result.stdout


def test_warnings_for_a_disabled_plugin_and_a_computed_title(
    cli: Run, make_app: Callable[..., Path]
) -> None:
    root = make_app(SHOP_APP, enable=False)
    (root / "main.py").write_text(MAIN.replace('title="Shop"', "title=TITLE"))

    result = cli(root, "asyncapi")

    assert result.returncode == 0, result.stderr
    assert "warning: the EventBus plugin is not enabled" in result.stderr
    assert (
        f"warning: main.py has no App.create() with a literal title: the document says "
        f"{root.name!r}"
    ) in result.stderr
    assert json.loads(result.stdout)["info"]["title"] == root.name


def test_outside_an_app_directory_is_a_usage_error(cli: Run, tmp_path: Path) -> None:
    result = cli(tmp_path, "asyncapi")

    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {tmp_path} is not a fastapi-opinionated app")
    assert result.stdout == ""
