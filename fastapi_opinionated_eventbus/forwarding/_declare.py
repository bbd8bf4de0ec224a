"""``forward_events``: declare a forwarder at import time, like ``@OnInternalEvent``."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Unpack

from .._core.declarations import declare_forward
from ._routes import forward_subscription
from ._spec import Forward, ForwardOptions

if TYPE_CHECKING:
    from pydantic import BaseModel

    from ._protocol import Forwarder

__all__ = ["forward_events"]


def forward_events(
    event: str | type[BaseModel], forwarder: Forwarder, **options: Unpack[ForwardOptions]
) -> Forward:
    """Forward the events ``event`` matches through ``forwarder``, from a module of the
    app (``app/domains/...``), at import time::

        forward_events("order.*", SQSForwarder(queue_url=..., region_name="eu-west-1"))

    Like ``@OnInternalEvent``: recorded now, subscribed by the plugin when the app is
    created (and again if its lifespan runs again), listed by the CLI. Takes the options
    of ``eventbus_api().forward()``; returns the :class:`Forward` it declared.
    """
    spec = Forward(event, forwarder, **options)
    sub, schema = forward_subscription(spec, None)
    caller = sys._getframe(1)
    declare_forward(
        {
            "event": sub.event,
            "forward": spec,
            "subscription": sub,
            "schema": schema,
            "location": (caller.f_code.co_filename, caller.f_lineno),
        }
    )
    return spec
