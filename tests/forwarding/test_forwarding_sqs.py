"""SQSForwarder against a real SQS endpoint (moto's server), read back with aiobotocore."""

from __future__ import annotations

import json
import logging
from decimal import Decimal
from typing import Any, ClassVar

import pytest
from forwarding_support import (
    ACCESS_KEY,
    REGION,
    SECRET_KEY,
    MotoServer,
    new_queue,
    receive,
    sqs_client,
    until,
)
from support import strip_ansi

from fastapi_opinionated_eventbus import EventBus, RetryPolicy, TypedEvent
from fastapi_opinionated_eventbus.forwarding import SQSForwarder, decode_event
from fastapi_opinionated_eventbus.metrics import CountingCollector

pytestmark = pytest.mark.usefixtures("moto_server")


class OrderPaid(TypedEvent):
    __event_name__ = "order.paid"
    __event_key__: ClassVar[str] = "order_id"
    order_id: int
    amount: Decimal


def sqs_forwarder(endpoint: str, queue_url: str, **options: Any) -> SQSForwarder:
    return SQSForwarder(
        queue_url,
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        **options,
    )


def attributes(message: Any) -> dict[str, str]:
    return {k: v["StringValue"] for k, v in message["MessageAttributes"].items()}


async def test_events_arrive_in_batches_with_their_attributes(
    moto_server: str, sqs: Any, queue: str
) -> None:
    bus = EventBus()
    bus.forward("order.*", sqs_forwarder(moto_server, queue), max_wait=0.05)
    await bus.start()
    sent = {bus.emit_nowait("order.paid", {"n": n}, currency="EUR").id: n for n in range(23)}
    assert await bus.drain(30) == 0
    (stats,) = (await bus.health())["forwarding"]
    assert (stats["batches_sent"], stats["events_sent"], stats["batches_failed"]) == (3, 23, 0)
    await bus.aclose()
    messages = await receive(sqs, queue, 23)
    for message in messages:
        event = decode_event(message["Body"])
        assert event.args == ({"n": sent[event.id]},) and event.kwargs == {"currency": "EUR"}
        assert attributes(message) == {
            "event_name": "order.paid",
            "event_id": event.id,
            "correlation_id": event.correlation_id,
        }
    assert sorted(decode_event(m["Body"]).id for m in messages) == sorted(sent)


async def test_a_batch_larger_than_ten_goes_in_calls_of_ten(
    moto_server: str, sqs: Any, queue: str
) -> None:
    # SendMessageBatch refuses more than 10 entries: 25 in one batch must be split.
    bus = EventBus()
    bus.forward("order.*", sqs_forwarder(moto_server, queue), batch_size=25, max_wait=0.05)
    await bus.start()
    for n in range(25):
        bus.emit_nowait("order.paid", n)
    assert await bus.drain(30) == 0
    (stats,) = (await bus.health())["forwarding"]
    assert (stats["batches_sent"], stats["events_sent"]) == (1, 25)
    await bus.aclose()
    assert len(await receive(sqs, queue, 25)) == 25


async def test_fifo_groups_by_event_key_or_correlation_id_and_dedups_by_event_id(
    moto_server: str, sqs: Any
) -> None:
    fifo_queue = await new_queue(sqs, fifo=True)
    forwarder = sqs_forwarder(moto_server, fifo_queue)
    assert forwarder.fifo and forwarder.ordered
    bus = EventBus()
    bus.forward("order.*", forwarder, max_wait=0.05)
    await bus.start()
    paid = [bus.emit_nowait(OrderPaid(order_id=7, amount=Decimal(n))) for n in range(5)]
    other = bus.emit_nowait("order.note", "hello")
    assert await bus.drain(30) == 0
    await bus.aclose()
    messages = await receive(sqs, fifo_queue, 6)
    by_id = {decode_event(m["Body"]).id: m for m in messages}
    for envelope in paid:
        assert by_id[envelope.id]["Attributes"]["MessageGroupId"] == "7"
        assert by_id[envelope.id]["Attributes"]["MessageDeduplicationId"] == envelope.id
    assert by_id[other.id]["Attributes"]["MessageGroupId"] == other.correlation_id
    in_group = [
        decode_event(m["Body"]).id for m in messages if m["Attributes"]["MessageGroupId"] == "7"
    ]
    assert in_group == [e.id for e in paid]  # in order within the group


async def test_the_fastapi_events_format(moto_server: str, sqs: Any, queue: str) -> None:
    bus = EventBus()
    forwarder = sqs_forwarder(moto_server, queue, format="fastapi-events")
    bus.forward("order.*", forwarder, max_wait=0)
    await bus.start()
    assert (await bus.emit("order.paid", {"id": 1, "total": 9.5})).ok
    await bus.aclose()
    (message,) = await receive(sqs, queue, 1)
    assert json.loads(message["Body"]) == ["order.paid", {"id": 1, "total": 9.5}]
    assert attributes(message)["event_name"] == "order.paid"


