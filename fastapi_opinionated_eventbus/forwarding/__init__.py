"""Forwarding events to other services: SQS queues, webhooks, your own forwarders.

::

    from fastapi_opinionated_eventbus.forwarding import SQSForwarder

    eventbus_api().forward("order.*", SQSForwarder(queue_url=..., region_name="eu-west-1"))

A forwarder is a subscription: patterns, priority, retry, timeout, dead letters, metrics
and tracing apply as to handlers. Events are sent in batches (``batch_size`` events, or
after ``max_wait`` seconds); an event counts as handled only once the other side
accepted its batch. See the README's "Forwarding to other services".

``SQSForwarder`` (extra ``[sqs]``) and ``WebhookForwarder`` (extra ``[webhook]``) are
imported when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._core.errors import ForwardingFailed, PartialBatchFailure
from ._declare import forward_events
from ._echo import EchoForwarder
from ._formats import WireFormat, decode_event, encode_event, event_key
from ._protocol import Forwarder
from ._spec import FORWARD_RETRY, Forward, ForwardOptions

if TYPE_CHECKING:
    from ._sqs import SQSForwarder
    from ._webhook import SIGNATURE_HEADER, WebhookForwarder, sign, verify_signature

__all__ = [
    "FORWARD_RETRY",
    "SIGNATURE_HEADER",
    "EchoForwarder",
    "Forward",
    "ForwardOptions",
    "Forwarder",
    "ForwardingFailed",
    "PartialBatchFailure",
    "SQSForwarder",
    "WebhookForwarder",
    "WireFormat",
    "decode_event",
    "encode_event",
    "event_key",
    "forward_events",
    "sign",
    "verify_signature",
]

_LAZY = {
    "SQSForwarder": "._sqs",
    "WebhookForwarder": "._webhook",
    "SIGNATURE_HEADER": "._webhook",
    "sign": "._webhook",
    "verify_signature": "._webhook",
}


def __getattr__(name: str) -> Any:
    # aiobotocore and httpx are imported only by an app that uses them.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value
