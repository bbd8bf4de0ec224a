"""The contract between the bus and a backend, in both directions.

A *backend* decides where an emitted event goes: :class:`~.local.LocalBackend` runs its
handlers in this process, :class:`~.redis.RedisStreamsBackend` stores it in a Redis
stream from which some process of the app runs them. The bus holds exactly one backend
and never asks which kind it is.

A backend sees the bus only through a :class:`BackendPort`: it hands every event it
receives to :meth:`BackendPort.deliver` and gets back which handlers failed. The
backend owns what happens around that: acknowledging, dead letters, replay, health.

The contract, for anyone writing a backend:

* ``publish(envelope, plan)`` returns once the event is **durably accepted** (stored by
  the broker, or -- in process -- handled). It raises :class:`BackendUnavailable` when
  the broker did not confirm within ``publish_timeout``, never returning success for an
  event that was not stored. It raises :class:`EventSerializationError` before sending
  anything when the event cannot be encoded; ``check(envelope)`` raises the same error
  without sending, and is called by the non-blocking emits in the caller's hands.
* A consuming backend **acknowledges an event only after** ``deliver()`` returned for it,
  and after writing a dead letter for each failure that ``deliver()`` reported. Delivery
  is therefore at least once: ``envelope.id`` must be the same on every delivery.
* ``pause()`` stops taking new events (shutdown has begun), ``settle(timeout)`` waits for
  the handlers running now, ``stop(timeout)`` releases everything; each returns within its
  timeout, whatever the handlers do.
* ``describe_servers()`` says where the events travel (host, port, protocol), for the
  event catalog's AsyncAPI document: never a user name, password or token. An in-process
  backend has none.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Sequence
from contextvars import Context
from typing import TYPE_CHECKING, Any, NotRequired, Protocol, TypedDict, runtime_checkable

from .._core.stepping import start_in as start_in_context

if TYPE_CHECKING:
    from pydantic import BaseModel

    from .._core.dead_letters import DeadLetter
    from .._core.envelope import EventEnvelope
    from .._core.registry import Plan, Subscription
    from .._core.results import EmitResult
    from .._core.settings import BusSettings

__all__ = [
    "Backend",
    "BackendFactory",
    "BackendHealth",
    "BackendPort",
    "ServerInfo",
    "StopReport",
    "start_in_context",
]


class BackendHealth(TypedDict, total=False):
    """What every backend reports in :meth:`Backend.health`; backends add their own keys
    in a subclass (e.g. ``RedisHealth``), so producer and reader share one definition."""

    backend: str
    """The backend's name (``"local"``, ``"redis"``, ...)."""
    reachable: bool
    """Whether the broker answered just now (always true in process)."""
    error: str
    """Why it is not reachable, without secrets."""
    dead_letters: int | None
    """Dead letters stored (None when the broker could not be asked)."""
    in_flight: int
    """Events received by this process whose handlers are still running."""
    warnings: list[str]
    """What the broker answered that the app should fix (e.g. a missing topic it will not
    create); the CLI's ``doctor`` shows each as a warning."""


class ServerInfo(TypedDict):
    """A broker the events travel through, as an AsyncAPI Server Object describes it.

    Never credentials: no user name, password, token or query string of a URL.
    """

    name: str
    """The server's key in the document (``"redis"``, ``"kafka"``): letters, digits,
    ``.``, ``-`` and ``_``."""
    host: str
    """``host:port`` (an IPv6 address in brackets)."""
    protocol: str
    """The URL scheme a client uses: ``"redis"``, ``"rediss"`` (TLS), ``"kafka"``, ..."""
    pathname: NotRequired[str]
    """What follows the host, when it selects something (a Redis database: ``"/0"``)."""
    description: str
    """Where on that server this app's events are (stream, topic, consumer group)."""


class StopReport(TypedDict):
    """What :meth:`Backend.stop` could not finish: never silently dropped."""

    cancelled: int
    """Received events whose handlers were cancelled; the broker delivers them again."""
    abandoned: int
    """Received events whose handlers kept running after being cancelled (they ignore
    cancellation): never waited for; the broker delivers them again."""
    unconfirmed: int
    """Publishes in flight whose outcome is unknown: the broker may or may not have them."""