async def test_an_oversized_message_fails_alone(moto_server: str, sqs: Any, queue: str) -> None:
    bus = EventBus()
    forwarder = sqs_forwarder(moto_server, queue, max_message_bytes=2_000)
    bus.forward("order.*", forwarder, retry=RetryPolicy(max_attempts=1), max_wait=0.05)
    await bus.start()
    small = [bus.emit_nowait("order.paid", n) for n in range(3)]
    big = bus.emit_nowait("order.paid", "x" * 5_000)
    assert await bus.drain(30) == 0
    (letter,) = await bus.dead_letters()
    assert letter.event.id == big.id and "over SQS's limit of 2000" in letter.message
    await bus.aclose()
    received = await receive(sqs, queue, 3)
    assert sorted(decode_event(m["Body"]).id for m in received) == sorted(e.id for e in small)


async def test_a_batch_is_retried_after_the_endpoint_comes_back(
    private_moto: MotoServer,
) -> None:
    async with sqs_client(private_moto.url) as client:
        queue_url = await new_queue(client)
        name = queue_url.rpartition("/")[2]
        counters = CountingCollector()
        bus = EventBus(metrics=counters)
        retry = RetryPolicy(max_attempts=50, initial_delay=0.2, backoff_factor=1.0, jitter=0)
        bus.forward("order.*", sqs_forwarder(private_moto.url, queue_url), retry=retry)
        await bus.start()
        private_moto.stop()
        sent = bus.emit_nowait("order.paid", {"id": 1})
        await until(lambda: counters.counts["retried"] >= 2)
        private_moto.start()  # same port, empty: the queue is created again
        assert (await client.create_queue(QueueName=name))["QueueUrl"] == queue_url
        assert await bus.drain(30) == 0
        assert await bus.dead_letters() == []
        await bus.aclose()
        (message,) = await receive(client, queue_url, 1)
        assert decode_event(message["Body"]).id == sent.id


async def test_after_the_last_attempt_events_are_dead_lettered_and_no_secret_shows(
    private_moto: MotoServer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env_key, env_secret = "AKIAFROMTHEENVIRONMENT", "environment-secret-never-logged"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", env_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", env_secret)
    async with sqs_client(private_moto.url) as client:
        queue_url = await new_queue(client)
    explicit = sqs_forwarder(private_moto.url, queue_url)
    from_env = SQSForwarder(queue_url, region_name=REGION, endpoint_url=private_moto.url)
    bus = EventBus(metrics="prometheus", introspection_path="/_eventbus")
    retry = RetryPolicy(max_attempts=2, initial_delay=0.05, jitter=0)
    bus.forward("order.*", explicit, retry=retry, max_wait=0.01)
    bus.forward("audit.*", from_env, retry=retry, max_wait=0.01)
    await bus.start()
    assert (await bus.emit("order.paid", 1)).ok  # both forwarders connected and working
    assert (await bus.emit("audit.seen", 1)).ok
    private_moto.stop()
    with caplog.at_level(logging.INFO):
        sent = [bus.emit_nowait("order.paid", n) for n in range(3)]
        sent.append(bus.emit_nowait("audit.seen", 4))
        assert await bus.drain(30) == 0
        letters = await bus.dead_letters()
        assert sorted(letter.event.id for letter in letters) == sorted(e.id for e in sent)
        for letter in letters:
            assert letter.attempts == 2
            assert "SendMessageBatch failed: EndpointConnectionError" in letter.message
        from fastapi_opinionated_eventbus._observability.introspection import describe_bus

        introspection = json.dumps(await describe_bus(bus))
        prometheus = bus.metrics.collectors[0].exposition()[0].decode()  # type: ignore[union-attr]
        await bus.aclose()
    shown = [
        strip_ansi(caplog.text),
        *(f"{letter.message}\n{letter.traceback}" for letter in letters),
        introspection,
        prometheus,
        repr(explicit),
        repr(from_env),
    ]
    assert "forward:SQSForwarder(" in introspection and "forward:SQSForwarder(" in prometheus
    assert "credentials=***" in repr(explicit)
    for text in shown:
        for secret in (ACCESS_KEY, SECRET_KEY, env_key, env_secret):
            assert secret not in text


def test_an_sqs_error_message_holding_a_credential_is_redacted() -> None:
    # botocore does not put keys in its messages today; if one ever did, it stays hidden.
    forwarder = sqs_forwarder("http://127.0.0.1:9", "http://127.0.0.1:9/1/q")
    problem = forwarder._secrets.explain(RuntimeError(f"denied for {ACCESS_KEY}/{SECRET_KEY}"))
    assert problem == "RuntimeError: denied for ***/***"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("orders", "queue_url must be a queue's http"),
        ("ftp://host/1/q", "queue_url must be a queue's http"),
        ("https://sqs.eu-west-1.amazonaws.com", "queue_url must be a queue's http"),
    ],
)
def test_bad_queue_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SQSForwarder(url)


def test_the_region_is_read_from_an_aws_queue_url() -> None:
    forwarder = SQSForwarder("https://sqs.eu-central-1.amazonaws.com/123456789012/orders.fifo")
    assert forwarder.region_name == "eu-central-1"
    assert forwarder.fifo and forwarder.name == "SQSForwarder(orders.fifo)"
