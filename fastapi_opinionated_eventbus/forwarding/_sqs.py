"""``SQSForwarder``: events to an Amazon SQS queue with ``SendMessageBatch`` (aiobotocore).

Each event is one message: its body the wire format's JSON, its message attributes
``event_name``, ``event_id`` and ``correlation_id`` (strings). A batch is sent in calls of
at most 10 messages and 256 KiB; SQS's per-message answers are kept, so a message it
refuses fails alone. On a FIFO queue (``.fifo``) the message group is the typed event's
``__event_key__`` value, else the correlation id, and the deduplication id is the event
id (a retried event that SQS already took within 5 minutes is not stored twice).

One attempt per call: botocore's own retries are off, the subscription's retry policy
decides. Credentials come from the arguments or botocore's usual chain (environment,
files, instance role); they never appear in the forwarder's ``repr``, in its errors or
anything logged about it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from contextlib import AsyncExitStack
from typing import Any
from urllib.parse import urlsplit

from .._core.envelope import EventEnvelope
from .._core.errors import (
    ConfigurationError,
    EventSerializationError,
    ForwardingFailed,
    PartialBatchFailure,
)
from .._secrets import mask_url, secrets_of
from ._formats import WireFormat, encode_batch, event_key
from ._protocol import require_extra
from ._redaction import Secrets

__all__ = ["SQSForwarder"]

MAX_ENTRIES = 10
"""SendMessageBatch's limit of messages per call."""
MAX_BYTES = 262_144
"""SQS's limit of one message, and of one SendMessageBatch call (256 KiB)."""

_ENV_CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
# MessageGroupId and MessageDeduplicationId: 1-128 printable ASCII characters, no space.
_FIFO_ID = re.compile(r"[!-~]{1,128}")
_AWS_REGION = re.compile(r"(?:^|\.)sqs\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$")

Entry = dict[str, Any]


class _Unsendable(Exception):
    """An event SQS would refuse: it fails alone, with this reason."""


