"""Forwarding fixtures: the session's SQS endpoint, private ones, webhook receivers.

The session's SQS endpoint is ``EVENTBUS_TEST_SQS_URL`` when set (``.ci/run`` starts one),
else a private moto server started on a free port (scripts/moto-server.sh). Without one the
SQS tests are skipped, loudly -- except on CI (``CI`` set), where that is a failure. The
test that stops and restarts its endpoint starts its own (``private_moto``).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from forwarding_support import MotoServer, WebhookReceiver, new_queue, no_sqs, sqs_client


def _check_moto() -> None:
    if importlib.util.find_spec("moto") is None:
        no_sqs("moto is not installed in this environment")


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The SQS endpoint URL (``http://127.0.0.1:PORT``) shared by the session."""
    env_url = os.environ.get("EVENTBUS_TEST_SQS_URL")
    if env_url:
        yield env_url
        return
    _check_moto()
    server = MotoServer(tmp_path_factory.mktemp("moto-session"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def private_moto(tmp_path: Path) -> Iterator[MotoServer]:
    """A started moto server of this test's own, to stop and start again; stopped at the end."""
    _check_moto()
    server = MotoServer(tmp_path / "moto")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def sqs(moto_server: str) -> AsyncIterator[Any]:
    """A plain aiobotocore client of the session's endpoint."""
    async with sqs_client(moto_server) as client:
        yield client


@pytest.fixture
async def queue(sqs: Any) -> str:
    """A fresh standard queue's URL."""
    return await new_queue(sqs)


@pytest.fixture
def webhook() -> Iterator[Callable[..., WebhookReceiver]]:
    """``webhook(secret, **behaviour)``: a started receiver, stopped at the end."""
    receivers: list[WebhookReceiver] = []

    def make(secret: str, **behaviour: Any) -> WebhookReceiver:
        receiver = WebhookReceiver(secret, **behaviour)
        receiver.start()
        receivers.append(receiver)
        return receiver

    yield make
    for receiver in receivers:
        receiver.stop()