@runtime_checkable
class BackendPort(Protocol):
    """The bus as a backend sees it."""

    @property
    def app_name(self) -> str | None:
        """The app's title, from which backends derive their default key/topic prefix."""

    def schema_for(self, event: str) -> type[BaseModel] | None:
        """The typed-event schema registered for ``event``, for decoding."""

    def subscriptions(self) -> Sequence[Subscription]:
        """Every subscription of this process (e.g. to register annotated types)."""

    def has_handlers(self, *, broadcast: bool) -> bool:
        """Whether this process subscribes any (broadcast or non-broadcast) handler.

        A consumer must not take events it has no handler for: acknowledging them
        unhandled would lose them for the processes that have handlers.
        """

    def handles(self, event: str, *, broadcast: bool) -> bool:
        """Whether a (broadcast or non-broadcast) handler here matches ``event``."""

    def run(self, envelope: EventEnvelope, plan: Plan) -> Coroutine[Any, Any, EmitResult]:
        """Run ``plan`` -- this process's handlers of an event emitted here -- and wait:
        what an in-process backend's ``publish`` does."""

    def start(
        self, envelope: EventEnvelope, plan: Plan, context: Context
    ) -> Awaitable[object] | None:
        """:meth:`run` for a background event, inside ``context``, as
        :meth:`Backend.start_publish` describes: an in-process backend's start_publish."""

    def keep_dead_letters(self, keep: Callable[[DeadLetter], None]) -> None:
        """Have ``keep`` receive the dead letter of every final failure of :meth:`run`
        (an in-process backend keeps them; a broker backend stores those that
        :meth:`deliver` reports itself)."""

    async def deliver(self, envelope: EventEnvelope, *, broadcast: bool | None) -> EmitResult:
        """Run this process's handlers for a received event and wait for them.

        ``broadcast`` selects the broadcast subscriptions (True), the others (False), or
        all of them (None). Never raises for a handler's failure: the failures come
        back in the result, already logged; storing their dead letters is the backend's
        job.
        """

    async def replay(self, letter: DeadLetter) -> EmitResult | None:
        """Run one dead letter's handler again here; None when that handler is not
        subscribed in this process."""


@runtime_checkable
class Backend(Protocol):
    """Where events go after emit. See the module docstring for the contract."""

    name: str
    """The name it is configured by (``backend="..."``)."""
    distributed: bool
    """True when another process may run the handlers: telemetry then marks emits as
    producer spans and carries the trace context in the event."""

    async def connect(self) -> None:
        """Connect for publishing and inspection only, without consuming (CLI tools,
        producer-only scripts)."""

    async def start(self) -> None:
        """Connect (retrying up to ``connect_timeout``) and start consuming."""

    def check(self, envelope: EventEnvelope) -> None:
        """Raise EventSerializationError now if ``envelope`` could not be published."""

    async def publish(self, envelope: EventEnvelope, plan: Plan) -> EmitResult:
        """Hand the event over; see the contract. ``plan`` is this process's resolved
        handlers for its name (an in-process backend runs them)."""

    async def publish_many(self, batch: Sequence[tuple[EventEnvelope, Plan]]) -> list[EmitResult]:
        """Hand several events over in as few round trips as the broker allows (one batch
        and one flush, one pipeline...), in order; one result per event.

        Every event is checked before anything is sent (EventSerializationError names the
        item by its index); BackendUnavailable names the first event the broker did not
        confirm (those before it are stored; it and later ones may or may not be).
        """

    def start_publish(
        self, envelope: EventEnvelope, plan: Plan, context: Context
    ) -> Awaitable[object] | None:
        """For a background emit: begin handing the event over, inside ``context`` (a copy
        of the emitter's, the event's own). Return None when that already finished, else an
        awaitable that finishes it (the background queue awaits it). Raise -- now, or from
        the awaitable -- when the event could not be handed over: it is counted lost.

        Most backends return ``start_in_context(self.publish(envelope, plan), context)``.
        """

    async def pause(self) -> None:
        """Take no new events: shutdown has begun. In-flight ones go on."""

    async def settle(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the received events being handled now."""

    async def stop(self, timeout: float) -> StopReport:
        """Within ``timeout`` seconds: finish or hand back in-flight work, close."""

    @property
    def pending_entries(self) -> int:
        """Events received and not yet acknowledged, as last seen (a metrics gauge)."""

    async def health(self) -> BackendHealth:
        """Reachability, dead-letter count and whatever else the backend can tell."""

    def describe_servers(self) -> list[ServerInfo]:
        """The brokers this app's events travel through, without credentials and without
        connecting (the catalog calls it from the CLI too); empty for an in-process
        backend. A backend without this method is described with no servers."""

    async def dead_letters(self) -> list[DeadLetter]:
        """The stored dead letters, oldest first (at most ``dead_letter_capacity``)."""

    async def replay_dead_letters(self) -> EmitResult:
        """Run each dead letter's handler again (through :meth:`BackendPort.replay`);
        the ones failing again stay. ``handled`` counts the letters replayed."""

    async def purge_dead_letters(self) -> int:
        """Delete every dead letter; return how many there were."""


class BackendFactory(Protocol):
    """What the entry point ``fastapi_opinionated_eventbus.backends`` names: usually the
    backend class itself."""

    def __call__(self, settings: BusSettings, port: BackendPort) -> Backend: ...