class SQSForwarder:
    """Forwards events to the SQS queue at ``queue_url``.

    :param queue_url: the queue's URL (``https://sqs.<region>.amazonaws.com/<account>/<name>``).
    :param region_name: default: read from an AWS queue URL, else botocore's configuration.
    :param endpoint_url: another SQS endpoint (LocalStack, moto's server, a VPC endpoint).
    :param aws_access_key_id, aws_secret_access_key, aws_session_token: default:
        botocore's credential chain.
    :param format: ``"eventbus"`` (default) or ``"fastapi-events"``.
    :param fifo: default: true when the queue's name ends in ``.fifo``.
    :param connect_timeout, read_timeout: seconds, per call.
    :param max_message_bytes: the largest message (body and attributes) and call.
    """

    def __init__(
        self,
        queue_url: str,
        *,
        region_name: str | None = None,
        endpoint_url: str | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        format: WireFormat | str = WireFormat.EVENTBUS,
        fifo: bool | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 10.0,
        max_message_bytes: int = MAX_BYTES,
    ) -> None:
        require_extra("aiobotocore", "sqs", "SQSForwarder")
        parts = urlsplit(queue_url) if isinstance(queue_url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.path.strip("/"):
            raise ConfigurationError(
                f"SQSForwarder: queue_url must be a queue's http(s) URL such as "
                f"https://sqs.eu-west-1.amazonaws.com/123456789012/orders, got "
                f"{mask_url(queue_url) if isinstance(queue_url, str) else queue_url!r}"
            )
        if not 1 <= max_message_bytes <= MAX_BYTES * 4:
            raise ConfigurationError(
                f"SQSForwarder: max_message_bytes must be 1 to {MAX_BYTES * 4}, got "
                f"{max_message_bytes!r}"
            )
        self.queue_url = queue_url
        self.queue_name = parts.path.rstrip("/").rpartition("/")[2]
        self.name = f"SQSForwarder({self.queue_name})"
        self.fifo = self.queue_name.endswith(".fifo") if fifo is None else fifo
        self.ordered = self.fifo
        self.format = WireFormat(format)
        match = _AWS_REGION.search(parts.hostname or "")
        self.region_name = region_name or (match.group(1) if match else None)
        self.endpoint_url = endpoint_url
        self._credentials = {
            key: value
            for key, value in (
                ("aws_access_key_id", aws_access_key_id),
                ("aws_secret_access_key", aws_secret_access_key),
                ("aws_session_token", aws_session_token),
            )
            if value is not None
        }
        self._timeouts = (connect_timeout, read_timeout)
        self._max_bytes = max_message_bytes
        self._secrets = Secrets(
            [*self._credentials.values(), *secrets_of(queue_url)], environment=_ENV_CREDENTIALS
        )
        if endpoint_url:
            self._secrets.add(secrets_of(endpoint_url))
        self._client: Any = None
        self._stack: AsyncExitStack | None = None
        self._lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        endpoint = ""
        if self.endpoint_url is not None:
            endpoint = f", endpoint_url={mask_url(self.endpoint_url)!r}"
        credentials = ", credentials=***" if self._credentials else ""
        return (
            f"SQSForwarder(queue_url={mask_url(self.queue_url)!r}, region_name="
            f"{self.region_name!r}{endpoint}{credentials}, format={self.format.value!r})"
        )

    # ------------------------------------------------------------------ sending
    async def send_many(self, envelopes: Sequence[EventEnvelope]) -> None:
        encoded, refused = encode_batch(envelopes, self.format)
        entries: list[tuple[EventEnvelope, Entry, int]] = []
        for envelope, body in encoded:
            try:
                entry, size = self._entry(envelope, body)
            except (_Unsendable, EventSerializationError) as exc:
                refused[envelope.id] = str(exc)
                continue
            entries.append((envelope, entry, size))
        chunks = _chunks(entries, self._max_bytes)
        client: Any = await self._connected() if chunks else None
        for number, chunk in enumerate(chunks):
            try:
                reply = await client.send_message_batch(
                    QueueUrl=self.queue_url,
                    Entries=[dict(entry, Id=str(i)) for i, (_, entry, _) in enumerate(chunk)],
                )
            except Exception as exc:
                problem = f"SendMessageBatch failed: {self._secrets.explain(exc)}"
                if number == 0 and not refused:
                    raise ForwardingFailed(f"{self.name}: {problem}") from None
                left = [envelope for rest in chunks[number:] for envelope, _, _ in rest]
                refused.update((envelope.id, problem) for envelope in left)
                break
            for failure in reply.get("Failed", ()):
                envelope = chunk[int(failure["Id"])][0]
                text = f"{failure.get('Code', '?')}: {failure.get('Message', '')}"
                refused[envelope.id] = f"SQS refused the message: {self._secrets.redact(text)}"
        if refused:
            raise PartialBatchFailure(refused)

    def _entry(self, envelope: EventEnvelope, body: str) -> tuple[Entry, int]:
        attributes = {
            "event_name": envelope.name,
            "event_id": envelope.id,
            "correlation_id": envelope.correlation_id,
        }
        entry: Entry = {
            "MessageBody": body,
            "MessageAttributes": {
                key: {"DataType": "String", "StringValue": value}
                for key, value in attributes.items()
            },
        }
        size = len(body.encode()) + sum(
            len(key) + len("String") + len(value.encode()) for key, value in attributes.items()
        )
        if size > self._max_bytes:
            raise _Unsendable(f"its message is {size} bytes, over SQS's limit of {self._max_bytes}")
        if self.fifo:
            group = event_key(envelope) or envelope.correlation_id
            for what, value in (("message group", group), ("deduplication id", envelope.id)):
                if not _FIFO_ID.fullmatch(value):
                    raise _Unsendable(
                        f"its FIFO {what} {value[:140]!r} is not 1-128 printable ASCII "
                        "characters without spaces"
                    )
            entry["MessageGroupId"] = group
            entry["MessageDeduplicationId"] = envelope.id
        return entry, size

    # ------------------------------------------------------------------ the client
    async def _connected(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # first use, or the app's lifespan runs on a new loop
            self._loop, self._lock, self._client, self._stack = loop, asyncio.Lock(), None, None
        assert self._lock is not None
        async with self._lock:
            if self._client is None:
                try:
                    self._client = await self._open()
                except Exception as exc:
                    raise ForwardingFailed(
                        f"{self.name}: cannot create the SQS client: {self._secrets.explain(exc)}"
                    ) from None
        return self._client

    async def _open(self) -> Any:
        from aiobotocore.config import AioConfig
        from aiobotocore.session import get_session

        connect_timeout, read_timeout = self._timeouts
        config = AioConfig(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"total_max_attempts": 1},
        )
        session = get_session()
        stack = AsyncExitStack()
        client = await stack.enter_async_context(
            session.create_client(
                "sqs",
                region_name=self.region_name,
                endpoint_url=self.endpoint_url,
                config=config,
                **self._credentials,
            )
        )
        self._stack = stack
        # Credentials botocore found by itself (environment, files): never shown either.
        credentials = await session.get_credentials()
        if credentials is not None:
            frozen = await credentials.get_frozen_credentials()
            self._secrets.add((frozen.access_key, frozen.secret_key, frozen.token))
        return client

    async def aclose(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None and self._loop is asyncio.get_running_loop():
            await stack.aclose()
        self._loop = None


def _chunks(
    entries: list[tuple[EventEnvelope, Entry, int]], max_bytes: int
) -> list[list[tuple[EventEnvelope, Entry, int]]]:
    """Calls of at most MAX_ENTRIES messages and ``max_bytes`` in all, in order."""
    chunks: list[list[tuple[EventEnvelope, Entry, int]]] = []
    size = 0
    for item in entries:
        if not chunks or len(chunks[-1]) == MAX_ENTRIES or size + item[2] > max_bytes:
            chunks.append([])
            size = 0
        chunks[-1].append(item)
        size += item[2]
    return chunks
