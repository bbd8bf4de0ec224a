"""``EchoForwarder``: pretty-prints each forwarded event, to see what would be sent."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import TextIO

from .._core.envelope import EventEnvelope
from .._core.errors import PartialBatchFailure
from ._formats import WireFormat, encode_batch

__all__ = ["EchoForwarder"]


class EchoForwarder:
    """Writes each event, as the chosen wire format, indented, to ``stream`` (default:
    standard output at the time of writing). For debugging: it accepts every event."""

    name = "EchoForwarder"

    def __init__(
        self, stream: TextIO | None = None, *, format: WireFormat | str = WireFormat.EVENTBUS
    ) -> None:
        self.format = WireFormat(format)
        self._stream = stream

    async def send_many(self, envelopes: Sequence[EventEnvelope]) -> None:
        stream = self._stream or sys.stdout
        encoded, refused = encode_batch(envelopes, self.format)
        for _, text in encoded:
            stream.write(json.dumps(json.loads(text), indent=2, ensure_ascii=False) + "\n")
        stream.flush()
        if refused:
            raise PartialBatchFailure(refused)

    def __repr__(self) -> str:
        return f"EchoForwarder(format={self.format.value!r})"
