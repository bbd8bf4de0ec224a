"""``WebhookForwarder``: each batch as one signed HTTP POST (httpx).

The body is a JSON array of the batch's events in the wire format; the header
``X-Eventbus-Signature: sha256=<hex>`` is the HMAC-SHA256 of the exact body bytes with the
shared secret. Any 2xx answer accepts the whole batch; anything else (another status, a
timeout, a refused connection) fails it. Redirects are not followed.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .._core.envelope import EventEnvelope
from .._core.errors import ConfigurationError, ForwardingFailed, PartialBatchFailure
from .._secrets import secrets_of
from .._text import loggable
from ._formats import WireFormat, encode_batch
from ._protocol import require_extra
from ._redaction import Secrets

__all__ = ["SIGNATURE_HEADER", "WebhookForwarder", "sign", "verify_signature"]

SIGNATURE_HEADER = "X-Eventbus-Signature"


def sign(body: bytes, secret: str | bytes) -> str:
    """The signature header's value for ``body``: ``sha256=<hex HMAC-SHA256>``."""
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify_signature(body: bytes, signature: str | None, secret: str | bytes) -> bool:
    """On the receiving side: whether ``signature`` (the header's value) signs ``body``
    (the raw request body, before any JSON parsing) with ``secret``. Constant-time."""
    if not signature:
        return False
    return hmac.compare_digest(sign(body, secret), signature.strip())


class WebhookForwarder:
    """POSTs each batch to ``url``, signed with ``secret``.

    :param secret: the shared HMAC secret (``None``: send unsigned, on purpose).
    :param headers: more request headers (e.g. ``Authorization``); their values are
        treated as secrets too.
    :param timeout: seconds for connecting, sending and reading the answer, each.
    :param format: ``"eventbus"`` (default) or ``"fastapi-events"``.
    """

    def __init__(
        self,
        url: str,
        *,
        secret: str | bytes | None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        format: WireFormat | str = WireFormat.EVENTBUS,
        signature_header: str = SIGNATURE_HEADER,
    ) -> None:
        require_extra("httpx", "webhook", "WebhookForwarder")
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigurationError("WebhookForwarder: url must be an http(s) URL")
        if secret is not None and not secret:
            raise ConfigurationError(
                "WebhookForwarder: secret is empty (pass secret=None to send unsigned)"
            )
        self.url = url
        self.format = WireFormat(format)
        self.timeout = timeout
        port = f":{parts.port}" if parts.port else ""
        # No user info, query or fragment in the name: they may carry tokens.
        self.target = f"{parts.scheme}://{parts.hostname}{port}{parts.path}"
        self.name = f"WebhookForwarder({self.target})"
        self._secret = secret
        self._signature_header = signature_header
        self._headers = dict(headers or {})
        secrets = [*secrets_of(url), *self._headers.values()]
        secrets += [value for _, value in parse_qsl(parts.query)]
        if secret is not None:
            secrets.append(secret if isinstance(secret, str) else secret.decode(errors="replace"))
        self._secrets = Secrets(secrets)
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        signed = "***" if self._secret is not None else None
        return (
            f"WebhookForwarder(url={self.target!r}, secret={signed}, format={self.format.value!r})"
        )

    async def send_many(self, envelopes: Sequence[EventEnvelope]) -> None:
        encoded, refused = encode_batch(envelopes, self.format)
        if encoded:
            await self._post(("[" + ",".join(text for _, text in encoded) + "]").encode())
        if refused:
            raise PartialBatchFailure(refused)

    async def _post(self, body: bytes) -> None:
        import httpx

        headers = {**self._headers, "Content-Type": "application/json"}
        if self._secret is not None:
            headers[self._signature_header] = sign(body, self._secret)
        try:
            response = await self._connected().post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise ForwardingFailed(f"{self.name}: {self._secrets.explain(exc)}") from None
        if not 200 <= response.status_code < 300:
            detail = loggable(self._secrets.redact(response.text), 200)
            raise ForwardingFailed(
                f"{self.name} answered HTTP {response.status_code}"
                + (f": {detail}" if detail else "")
            )

    def _connected(self) -> Any:
        import httpx

        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False)
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None and self._loop is asyncio.get_running_loop():
            await client.aclose()
        self._loop = None
