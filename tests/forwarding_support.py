"""Real services and forwarders for the forwarding tests.

- :class:`MotoServer`: moto's standalone server (an SQS endpoint) on a free loopback port,
  through scripts/moto-server.sh; :func:`sqs_client` reads queues back with aiobotocore.
- :class:`WebhookReceiver`: a stdlib HTTP server on loopback that verifies the signature
  of each POST and can be told to fail or to answer late.
- :class:`RecordingForwarder`: a custom forwarder, as a user writes one.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from support import REPO_ROOT, free_port, service_missing

from fastapi_opinionated_eventbus import EventBus, EventEnvelope, RetryPolicy
from fastapi_opinionated_eventbus.forwarding import PartialBatchFailure, verify_signature

MOTO_SCRIPT = REPO_ROOT / "scripts" / "moto-server.sh"
REGION = "us-east-1"
# moto takes any credentials; these are made to be recognisable in a leak.
ACCESS_KEY = "AKIATESTLEAKCHECK0001"
SECRET_KEY = "secret-key-that-must-never-be-logged"


def no_sqs(reason: str) -> None:
    """Skip a test that needs an SQS endpoint, loudly; on CI (``CI`` set) fail instead."""
    service_missing(
        f"SQS TESTS NOT RUN: {reason}. moto[server] is a dev dependency: run "
        "bash scripts/bootstrap.sh, or set EVENTBUS_TEST_SQS_URL=http://host:port."
    )


class MotoServer:
    """A private moto server; its queues live in its memory only."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.directory = directory

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self, action: str) -> None:
        subprocess.run(
            ["bash", str(MOTO_SCRIPT), action, str(self.port), str(self.directory)],
            check=True,
            capture_output=True,
            timeout=60,
            env={**os.environ, "PYTHON": sys.executable},
        )

    def start(self) -> None:
        try:
            self._run("start")
        except subprocess.CalledProcessError as exc:
            no_sqs(f"moto server did not start: {exc.stderr.decode(errors='replace')[-500:]}")

    def stop(self) -> None:
        self._run("stop")


@asynccontextmanager
async def sqs_client(endpoint: str) -> AsyncIterator[Any]:
    """A plain aiobotocore SQS client of the endpoint."""
    from aiobotocore.session import get_session

    async with get_session().create_client(
        "sqs",
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id="reader",
        aws_secret_access_key="reader",
    ) as client:
        yield client


async def new_queue(client: Any, *, fifo: bool = False) -> str:
    name = f"q-{uuid.uuid4().hex[:12]}" + (".fifo" if fifo else "")
    attributes = {"FifoQueue": "true"} if fifo else {}
    reply = await client.create_queue(QueueName=name, Attributes=attributes)
    return str(reply["QueueUrl"])


async def receive(client: Any, queue_url: str, count: int, timeout: float = 20.0) -> list[Any]:
    """Exactly ``count`` messages (with their attributes), deleted once read; fails on
    fewer within ``timeout`` or on more."""
    messages: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(messages) < count and time.monotonic() < deadline:
        reply = await client.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            MessageAttributeNames=["All"],
            AttributeNames=["All"],
            WaitTimeSeconds=0,
        )
        batch = reply.get("Messages", [])
        if not batch:
            await asyncio.sleep(0.05)
        for message in batch:
            messages.append(message)
            await client.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    assert len(messages) == count, f"received {len(messages)} message(s), expected {count}"
    extra = await client.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)
    assert not extra.get("Messages"), "more messages than expected"
    return messages


async def until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Wait until ``condition()`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


# ====================================================================== webhooks
@dataclass
class WebhookReceiver:
    """A real HTTP server on 127.0.0.1 that checks each POST's signature with ``secret``.

    ``fail_next`` requests answer ``fail_status`` (their body echoes ``echo`` when set);
    each request waits ``delay`` seconds first. ``batches`` holds the parsed bodies of
    the accepted requests, ``requests`` counts all, ``bad_signatures`` the refused ones.
    """

    secret: str
    fail_next: int = 0
    fail_status: int = 500
    echo: str = ""
    delay: float = 0.0
    batches: list[Any] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    requests: int = 0
    bad_signatures: int = 0
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/hooks/events"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status, answer = receiver._answer(body, dict(self.headers))
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (a timeout test)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def _answer(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        if self.delay:
            time.sleep(self.delay)
        with self._lock:
            self.requests += 1
            if not verify_signature(body, headers.get("X-Eventbus-Signature"), self.secret):
                self.bad_signatures += 1
                return 401, b"bad signature"
            if self.fail_next > 0:
                self.fail_next -= 1
                return self.fail_status, f"failing on purpose {self.echo}".encode()
            self.batches.append(json.loads(body))
            self.headers.append(headers)
            return 204, b""

    def events(self) -> list[Any]:
        with self._lock:
            return [event for batch in self.batches for event in batch]

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


# ====================================================================== a custom forwarder
class RecordingForwarder:
    """A forwarder as a user writes one: keeps what it accepted. ``fail_batches`` makes
    the next batches raise; ``refuse`` names event ids it refuses (a partial failure);
    ``block`` makes every call wait on it (an endpoint that does not answer)."""

    def __init__(self, name: str = "Recording") -> None:
        self.name = name
        self.batches: list[list[EventEnvelope]] = []
        self.calls = 0
        self.fail_batches = 0
        self.refuse: set[str] = set()
        self.block: asyncio.Event | None = None
        self.closed = 0

    async def send_many(self, envelopes: Sequence[EventEnvelope]) -> None:
        self.calls += 1
        if self.block is not None:
            await self.block.wait()
        if self.fail_batches > 0:
            self.fail_batches -= 1
            raise ConnectionError("the partner's API is down")
        refused = {e.id: "refused by the partner" for e in envelopes if e.id in self.refuse}
        self.batches.append([e for e in envelopes if e.id not in refused])
        if refused:
            raise PartialBatchFailure(refused)

    async def aclose(self) -> None:
        self.closed += 1

    @property
    def events(self) -> list[EventEnvelope]:
        return [event for batch in self.batches for event in batch]


async def dead_letter_of_a_failing_forward(consumer: EventBus, timeout: float = 15.0) -> None:
    """With a broker backend: ``consumer`` forwards ``order.*`` to a forwarder whose
    batches keep failing; the event it emits must end as a dead letter naming the
    forwarder and the partner's error, within ``timeout`` seconds."""
    forwarder = RecordingForwarder()
    forwarder.fail_batches = 100
    consumer.forward("order.*", forwarder, retry=RetryPolicy(max_attempts=2, initial_delay=0.01))
    await consumer.start()
    sent = await consumer.emit("order.paid", 1)
    deadline = time.monotonic() + timeout
    while not (letters := await consumer.dead_letters()):
        assert time.monotonic() < deadline, "no dead letter in time"
        await asyncio.sleep(0.05)
    (letter,) = letters
    assert letter.event.id == sent.event_id and letter.handler == "forward:Recording"
    assert "the partner's API is down" in letter.message
