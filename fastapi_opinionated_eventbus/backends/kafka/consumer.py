"""The app's consumer group: each record is handled by the process owning its partition.

Design (one process):

This module holds the fetch loop, the key chains, the commits and the rebalance listener
together (hence its length): they share the per-partition tracks and change together.

* **Order per key, concurrency across keys.** Each record runs in its own task. A record
  whose key (partition key) has an earlier record still waiting or running here waits for
  it: records of one key are handled one after another, in partition order. Records of
  different keys run concurrently, at most ``kafka_concurrency`` at once.
* **Commits never pass unfinished work.** Per partition, a :class:`PartitionTrack` keeps
  the offsets received and not finished; the offset committed is the first one not
  finished. A record is finished once all its handlers ran (successfully, or failed after
  their retries, their dead letters stored first). Commits are coalesced: at most one
  request per ``COMMIT_INTERVAL`` covers every partition that moved meanwhile.
* **Backpressure.** At most ``4 * kafka_concurrency`` records are held (running, waiting
  for their key, or finished behind an unfinished one). Beyond that every partition is
  paused; polling goes on, so the group still sees this member alive, and resumes once
  half of them are done.
* **Rebalances.** When partitions are revoked, their records that have not started are
  dropped, the running ones get half the group's rebalance timeout to finish (then they
  are cancelled), what finished is committed, and the partitions go. What did not finish
  stays uncommitted: the next owner reads it again from the committed offset.
* **Resets.** A partition whose offsets go back (the broker lost data, the group's
  offsets were reset) is tracked afresh from there.
* **Deliveries.** Kafka keeps no delivery count: this process counts how often its
  handling of each record was interrupted (cancelled by a rebalance or a shutdown; the
  record may come back to this process). ``current_event().attempt`` is 1 plus that
  count; a record interrupted ``max_deliveries`` times goes to the dead-letter topic
  unhandled.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from fastapi_opinionated.shared.logger import ns_logger

from ..._codec import Codec, MalformedEntry
from ..._core.settings import BusSettings
from ..._text import loggable
from ..backoff import Backoff
from ..base import BackendPort
from ..unwind import finish_tasks
from . import wire
from .config import KafkaConfig, is_transient
from .dead import DeadLetterTopic
from .slots import Slots
from .tracking import PartitionTrack

__all__ = ["GroupConsumer"]

logger = ns_logger("EventBus.kafka")

_POLL_MS = 1000
# Interrupted records this process remembers (for attempt numbers): plenty for the
# records a rebalance can take away and give back.
_REMEMBERED = 10_000
# After a commit the next one waits this long, then covers every partition that moved
# meanwhile. Committing again as soon as the broker answered sent a request per fetched
# batch: 50-70 a second in benchmark scenario 14 (100-180 with shorter fetch waits), 6-10
# with the interval; the broker (tansu) spent 10-30% less CPU per event. A crash
# redelivers at most this much more work; shutdowns and rebalances commit at once.
COMMIT_INTERVAL = 0.1


class GroupConsumer:
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
        self._max_deliveries = settings.max_deliveries
        self._limit = 4 * settings.kafka_concurrency
        self._slots = Slots(settings.kafka_concurrency)
        options = config.consumer_options
        session_ms = options.get("session_timeout_ms", 10_000)
        rebalance_ms = options.get("rebalance_timeout_ms") or session_ms
        self._revoke_grace = rebalance_ms / 2000
        self._tracks: dict[TopicPartition, PartitionTrack] = {}
        self._chains: dict[tuple[int, bytes], asyncio.Task[None]] = {}
        self._running: set[asyncio.Task[None]] = set()
        self._interrupted: OrderedDict[tuple[TopicPartition, int], int] = OrderedDict()
        self._consumer: AIOKafkaConsumer | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._committer: asyncio.Task[None] | None = None
        self._commit_wanted = asyncio.Event()
        self._commit_lock = asyncio.Lock()
        self._paused = False
        self._stopping = False

    # ------------------------------------------------------------------ state
    @property
    def assigned(self) -> list[TopicPartition]:
        return sorted(self._tracks, key=lambda tp: tp.partition)

    @property
    def in_flight(self) -> int:
        """Records whose handlers are running now."""
        return len(self._running)

    @property
    def held(self) -> int:
        """Records received and not committable yet (running, waiting, finished early)."""
        return sum(len(track) for track in self._tracks.values())

    @property
    def client(self) -> AIOKafkaConsumer | None:
        return self._consumer

    def tasks(self) -> set[asyncio.Task[None]]:
        """Every record task: running, or waiting for its key's turn or a slot."""
        return set().union(*(track.tasks for track in self._tracks.values()))

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop_task = loop.create_task(self._fetch_loop(), name="eventbus-kafka-consumer")
        self._committer = loop.create_task(self._commit_loop(), name="eventbus-kafka-commits")

    async def pause(self) -> None:
        """Take no new records; records not started yet stay uncommitted (the next owner
        handles them); the running ones go on."""
        self._stopping = True
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
            self._loop_task = None

    async def stop(self, grace: float) -> tuple[int, int]:
        """Give the running handlers ``grace`` seconds, cancel the rest (they stay
        uncommitted), commit what finished, leave the group. Returns how many were
        cancelled, and how many still ran after that (abandoned, never waited for)."""
        await self.pause()
        cancelled, abandoned = await finish_tasks(self.tasks(), grace)
        if cancelled:
            logger.warning(
                f"Shutdown: {cancelled} record(s) still being handled after {grace}s were "
                "cancelled; they stay uncommitted and will be delivered again"
            )
        if abandoned:
            logger.error(
                f"Shutdown: {abandoned} record(s) kept running after being cancelled (a "
                "handler that ignores cancellation?) and were abandoned; they stay "
                "uncommitted and will be delivered again"
            )
        if self._committer is not None:
            self._committer.cancel()
            await asyncio.gather(self._committer, return_exceptions=True)
            self._committer = None
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await self._commit(list(self._tracks.values()), consumer, timeout=max(grace, 1.0))
            self._tracks.clear()
            try:
                async with asyncio.timeout(max(grace, 1.0)):
                    await consumer.stop()  # leaves the group: its partitions move on at once
            except Exception as exc:
                logger.warning(f"Leaving the consumer group failed: {self._config.describe(exc)}")
        return cancelled, abandoned

    async def _open(self) -> AIOKafkaConsumer:
        consumer = AIOKafkaConsumer(
            **self._config.common(),
            group_id=self._config.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",  # a new group handles what was emitted before it
            **self._config.consumer_options,
        )
        try:
            await consumer.start()
        except BaseException:
            await consumer.stop()
            raise
        # Subscribed after start(): start() would otherwise wait for the first assignment.
        consumer.subscribe([self._config.topic], listener=_Listener(self))
        return consumer

    # ------------------------------------------------------------------ fetching
    async def _fetch_loop(self) -> None:
        backoff = Backoff(initial=0.1, maximum=5.0)
        failing = False
        while True:
            try:
                if not self._port.has_handlers(broadcast=False):
                    # A process without handlers must not take partitions: records acked
                    # unhandled would be lost for the processes that have handlers.
                    await asyncio.sleep(0.5)
                    continue
                if self._consumer is None:
                    self._consumer = await self._open()
                await self._poll(self._consumer)
                if failing:
                    failing = False
                    backoff.reset()
                    logger.info(f"Consumer of {self._config.topic}: Kafka answers again")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not failing:
                    failing = True
                    level = logger.warning if is_transient(exc) else logger.error
                    level(
                        f"Consumer of {self._config.topic} at {self._config.servers} failed: "
                        f"{self._config.describe(exc, with_traceback=not is_transient(exc))}; "
                        "retrying with backoff"
                    )
                await backoff.sleep()

    async def _poll(self, consumer: AIOKafkaConsumer) -> None:
        held = self.held
        if held >= self._limit:
            self._pause_all(consumer, True)
        elif self._paused and held <= self._limit // 2:
            self._pause_all(consumer, False)
        if self._paused:
            # Nothing comes back from paused partitions; polling keeps the member alive.
            await consumer.getmany(timeout_ms=_POLL_MS // 2)
            return
        batches = await consumer.getmany(timeout_ms=_POLL_MS, max_records=self._limit - held)
        for tp, records in batches.items():
            track = self._tracks.get(tp)
            if track is None or track.revoked:
                continue  # revoked meanwhile: the next owner reads them
            for record in records:
                if not track.received(record.offset):
                    track = self._restart_track(track, record.offset)
                self._start(track, record)

    def _pause_all(self, consumer: AIOKafkaConsumer, pause: bool) -> None:
        self._paused = pause
        tps = list(self._tracks)
        if pause:
            consumer.pause(*tps)
        else:
            consumer.resume(*tps)

    # ------------------------------------------------------------------ handling
    def _restart_track(self, old: PartitionTrack, offset: int) -> PartitionTrack:
        """The partition's offsets went back (the broker lost data, or someone reset the
        group): track it afresh from ``offset``; records of the old track still running
        finish without moving commits."""
        logger.warning(
            f"Partition {old.tp.partition} of {old.tp.topic} went back to offset {offset}: "
            "the broker lost records or the group's offsets were reset; tracking it afresh"
        )
        old.revoked = True
        track = self._tracks[old.tp] = PartitionTrack(old.tp)
        track.received(offset)
        return track

    def _start(self, track: PartitionTrack, record: Any) -> None:
        chain = _chain_of(record)
        previous = self._chains.get(chain) if chain is not None else None
        # Eager: a record whose key is free and whose handlers do not suspend finishes
        # before the next one starts, without a trip through the scheduler.
        task = asyncio.Task(
            self._run(track, record, previous), loop=asyncio.get_running_loop(), eager_start=True
        )
        if task.done():
            return
        track.tasks.add(task)
        task.add_done_callback(track.tasks.discard)
        if chain is not None:
            self._chains[chain] = task
            task.add_done_callback(lambda t: self._unchain(chain, t))

    def _unchain(self, chain: tuple[int, bytes], task: asyncio.Task[None]) -> None:
        if self._chains.get(chain) is task:
            del self._chains[chain]

    async def _run(
        self, track: PartitionTrack, record: Any, previous: asyncio.Task[None] | None
    ) -> None:
        if previous is not None:
            await asyncio.wait([previous])  # its outcome is its own business
        if track.revoked or self._stopping:
            return  # not started: stays uncommitted for whoever reads it next
        slots = self._slots
        if not slots.try_take():
            await slots.take()  # all taken: wait for one, first come first served
        try:
            if track.revoked or self._stopping:
                return
            task = asyncio.current_task()
            assert task is not None
            self._running.add(task)
            where = (track.tp, record.offset)
            try:
                await self._handle(record, 1 + self._interrupted.get(where, 0))
            except asyncio.CancelledError:
                self._interrupt(where)
                raise  # uncommitted: delivered again
            except Exception as exc:
                error = self._config.describe(exc, with_traceback=True)
                logger.error(
                    f"Record {track.tp.topic}/{track.tp.partition}/{record.offset} was left "
                    "uncommitted (its partition's commits wait for it until a restart or "
                    f"rebalance delivers it again): {error}"
                )
                return
            finally:
                self._running.discard(task)
        finally:
            slots.give()
        if self._interrupted:
            self._interrupted.pop(where, None)
        if track.finished(record.offset) and not track.revoked:
            self._commit_wanted.set()

    def _interrupt(self, where: tuple[TopicPartition, int]) -> None:
        """Count one more interrupted delivery of this record (newest last)."""
        self._interrupted[where] = self._interrupted.pop(where, 0) + 1
        if len(self._interrupted) > _REMEMBERED:
            self._interrupted.popitem(last=False)

    async def _handle(self, record: Any, deliveries: int) -> None:
        if deliveries > self._max_deliveries:
            reason = (
                f"delivered {deliveries} times to this process, more than max_deliveries="
                f"{self._max_deliveries}: its handling keeps being interrupted"
            )
            await self._store([self._dead.letter(record, reason=reason, deliveries=deliveries)])
            self._log_dead(record, reason)
            return
        try:
            envelope = wire.decode(self._codec, record, deliveries)
        except MalformedEntry as exc:
            reason = f"malformed record: {exc}"
            await self._store([self._dead.letter(record, reason=reason, deliveries=deliveries)])
            self._log_dead(record, reason)
            return
        result = await self._port.deliver(envelope, broadcast=False)
        if result.failures:
            await self._store(
                self._dead.for_failures(record, envelope, result.failures, "handler failed")
            )

    async def _store(self, letters: list[wire.Record]) -> None:
        await self._dead.add_until_stored(letters, lambda: self._stopping)

    def _log_dead(self, record: Any, reason: str) -> None:
        name = wire.header(record.headers or (), wire.EVENT_NAME)
        logger.error(
            f"Record {record.topic}/{record.partition}/{record.offset} "
            f"(event {loggable(name) if name is not None else '?'}) was moved to the "
            f"dead-letter topic {self._dead.topic}: {loggable(reason, 500)}"
        )

    # ------------------------------------------------------------------ committing
    async def _commit_loop(self) -> None:
        backoff = Backoff(initial=0.1, maximum=5.0)
        while True:
            await self._commit_wanted.wait()
            self._commit_wanted.clear()
            consumer = self._consumer
            if consumer is None:
                continue
            try:
                await self._commit(list(self._tracks.values()), consumer)
                backoff.reset()
                await asyncio.sleep(COMMIT_INTERVAL)  # commits wanted meanwhile: one request
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning(
                    f"Committing offsets of {self._config.topic} failed "
                    f"({self._config.describe(exc)}); retrying"
                )
                self._commit_wanted.set()
                await backoff.sleep()

    async def _commit(
        self,
        tracks: list[PartitionTrack],
        consumer: AIOKafkaConsumer,
        timeout: float | None = None,
    ) -> None:
        """Commit the partitions of ``tracks`` whose commit point moved. With ``timeout``
        (rebalance, shutdown): best effort, never raises."""
        offsets = {t.tp: t.commit_to for t in tracks if t.dirty}
        if not offsets:
            return
        try:
            async with asyncio.timeout(timeout), self._commit_lock:
                await consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # The group moved on (this member was too slow, or the partitions left): the
            # next owner starts from the last commit, so these records run again there.
            logger.warning(
                f"Offsets of {self._config.topic} could not be committed, the group has "
                f"rebalanced ({type(exc).__name__}); their records will be delivered again"
            )
            return
        except Exception as exc:
            if timeout is None:
                raise
            logger.warning(
                f"Offsets of {self._config.topic} could not be committed "
                f"({self._config.describe(exc)}); their records will be delivered again"
            )
            return
        for track in tracks:
            if track.tp in offsets:
                track.committed = offsets[track.tp]

    # ------------------------------------------------------------------ rebalancing
    async def revoked(self, tps: set[TopicPartition]) -> None:
        tracks = [self._tracks[tp] for tp in tps if tp in self._tracks]
        for track in tracks:
            track.revoked = True  # no new record of these partitions starts from now on
        waiting = [t for track in tracks for t in track.tasks if t not in self._running]
        for task in waiting:
            task.cancel()
        running = {t for track in tracks for t in track.tasks}
        started = time.monotonic()
        cancelled, abandoned = await finish_tasks(running, self._revoke_grace)
        consumer = self._consumer
        if consumer is not None:
            await self._commit(tracks, consumer, timeout=max(1.0, self._revoke_grace))
        for track in tracks:
            del self._tracks[track.tp]
        for chain in [c for c in self._chains if TopicPartition(self._config.topic, c[0]) in tps]:
            del self._chains[chain]
        if cancelled or abandoned:
            logger.warning(
                f"Rebalance: {cancelled + abandoned} record(s) of revoked partitions still "
                f"running after {time.monotonic() - started:.1f}s were cancelled"
                + (f" ({abandoned} kept running: abandoned)" if abandoned else "")
                + "; they stay uncommitted and their next owner handles them again"
            )

    def assigned_partitions(self, tps: set[TopicPartition]) -> None:
        for tp in tps:
            self._tracks.setdefault(tp, PartitionTrack(tp))
        if self._paused and self._consumer is not None:
            self._consumer.pause(*tps)
        logger.info(
            f"Consumer group {self._config.group!r} assigned partitions "
            f"{sorted(tp.partition for tp in tps)} of {self._config.topic} to this process"
        )


def _chain_of(record: Any) -> tuple[int, bytes] | None:
    """The chain a record waits in: its key within its partition. None for a record
    keyed by its own event id (the default key: no other record shares it)."""
    key = record.key
    if key is None:
        return None
    for name, value in record.headers or ():
        if name == wire.EVENT_ID:
            return None if value == key else (record.partition, key)
    return (record.partition, key)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """aiokafka calls these from its coordinator task, around each rebalance."""

    def __init__(self, owner: GroupConsumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._owner.revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._owner.assigned_partitions(set(assigned))
