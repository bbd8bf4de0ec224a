"""BackgroundQueue on its own, with a fake starter in place of a backend's start_publish:
order, limits, fairness, hand-over of events that suspend, waiting, and how shutdown
classifies what it had to interrupt."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from fastapi_opinionated_eventbus._core import background
from fastapi_opinionated_eventbus._core.background import (
    _FAIR_SHARE,
    BackgroundQueue,
    Interrupted,
)
from fastapi_opinionated_eventbus._core.envelope import EventEnvelope
from fastapi_opinionated_eventbus._core.errors import (
    BackendUnavailable,
    EventBusClosed,
    EventBusError,
    EventBusOverloaded,
)
from fastapi_opinionated_eventbus._core.interruption import Interruption, note_interruption
from fastapi_opinionated_eventbus._core.lifecycle import Lifecycle
from fastapi_opinionated_eventbus._core.registry import Plan

Behaviour = Callable[[EventEnvelope], Awaitable[object] | None]
"""What the fake starter does for one event name: None (finished in the first step), an
awaitable (the rest), or raise."""

PLAN = Plan(())


class Harness:
    """A queue whose starter records each event and does what ``behaviour`` says."""

    def __init__(self, max_pending: int = 1000) -> None:
        self.started: list[str] = []
        self.contexts: list[contextvars.Context] = []
        self.tasks: dict[str, asyncio.Task[object] | None] = {}
        self.behaviour: dict[str, Behaviour] = {}
        self.lost: list[EventEnvelope] = []
        self.any_lost = asyncio.Event()
        self.submitted: list[contextvars.Context] = []
        self.queue = BackgroundQueue(self.start, max_pending, self.on_lost)

    def on_lost(self, envelope: EventEnvelope) -> None:
        self.lost.append(envelope)
        self.any_lost.set()

    def start(
        self, envelope: EventEnvelope, plan: Plan, context: contextvars.Context
    ) -> Awaitable[object] | None:
        self.started.append(envelope.name)
        self.contexts.append(context)
        self.tasks[envelope.name] = asyncio.current_task()
        behaviour = self.behaviour.get(envelope.name)
        return None if behaviour is None else behaviour(envelope)

    def submit(self, name: str, *, from_handler: bool = False) -> EventEnvelope:
        envelope = EventEnvelope(name, (), {})
        context = contextvars.copy_context()
        self.queue.submit(envelope, PLAN, context, from_handler)
        self.submitted.append(context)
        return envelope

    def counters(self) -> dict[str, int]:
        q = self.queue
        return {
            "accepted": q.accepted,
            "handled": q.handled,
            "lost": q.lost,
            "abandoned": q.abandoned,
            "unconfirmed": q.unconfirmed,
            "pending": q.pending,
        }


MakeHarness = Callable[..., Harness]


@pytest.fixture
async def make_harness() -> AsyncIterator[MakeHarness]:
    """``make_harness(max_pending=1000)``: a harness bound to the test's loop."""
    made: list[Harness] = []

    def make(max_pending: int = 1000) -> Harness:
        harness = Harness(max_pending)
        harness.queue.bind(asyncio.get_running_loop())
        made.append(harness)
        return harness

    yield make
    for harness in made:
        if harness.queue.state is not Lifecycle.CLOSED:
            await harness.queue.cancel_all()  # leaves no task behind


@pytest.fixture
async def harness(make_harness: MakeHarness) -> Harness:
    return make_harness()


def rest_of(rest: Callable[[], Awaitable[object]]) -> Behaviour:
    """A behaviour whose first step suspends, handing back ``rest()`` to finish."""
    return lambda envelope: rest()


def submit_from_thread(harness: Harness, names: list[str]) -> list[str]:
    """Submit from another thread while the loop is blocked here: nothing handed over is
    accepted on the loop until the caller awaits."""
    outcomes: list[str] = []

    def run() -> None:
        for name in names:
            try:
                harness.submit(name)
                outcomes.append("accepted")
            except EventBusOverloaded:
                outcomes.append("refused")

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(5)
    assert not thread.is_alive()
    return outcomes


# ---------------------------------------------------------------- accepting and order


