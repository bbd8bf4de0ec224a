"""WebhookForwarder against a real HTTP server on loopback that verifies the signature."""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable
from typing import Any

import pytest
from forwarding_support import WebhookReceiver
from support import strip_ansi

from fastapi_opinionated_eventbus import ConfigurationError, EventBus, RetryPolicy
from fastapi_opinionated_eventbus.forwarding import (
    SIGNATURE_HEADER,
    WebhookForwarder,
    decode_event,
    sign,
    verify_signature,
)

SECRET = "whsec-shared-secret-never-logged"
Receivers = Callable[..., WebhookReceiver]


async def forwarding_bus(forwarder: WebhookForwarder, **options: Any) -> EventBus:
    bus = EventBus()
    bus.forward("order.*", forwarder, **{"max_wait": 0.05, **options})
    await bus.start()
    return bus


async def test_a_batch_is_one_signed_post_of_the_events(webhook: Receivers) -> None:
    receiver = webhook(SECRET)
    bus = await forwarding_bus(WebhookForwarder(receiver.url, secret=SECRET))
    sent = [bus.emit_nowait("order.paid", {"n": n}) for n in range(3)]
    assert await bus.drain(10) == 0
    await bus.aclose()
    assert receiver.bad_signatures == 0 and receiver.requests == 1
    (batch,) = receiver.batches
    assert [decode_event(item).id for item in batch] == [e.id for e in sent]
    assert receiver.headers[0]["Content-Type"] == "application/json"
    assert receiver.headers[0][SIGNATURE_HEADER].startswith("sha256=")


async def test_a_wrong_secret_is_refused_by_the_receiver_and_dead_lettered(
    webhook: Receivers,
) -> None:
    receiver = webhook(SECRET)
    forwarder = WebhookForwarder(receiver.url, secret="another-secret")
    bus = await forwarding_bus(forwarder, retry=RetryPolicy(max_attempts=1))
    result = await bus.emit("order.paid", 1)
    await bus.aclose()
    (failure,) = result.failures
    assert "answered HTTP 401: bad signature" in str(failure.exception)
    assert receiver.bad_signatures == 1 and receiver.batches == []


async def test_a_failing_receiver_is_retried_then_accepts(webhook: Receivers) -> None:
    receiver = webhook(SECRET, fail_next=2, fail_status=503)
    forwarder = WebhookForwarder(receiver.url, secret=SECRET)
    retry = RetryPolicy(max_attempts=3, initial_delay=0.05, jitter=0)
    bus = await forwarding_bus(forwarder, retry=retry)
    sent = bus.emit_nowait("order.paid", 1)
    assert await bus.drain(10) == 0
    assert await bus.dead_letters() == []
    await bus.aclose()
    assert receiver.requests == 3
    assert [event["id"] for event in receiver.events()] == [sent.id]


async def test_after_the_last_attempt_each_event_is_dead_lettered_and_the_secret_never_shows(
    webhook: Receivers, caplog: pytest.LogCaptureFixture
) -> None:
    # The receiver echoes the secret and a bearer token in its error body.
    token = "Bearer partner-token-never-logged"
    receiver = webhook(SECRET, fail_next=100, echo=f"{SECRET} {token}")
    url = receiver.url + "?api_key=query-token-never-logged"
    forwarder = WebhookForwarder(url, secret=SECRET, headers={"Authorization": token})
    retry = RetryPolicy(max_attempts=2, initial_delay=0.01, jitter=0)
    bus = await forwarding_bus(forwarder, retry=retry)
    with caplog.at_level(logging.INFO):
        sent = [bus.emit_nowait("order.paid", n) for n in range(2)]
        assert await bus.drain(10) == 0
        letters = await bus.dead_letters()
        health = str(await bus.health())
        await bus.aclose()
    assert sorted(letter.event.id for letter in letters) == sorted(e.id for e in sent)
    for letter in letters:
        assert "answered HTTP 500: failing on purpose *** ***" in letter.message
    shown = [strip_ansi(caplog.text), health, repr(forwarder)]
    shown += [f"{letter.message}\n{letter.traceback}" for letter in letters]
    for text in shown:
        for secret in (SECRET, "partner-token-never-logged", "query-token-never-logged"):
            assert secret not in text
    assert repr(forwarder) == (
        f"WebhookForwarder(url='{receiver.url}', secret=***, format='eventbus')"
    )


async def test_a_receiver_slower_than_the_timeout_fails_the_batch(webhook: Receivers) -> None:
    receiver = webhook(SECRET, delay=1.0)
    forwarder = WebhookForwarder(receiver.url, secret=SECRET, timeout=0.2)
    bus = await forwarding_bus(forwarder, retry=RetryPolicy(max_attempts=1))
    result = await bus.emit("order.paid", 1)
    await bus.aclose()
    (failure,) = result.failures
    assert "WebhookForwarder(" in str(failure.exception)
    assert "ReadTimeout" in str(failure.exception)


async def test_a_send_timeout_bounds_a_forwarder_that_never_answers(webhook: Receivers) -> None:
    receiver = webhook(SECRET, delay=1.5)
    forwarder = WebhookForwarder(receiver.url, secret=SECRET, timeout=30)
    bus = await forwarding_bus(forwarder, retry=RetryPolicy(max_attempts=1), send_timeout=0.2)
    result = await bus.emit("order.paid", 1)
    await bus.aclose()
    (failure,) = result.failures
    assert "not accepted within send_timeout=0.2s" in str(failure.exception)


def test_the_signature_is_hmac_sha256_of_the_exact_body() -> None:
    body = b'[{"v":1}]'
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert sign(body, SECRET) == expected
    assert verify_signature(body, expected, SECRET)
    assert not verify_signature(body + b" ", expected, SECRET)
    assert not verify_signature(body, expected, "other")
    assert not verify_signature(body, None, SECRET)


def test_bad_webhook_settings_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="url must be an http"):
        WebhookForwarder("localhost/hook", secret=SECRET)
    with pytest.raises(ConfigurationError, match="secret is empty"):
        WebhookForwarder("http://127.0.0.1/hook", secret="")
