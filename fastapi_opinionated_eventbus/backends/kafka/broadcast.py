"""Broadcast subscriptions: run in every process of the app that is running at the time.

Design: no group and no second topic. Each process with at least one broadcast
subscription reads every partition of the events topic itself (manual assignment, no
consumer group, nothing committed), starting from the end when it starts: the end
offsets the broker reports, and records timestamped before the reader started are
skipped too. Publishers need not know who subscribes to what.

Guarantee: **at most once per process, while that process is running**. An event emitted
while a process is down (or before its bus started) never reaches that process's
broadcast handlers, and nothing is redelivered: a failing handler is logged and
dead-lettered like any other, a process killed mid-handler loses that run. Partitions
added to the topic later are not read until the process restarts.

Cost: such a process fetches every record of the app once more; records whose name has
no broadcast handler here are skipped before their body is decoded.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from fastapi_opinionated.shared.logger import ns_logger

from ..._codec import Codec, MalformedEntry
from ..._core.settings import BusSettings
from ..._text import loggable
from ..backoff import Backoff
from ..base import BackendPort
from ..unwind import finish_tasks
from . import wire
from .config import KafkaConfig
from .dead import DeadLetterTopic

__all__ = ["BroadcastReader"]

logger = ns_logger("EventBus.kafka")


class BroadcastReader:
    def __init__(
        self,
        port: BackendPort,
        config: KafkaConfig,
        codec: Codec,
        dead: DeadLetterTopic,
        settings: BusSettings,
    ) -> None:
        self._port = port
        self._config = config
        self._codec = codec
        self._dead = dead
        self._slots = asyncio.Semaphore(settings.kafka_concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._consumer: AIOKafkaConsumer | None = None
        self._loop: asyncio.Task[None] | None = None
        self._since_ms = 0

    async def start(self) -> None:
        """Events emitted once start() returned are seen (if this process has broadcast
        handlers by then): the reader is positioned before it returns."""
        self._since_ms = int(time.time() * 1000)
        if self._port.has_handlers(broadcast=True):
            self._consumer = await self._open()
        self._loop = asyncio.get_running_loop().create_task(
            self._read_loop(), name="eventbus-kafka-broadcast"
        )

    def running(self) -> set[asyncio.Task[None]]:
        return set(self._tasks)

    async def pause(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)
            self._loop = None

    async def stop(self, grace: float) -> tuple[int, int]:
        """Give the running handlers ``grace`` seconds, cancel the rest; returns how many
        were cancelled and how many still ran after that (abandoned)."""
        await self.pause()
        finished = await finish_tasks(self._tasks, grace)
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                async with asyncio.timeout(max(grace, 1.0)):
                    await consumer.stop()
            except Exception as exc:
                logger.warning(f"Closing the broadcast reader failed: {self._config.describe(exc)}")
        return finished

    async def _open(self) -> AIOKafkaConsumer:
        consumer = AIOKafkaConsumer(
            **self._config.common(), enable_auto_commit=False, auto_offset_reset="earliest"
        )
        try:
            await consumer.start()
            partitions = consumer.partitions_for_topic(self._config.topic)
            if not partitions:
                await consumer.topics()  # refresh: the topic may have just been created
                partitions = consumer.partitions_for_topic(self._config.topic) or set()
            if not partitions:
                raise LookupError(f"topic {self._config.topic!r} has no partitions (yet)")
            tps = [TopicPartition(self._config.topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_end(*tps)
        except BaseException:
            await consumer.stop()
            raise
        return consumer

    async def _read_loop(self) -> None:
        backoff = Backoff(initial=0.1, maximum=5.0)
        failing = False
        while True:
            try:
                if not self._port.has_handlers(broadcast=True):
                    # Nobody to run: start again from the end when a subscription comes.
                    if self._consumer is not None:
                        consumer, self._consumer = self._consumer, None
                        await consumer.stop()
                    self._since_ms = int(time.time() * 1000)
                    await asyncio.sleep(0.5)
                    continue
                if self._consumer is None:
                    self._consumer = await self._open()
                batches = await self._consumer.getmany(timeout_ms=1000)
                for records in batches.values():
                    for record in records:
                        if record.timestamp >= self._since_ms and self._wanted(record):
                            await self._start(record)
                if failing:
                    failing = False
                    backoff.reset()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not failing:
                    failing = True
                    logger.warning(
                        f"Broadcast reader of {self._config.topic} failed "
                        f"({self._config.describe(exc)}); retrying with backoff"
                    )
                await backoff.sleep()

    def _wanted(self, record: Any) -> bool:
        name = wire.header(record.headers or (), wire.EVENT_NAME)
        if name is None:
            return False
        try:
            return self._port.handles(name.decode(), broadcast=True)
        except ValueError:  # not UTF-8, or not a valid event name: nobody handles it
            return False

    async def _start(self, record: Any) -> None:
        await self._slots.acquire()
        task = asyncio.Task(self._handle(record), loop=asyncio.get_running_loop(), eager_start=True)
        if not task.done():
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _handle(self, record: Any) -> None:
        try:
            envelope = wire.decode(self._codec, record, 1)
            result = await self._port.deliver(envelope, broadcast=True)
            if result.failures:
                await self._dead.add(
                    self._dead.for_failures(
                        record, envelope, result.failures, "broadcast handler failed"
                    )
                )
        except MalformedEntry as exc:
            # The group consumer dead-letters malformed records; here they are only skipped.
            logger.warning(
                f"Broadcast reader skipped record {record.topic}/{record.partition}/"
                f"{record.offset}: {loggable(exc, 500)}"
            )
        except Exception as exc:
            logger.error(
                f"Broadcast handling of record {record.topic}/{record.partition}/"
                f"{record.offset} failed: {self._config.describe(exc, with_traceback=True)}"
            )
        finally:
            self._slots.release()