async def test_events_run_in_submission_order_once_the_caller_yields(harness: Harness) -> None:
    names = [f"e{i}" for i in range(5)]
    for name in names:
        harness.submit(name)

    assert harness.started == []  # submit only queues
    assert harness.queue.pending == 5
    assert await harness.queue.wait_idle(5) == 0
    assert harness.started == names
    # Each started in the context captured at its submit.
    assert all(a is b for a, b in zip(harness.contexts, harness.submitted, strict=True))
    assert harness.counters() == {
        "accepted": 5,
        "handled": 5,
        "lost": 0,
        "abandoned": 0,
        "unconfirmed": 0,
        "pending": 0,
    }


async def test_an_unbound_queue_binds_to_the_loop_that_submits_first() -> None:
    harness = Harness()
    harness.submit("first")
    assert await harness.queue.wait_idle(5) == 0
    # Bound now: another thread can hand events over to this loop.
    assert submit_from_thread(harness, ["from.thread"]) == ["accepted"]
    assert await harness.queue.wait_idle(5) == 0
    assert harness.started == ["first", "from.thread"]


def test_an_unbound_queue_without_a_running_loop_says_the_app_must_start() -> None:
    harness = Harness()
    with pytest.raises(EventBusError, match="has no event loop yet: start the app"):
        harness.submit("too.early")
    assert harness.queue.accepted == 0


async def test_max_pending_refuses_the_event_beyond_it_on_the_loop_thread(
    make_harness: MakeHarness,
) -> None:
    harness = make_harness(max_pending=3)
    for i in range(3):
        harness.submit(f"e{i}")

    with pytest.raises(
        EventBusOverloaded,
        match=r"cannot accept event 'e3': 3 background events are in flight \(max_pending=3\)",
    ):
        harness.submit("e3")

    assert harness.queue.accepted == 3
    assert await harness.queue.wait_idle(5) == 0
    harness.submit("room.again")
    assert await harness.queue.wait_idle(5) == 0
    assert harness.started == ["e0", "e1", "e2", "room.again"]


async def test_max_pending_counts_events_handed_over_from_other_threads(
    make_harness: MakeHarness,
) -> None:
    harness = make_harness(max_pending=3)

    outcomes = submit_from_thread(harness, ["t0", "t1", "t2", "t3"])

    assert outcomes == ["accepted", "accepted", "accepted", "refused"]
    assert harness.queue.pending == 3  # handed over, not yet on the loop
    with pytest.raises(EventBusOverloaded):
        harness.submit("on.loop")  # the hand-overs count on the loop thread too
    assert await harness.queue.wait_idle(5) == 0
    assert harness.started == ["t0", "t1", "t2"]
    assert harness.queue.accepted == harness.queue.handled == 3


async def test_events_pending_on_the_loop_count_against_other_threads(
    make_harness: MakeHarness,
) -> None:
    harness = make_harness(max_pending=3)
    harness.submit("l0")
    harness.submit("l1")

    assert submit_from_thread(harness, ["t0", "t1"]) == ["accepted", "refused"]
    assert await harness.queue.wait_idle(5) == 0
    assert harness.started == ["l0", "l1", "t0"]


def test_a_closed_loop_refuses_a_hand_over_and_counts_nothing() -> None:
    harness = Harness()
    loop = asyncio.new_event_loop()
    harness.queue.bind(loop)
    loop.close()

    with ThreadPoolExecutor(1) as pool, pytest.raises(EventBusClosed, match="loop is closed"):
        pool.submit(harness.submit, "after.close").result(timeout=5)

    assert harness.queue.accepted == 0
    assert harness.queue.pending == 0


async def test_while_draining_only_events_emitted_by_handlers_are_taken(
    harness: Harness,
) -> None:
    harness.queue.state = Lifecycle.DRAINING

    with pytest.raises(EventBusClosed, match="cannot emit 'late' in the background"):
        harness.submit("late")
    harness.submit("from.handler", from_handler=True)
    assert await harness.queue.wait_idle(5) == 0
    assert harness.started == ["from.handler"]

    harness.queue.state = Lifecycle.CLOSED
    with pytest.raises(EventBusClosed):
        harness.submit("after.close", from_handler=True)
    assert harness.queue.accepted == 1


# ---------------------------------------------------------------- draining


