"""Publishing records: ``await emit()`` returns once the broker acknowledged (acks=all).

aiokafka's producer batches by itself: records sent while a request is in flight leave
together in the next one, so concurrent emits share round trips. A batch of events
(``emit_many``) is appended to the producer in one go and leaves in one request.

Partitions: a record keyed by a typed event's ``__event_key__`` goes where its key hashes
(aiokafka's partitioner, as every Kafka client does), so one key stays in one partition.
A record keyed by its own event id (the default) shares its key with no other: it goes
to the current "sticky" partition, which moves on to the next one every
``_STICKY_RECORDS`` records. Spread stays even, and records sent together fill one batch
instead of one per partition (what Kafka's own clients do for records without a key).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from ..._core.errors import BackendUnavailable
from .config import KafkaConfig
from .wire import Outgoing

__all__ = ["Publisher"]

_STICKY_RECORDS = 256


class Publisher:
    def __init__(self, producer: AIOKafkaProducer, config: KafkaConfig, timeout: float) -> None:
        self._producer = producer
        self._config = config
        self._topic = config.topic
        self._timeout = timeout
        self.in_flight = 0
        """Publishes waiting for the broker now (reported as unconfirmed at shutdown)."""
        self._sticky = 0
        self._sticky_left = 0

    def _partition(self, own_key: bool) -> int | None:
        """The partition of a record keyed by its event id (``own_key``); None: hash the key."""
        if not own_key:
            return None
        if not self._sticky_left:
            partitions = self._producer.client.cluster.partitions_for_topic(self._topic)
            if not partitions:
                return None  # no metadata yet: the partitioner waits for it
            self._sticky = (self._sticky + 1) % len(partitions)
            self._sticky_left = _STICKY_RECORDS
        self._sticky_left -= 1
        return self._sticky

    async def publish(self, record: Outgoing, name: str) -> None:
        """Send one record and wait for the broker's acknowledgement.

        :raises BackendUnavailable: not acknowledged within ``publish_timeout``, or refused.
            A record already handed to the producer may still be stored afterwards.
        """
        key, value, headers, own_key = record
        self.in_flight += 1
        sent: asyncio.Future[object] | None = None
        try:
            async with asyncio.timeout(self._timeout):
                sent = await self._producer.send(
                    self._topic, value, key=key, headers=headers, partition=self._partition(own_key)
                )
                await asyncio.shield(sent)
        except TimeoutError:
            _abandon([sent] if sent is not None else [])
            raise self.timed_out(repr(name)) from None
        except KafkaError as exc:
            raise self.refused(repr(name), exc) from None
        finally:
            self.in_flight -= 1

    async def publish_many(self, records: Sequence[tuple[Outgoing, str]]) -> None:
        """Send every record, in order, then wait for all acknowledgements at once.

        :raises BackendUnavailable: naming the first record not acknowledged (those before
            it are stored).
        """
        waiting: list[asyncio.Future[object]] = []
        try:
            async with asyncio.timeout(self._timeout):
                # send() only appends to the producer's batches (it suspends only while its
                # buffer is full): the sender takes them all in its next request.
                for (key, value, headers, own_key), _ in records:
                    partition = self._partition(own_key)
                    sent = await self._producer.send(
                        self._topic, value, key=key, headers=headers, partition=partition
                    )
                    waiting.append(sent)
                await asyncio.wait(waiting)
        except TimeoutError:
            _abandon(waiting)
        for index, (_, name) in enumerate(records):
            what = f"event {index} of the batch ({name!r})"
            if index >= len(waiting) or not waiting[index].done():
                raise self.timed_out(what, stored_before=index)
            error = waiting[index].exception()
            if error is not None:
                raise self.refused(what, error, stored_before=index) from error

    def timed_out(self, what: str, *, stored_before: int | None = None) -> BackendUnavailable:
        return BackendUnavailable(
            f"Kafka at {self._config.servers} did not acknowledge {what} within "
            f"publish_timeout={self._timeout}s{_before(stored_before)}"
        )

    def refused(
        self, what: str, exc: BaseException, *, stored_before: int | None = None
    ) -> BackendUnavailable:
        return BackendUnavailable(
            f"Kafka at {self._config.servers} refused {what}: "
            f"{self._config.describe(exc)}{_before(stored_before)}"
        )


def _abandon(futures: Sequence[asyncio.Future[object]]) -> None:
    """Acknowledgements nobody waits for any more: their outcome is still retrieved when
    it comes, so a late failure is not reported as an exception never retrieved."""
    for future in futures:
        future.add_done_callback(_retrieve)


def _retrieve(future: asyncio.Future[object]) -> None:
    if not future.cancelled():
        future.exception()


def _before(stored: int | None) -> str:
    return f" (the {stored} before it are stored)" if stored else ""