async def test_a_burst_lets_other_tasks_run_after_each_fair_share(harness: Harness) -> None:
    total = 2 * _FAIR_SHARE + 1
    for i in range(total):
        harness.submit(f"e{i}")
    seen: list[int] = []

    async def another_task() -> None:
        seen.append(len(harness.started))

    # Scheduled after the drainer: it runs when the drainer first lets the loop go.
    other = asyncio.create_task(another_task())
    assert await harness.queue.wait_idle(5) == 0
    await asyncio.wait_for(other, 5)

    assert seen == [_FAIR_SHARE]
    assert len(harness.started) == total


async def test_an_event_that_suspends_keeps_its_task_and_the_queue_goes_on(
    harness: Harness,
) -> None:
    gate = asyncio.Event()
    fast_done = asyncio.Event()
    rest_task: list[asyncio.Task[object] | None] = []

    async def slow_rest() -> None:
        rest_task.append(asyncio.current_task())
        await asyncio.wait_for(gate.wait(), 5)

    def fast_last(envelope: EventEnvelope) -> None:
        fast_done.set()

    harness.behaviour["slow"] = rest_of(slow_rest)
    harness.behaviour["fast.last"] = fast_last
    harness.submit("slow")
    harness.submit("fast")
    harness.submit("fast.last")

    await asyncio.wait_for(fast_done.wait(), 5)  # the fast ones did not wait for slow

    assert harness.queue.pending == 1
    assert rest_task == [harness.tasks["slow"]]  # its rest runs in the task that started it
    assert harness.tasks["fast"] is not harness.tasks["slow"]  # a new drainer took the queue
    assert harness.tasks["fast.last"] is harness.tasks["fast"]
    gate.set()
    assert await harness.queue.wait_idle(5) == 0
    assert harness.queue.handled == 3


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (BackendUnavailable("no ack in time", may_be_stored=True), "unconfirmed"),
        (BackendUnavailable("not connected"), "lost"),
        (RuntimeError("broker said no"), "lost"),
    ],
    ids=["may be stored", "not stored", "other error"],
)
@pytest.mark.parametrize("when", ["in the first step", "after suspending"])
async def test_a_starter_failure_is_counted_and_the_queue_goes_on(
    harness: Harness,
    error: Exception,
    outcome: str,
    when: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def fail_later() -> None:
        await asyncio.sleep(0)
        raise error

    def fail(envelope: EventEnvelope) -> Awaitable[object] | None:
        if when == "after suspending":
            return fail_later()
        raise error

    harness.behaviour["failing"] = fail
    failing = harness.submit("failing")
    harness.submit("next")

    assert await harness.queue.wait_idle(5) == 0

    assert harness.started == ["failing", "next"]
    counters = harness.counters()
    assert counters["handled"] == 1
    assert counters["lost"] == (outcome == "lost")
    assert counters["unconfirmed"] == (outcome == "unconfirmed")
    assert harness.lost == ([failing] if outcome == "lost" else [])
    assert failing.id in caplog.text
    assert str(error) in caplog.text


def test_count_refused_counts_an_accepted_and_lost_event() -> None:
    harness = Harness()
    envelope = EventEnvelope("after.response", (), {})

    harness.queue.count_refused(envelope, "the bus was shutting down")

    assert harness.counters() == {
        "accepted": 1,
        "handled": 0,
        "lost": 1,
        "abandoned": 0,
        "unconfirmed": 0,
        "pending": 0,
    }
    assert harness.lost == [envelope]


# ---------------------------------------------------------------- waiting


async def test_wait_idle_returns_at_once_when_nothing_is_in_flight(harness: Harness) -> None:
    assert await harness.queue.wait_idle(None) == 0


async def test_one_waiters_timeout_does_not_end_the_others_wait(harness: Harness) -> None:
    gate = asyncio.Event()
    harness.behaviour["held"] = rest_of(gate.wait)
    harness.submit("held")
    patient = [asyncio.create_task(harness.queue.wait_idle(5)) for _ in range(3)]

    assert await harness.queue.wait_idle(0.01) == 1  # timed out: one event left

    assert not any(task.done() for task in patient)
    gate.set()
    assert await asyncio.wait_for(asyncio.gather(*patient), 5) == [0, 0, 0]


# ---------------------------------------------------------------- shutdown


async def test_cancel_all_loses_the_events_that_never_started(harness: Harness) -> None:
    queued = [harness.submit(f"q{i}") for i in range(3)]

    outcome = await harness.queue.cancel_all()

    assert outcome == Interrupted(lost=queued, abandoned=[], unconfirmed=[])
    assert harness.started == []
    assert harness.lost == queued
    assert harness.counters() == {
        "accepted": 3,
        "handled": 0,
        "lost": 3,
        "abandoned": 0,
        "unconfirmed": 0,
        "pending": 0,
    }
    with pytest.raises(EventBusClosed):
        harness.submit("after")


async def test_cancel_all_classifies_each_interrupted_event(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(background, "_UNWIND_SECONDS", 0.05)
    never = asyncio.Event()
    released = asyncio.Event()
    stubborn_finished = asyncio.Event()
    entered: dict[str, asyncio.Event] = {}

    async def cancelled() -> None:
        entered["cancelled"].set()
        await never.wait()

    async def noted(name: str, kind: Interruption) -> None:
        entered[name].set()
        try:
            await never.wait()
        except asyncio.CancelledError:
            note_interruption(kind)
            raise

    async def stubborn() -> None:
        entered["stubborn"].set()
        with contextlib.suppress(asyncio.CancelledError):
            await never.wait()  # its cancellation is ignored: it runs on past the unwind time
        await asyncio.wait_for(released.wait(), 5)
        stubborn_finished.set()

    rests: dict[str, Callable[[], Awaitable[None]]] = {
        "cancelled": cancelled,
        "noted.unconfirmed": lambda: noted("noted.unconfirmed", Interruption.UNCONFIRMED),
        "noted.abandoned": lambda: noted("noted.abandoned", Interruption.ABANDONED),
        "stubborn": stubborn,
    }
    harness.submit("done")
    assert await harness.queue.wait_idle(5) == 0
    for name, rest in rests.items():
        entered[name] = asyncio.Event()
        harness.behaviour[name] = rest_of(rest)
        harness.submit(name)
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in entered.values())), 5)
    harness.submit("queued")  # not started yet when shutdown gives up

    outcome = await harness.queue.cancel_all()

    def names(events: list[EventEnvelope]) -> list[str]:
        return sorted(event.name for event in events)

    assert names(outcome.lost) == ["cancelled", "queued"]
    assert names(outcome.abandoned) == ["noted.abandoned", "stubborn"]
    assert names(outcome.unconfirmed) == ["noted.unconfirmed"]
    assert names(harness.lost) == ["cancelled", "queued"]
    expected = {
        "accepted": 6,
        "handled": 1,  # "done", the only event that ran to its end
        "lost": 2,
        "abandoned": 2,
        "unconfirmed": 1,
        "pending": 0,
    }
    assert harness.counters() == expected

    # The abandoned event finishing later is not counted a second time.
    released.set()
    await asyncio.wait_for(stubborn_finished.wait(), 5)
    assert harness.counters() == expected


async def test_an_event_handed_over_after_shutdown_is_counted_lost(harness: Harness) -> None:
    assert submit_from_thread(harness, ["late"]) == ["accepted"]
    outcome = await harness.queue.cancel_all()  # before the loop accepted the hand-over
    await asyncio.wait_for(harness.any_lost.wait(), 5)

    assert outcome == Interrupted([], [], [])
    assert harness.started == []
    assert [event.name for event in harness.lost] == ["late"]
    assert harness.counters()["lost"] == 1
    assert harness.counters()["pending"] == 0
    assert harness.counters()["handled"] == 0


async def test_a_waiter_is_woken_when_a_late_hand_over_is_counted_lost(harness: Harness) -> None:
    """The last event in flight, handed over just before shutdown and lost on arrival,
    ends the wait at once: a waiter does not sit out its whole timeout."""
    waiter = asyncio.create_task(harness.queue.wait_idle(None))  # runs before the hand-over
    assert submit_from_thread(harness, ["late"]) == ["accepted"]
    await harness.queue.cancel_all()  # before the loop accepted the hand-over

    assert await asyncio.wait_for(waiter, 5) == 0
    assert [event.name for event in harness.lost] == ["late"]
