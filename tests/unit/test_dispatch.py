"""Dispatcher on its own: running a plan's handlers (the single-handler path, priority
groups, concurrency within a group), background stepping, retries, timeouts, threads,
and what a failure becomes."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any

import pytest

from fastapi_opinionated_eventbus._core.dead_letters import DeadLetter
from fastapi_opinionated_eventbus._core.dispatch import Dispatcher
from fastapi_opinionated_eventbus._core.envelope import EventEnvelope, current_event, current_var
from fastapi_opinionated_eventbus._core.errors import HandlerTimeout
from fastapi_opinionated_eventbus._core.registry import Plan, Registry, Subscription
from fastapi_opinionated_eventbus._core.results import HandlerFailure
from fastapi_opinionated_eventbus._core.retry import RetryPolicy

EVENT = "job.done"


class Recorder:
    """The dispatcher under test, with the dead letters it kept."""

    def __init__(self) -> None:
        self.dispatcher = Dispatcher(thread_pool_size=4)
        self.letters: list[DeadLetter] = []
        self.dispatcher.keep = self.letters.append


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    made = Recorder()
    yield made
    made.dispatcher.shutdown()


def envelope(*args: Any, **kwargs: Any) -> EventEnvelope:
    return EventEnvelope(EVENT, args, kwargs)


def plan_of(*subs: Subscription) -> Plan:
    registry = Registry()
    for sub in subs:
        registry.add(sub)
    return registry.plan(EVENT)


def sub_of(handler: Callable[..., Any], **options: Any) -> Subscription:
    return Subscription(EVENT, handler, **options)


async def cancel_itself() -> None:
    """Await something another party cancelled: CancelledError without being cancelled."""
    future = asyncio.get_running_loop().create_future()
    future.cancel()
    await future


def assert_self_cancelled(failure: HandlerFailure) -> None:
    assert isinstance(failure.exception, RuntimeError)
    assert "raised CancelledError without being cancelled" in str(failure.exception)
    assert isinstance(failure.exception.__cause__, asyncio.CancelledError)


# ---------------------------------------------------------------- run: one plain handler


@pytest.mark.parametrize("kwargs", [{}, {"urgent": True}], ids=["args", "kwargs"])
async def test_a_single_plain_handler_runs_with_its_event_current(
    recorder: Recorder, kwargs: dict[str, Any]
) -> None:
    seen: list[tuple[tuple[Any, ...], dict[str, Any], EventEnvelope]] = []

    async def handler(*args: Any, **kw: Any) -> None:
        seen.append((args, kw, current_event()))

    plan = plan_of(sub_of(handler))
    assert plan.single is not None
    event = envelope(7, **kwargs)

    result = await recorder.dispatcher.run(event, plan)

    assert seen == [((7,), kwargs, event)]
    assert (result.event, result.handled, result.failures) == (event, 1, ())
    assert result.ok
    assert current_var.get() is None  # reset after the handler


async def test_a_failing_single_handler_is_isolated_and_dead_lettered(
    recorder: Recorder,
) -> None:
    error = ValueError("bad job")

    async def handler(job: int) -> None:
        raise error

    sub = sub_of(handler)
    event = envelope(1)

    result = await recorder.dispatcher.run(event, plan_of(sub))

    assert result.handled == 1
    assert result.failures == (HandlerFailure(sub.name, error, 1, sub),)
    assert result.failures[0].subscription is sub
    [letter] = recorder.letters
    assert (letter.event, letter.handler, letter.exception_type, letter.message) == (
        event,
        sub.name,
        "ValueError",
        "bad job",
    )
    assert (letter.attempts, letter.subscription, letter.source) == (1, EVENT, sub)
    assert "bad job" in letter.traceback
    assert current_var.get() is None


async def test_failures_are_only_returned_when_nothing_keeps_them(recorder: Recorder) -> None:
    recorder.dispatcher.keep = None

    async def handler() -> None:
        raise ValueError("nobody keeps this")

    result = await recorder.dispatcher.run(envelope(), plan_of(sub_of(handler)))
    assert [type(f.exception) for f in result.failures] == [ValueError]


async def test_an_empty_plan_runs_nothing(recorder: Recorder) -> None:
    event = envelope()
    result = await recorder.dispatcher.run(event, Plan(()))
    assert (result.event, result.handled, result.failures) == (event, 0, ())


async def test_arguments_that_do_not_fit_are_explained_in_the_log(
    recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    async def takes_nothing() -> None:
        pass

    result = await recorder.dispatcher.run(envelope(1), plan_of(sub_of(takes_nothing)))

    assert isinstance(result.failures[0].exception, TypeError)
    assert "The emitted arguments do not match the handler's signature takes_nothing()" in (
        caplog.text
    )


# ---------------------------------------------------------------- run: cancellation


async def test_a_handlers_own_cancelled_error_is_its_failure(recorder: Recorder) -> None:
    ran: list[str] = []

    async def after() -> None:
        ran.append("after")

    single = await recorder.dispatcher.run(envelope(), plan_of(sub_of(cancel_itself)))
    grouped = await recorder.dispatcher.run(
        envelope(), plan_of(sub_of(cancel_itself), sub_of(after))
    )

    assert_self_cancelled(single.failures[0])
    assert_self_cancelled(grouped.failures[0])
    assert ran == ["after"]  # the other handler of the group ran
    assert len(recorder.letters) == 2


@pytest.mark.parametrize("handlers", [1, 3], ids=["single", "group"])
async def test_a_real_cancellation_propagates_after_the_handlers_unwind(
    recorder: Recorder, handlers: int
) -> None:
    entered = [asyncio.Event() for _ in range(handlers)]
    unwound: list[int] = []

    def waiting(index: int) -> Callable[[], Awaitable[None]]:
        async def handler() -> None:
            entered[index].set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                unwound.append(index)
                raise

        return handler

    plan = plan_of(*(sub_of(waiting(i)) for i in range(handlers)))
    running = asyncio.create_task(recorder.dispatcher.run(envelope(), plan))
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in entered)), 5)

    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(running, 5)

    assert sorted(unwound) == list(range(handlers))  # every handler unwound first
    assert recorder.letters == []  # a cancellation is not a failure


# ---------------------------------------------------------------- run: groups


async def test_a_higher_priority_group_finishes_before_a_lower_one_starts(
    recorder: Recorder,
) -> None:
    log: list[str] = []

    def step(name: str, suspensions: int) -> Callable[[], Awaitable[None]]:
        async def handler() -> None:
            log.append(f"{name} start")
            for _ in range(suspensions):
                await asyncio.sleep(0)  # lets anything running concurrently go on
            log.append(f"{name} end")

        return handler

    plan = plan_of(
        sub_of(step("low", 0), priority=-1),
        sub_of(step("high.a", 3), priority=10),
        sub_of(step("high.b", 1), priority=10),
        sub_of(step("mid", 2)),
    )

    result = await recorder.dispatcher.run(envelope(), plan)

    assert result.handled == 4 and result.ok
    high = log.index("high.a end"), log.index("high.b end")
    assert log.index("mid start") > max(high)
    assert log.index("low start") > log.index("mid end")
    # Within the high group both started before either finished: they ran concurrently.
    assert log[:2] == ["high.a start", "high.b start"]


async def test_the_handlers_of_a_group_run_concurrently(recorder: Recorder) -> None:
    arrived = [asyncio.Event() for _ in range(3)]
    ran: list[str] = []

    async def quick() -> None:
        ran.append("quick")  # finishes in its first step

    def meeting(index: int) -> Callable[[], Awaitable[None]]:
        async def handler() -> None:
            arrived[index].set()
            # Each waits for all three: run one after another, the first would time out.
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in arrived)), 5)
            ran.append(f"met {index}")

        return handler

    plan = plan_of(sub_of(quick), *(sub_of(meeting(i)) for i in range(3)))
    result = await recorder.dispatcher.run(envelope(), plan)

    assert result.ok, result.failures
    assert sorted(ran) == ["met 0", "met 1", "met 2", "quick"]


async def test_a_sync_handler_runs_beside_the_async_ones_of_its_group(
    recorder: Recorder,
) -> None:
    loop = asyncio.get_running_loop()
    sync_in = asyncio.Event()
    async_in = threading.Event()

    async def async_side() -> None:
        async_in.set()
        await asyncio.wait_for(sync_in.wait(), 5)

    def sync_side() -> None:
        loop.call_soon_threadsafe(sync_in.set)
        assert async_in.wait(5), "the async handler did not run meanwhile"

    result = await recorder.dispatcher.run(
        envelope(), plan_of(sub_of(sync_side), sub_of(async_side))
    )

    assert result.ok, result.failures


async def test_every_failure_of_a_group_is_reported_and_the_others_run(
    recorder: Recorder,
) -> None:
    ran: list[str] = []

    async def fails_at_once() -> None:
        raise ValueError("at once")

    async def fails_later() -> None:
        await asyncio.sleep(0)
        raise KeyError("later")

    async def also_later() -> None:
        await asyncio.sleep(0)
        raise LookupError("in a task")

    def fails_in_thread() -> None:
        raise OSError("in a thread")

    async def succeeds() -> None:
        await asyncio.sleep(0)
        ran.append("ok")

    async def next_group() -> None:
        ran.append("next group")

    handlers = [fails_at_once, fails_later, also_later, fails_in_thread, succeeds]
    plan = plan_of(*(sub_of(h) for h in handlers), sub_of(next_group, priority=-1))

    result = await recorder.dispatcher.run(envelope(), plan)

    assert result.handled == 6
    assert sorted(type(f.exception).__name__ for f in result.failures) == [
        "KeyError",
        "LookupError",
        "OSError",
        "ValueError",
    ]
    assert sorted(letter.exception_type for letter in recorder.letters) == [
        "KeyError",
        "LookupError",
        "OSError",
        "ValueError",
    ]
    assert ran == ["ok", "next group"]


# ---------------------------------------------------------------- start: background


async def test_start_returns_none_when_the_handler_finished_in_its_first_step(
    recorder: Recorder,
) -> None:
    seen: list[EventEnvelope] = []

    async def handler(job: int) -> None:
        seen.append(current_event())

    event = envelope(1)
    context = contextvars.copy_context()

    assert recorder.dispatcher.start(event, plan_of(sub_of(handler)), context) is None

    assert seen == [event]
    assert context.run(current_var.get) is event  # set in the event's own context
    assert current_var.get() is None  # and only there


async def test_start_hands_back_the_rest_of_a_handler_that_suspends(
    recorder: Recorder,
) -> None:
    gate = asyncio.Event()
    log: list[str] = []

    async def handler() -> None:
        log.append("first step")
        await gate.wait()
        log.append(f"rest of {current_event().name}")

    rest = recorder.dispatcher.start(
        envelope(), plan_of(sub_of(handler)), contextvars.copy_context()
    )

    assert rest is not None
    assert log == ["first step"]
    gate.set()
    await asyncio.wait_for(rest, 5)
    assert log == ["first step", f"rest of {EVENT}"]


@pytest.mark.parametrize("when", ["first step", "after suspending"])
async def test_start_keeps_a_failure_and_never_raises_it(recorder: Recorder, when: str) -> None:
    async def handler() -> None:
        if when == "after suspending":
            await asyncio.sleep(0)
        raise ValueError(when)

    event = envelope()
    rest = recorder.dispatcher.start(event, plan_of(sub_of(handler)), contextvars.copy_context())

    assert (rest is None) == (when == "first step")
    if rest is not None:
        await asyncio.wait_for(rest, 5)  # does not raise
    [letter] = recorder.letters
    assert (letter.event, letter.exception_type, letter.message) == (event, "ValueError", when)


async def test_start_counts_a_handlers_own_cancelled_error_as_its_failure(
    recorder: Recorder,
) -> None:
    rest = recorder.dispatcher.start(
        envelope(), plan_of(sub_of(cancel_itself)), contextvars.copy_context()
    )
    if rest is not None:
        await asyncio.wait_for(rest, 5)
    [letter] = recorder.letters
    assert letter.exception_type == "RuntimeError"
    assert "without being cancelled" in letter.message


async def test_start_runs_a_plan_of_several_handlers_in_the_given_context(
    recorder: Recorder,
) -> None:
    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")
    context = contextvars.copy_context()
    context.run(request_id.set, "r-1")
    gate = asyncio.Event()
    seen: list[str] = []

    async def first() -> None:
        seen.append(request_id.get())

    async def second() -> None:
        await gate.wait()
        seen.append(request_id.get())

    rest = recorder.dispatcher.start(envelope(), plan_of(sub_of(first), sub_of(second)), context)

    assert rest is not None
    assert seen == ["r-1"]
    gate.set()
    await asyncio.wait_for(rest, 5)
    assert seen == ["r-1", "r-1"]
    assert (
        recorder.dispatcher.start(envelope(), plan_of(sub_of(first), sub_of(first)), context)
        is None
    )


# ---------------------------------------------------------------- retries


def policy(max_attempts: int) -> RetryPolicy:
    return RetryPolicy(max_attempts=max_attempts, initial_delay=0.001, jitter=0.0)


async def test_a_failing_handler_is_retried_with_the_attempt_number_current(
    recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    attempts: list[tuple[int, str]] = []

    async def flaky() -> None:
        event = current_event()
        attempts.append((event.attempt, event.id))
        if len(attempts) < 3:
            raise ConnectionError(f"try {len(attempts)}")

    event = envelope()
    result = await recorder.dispatcher.run(event, plan_of(sub_of(flaky, retry=policy(3))))

    assert result.ok
    assert attempts == [(1, event.id), (2, event.id), (3, event.id)]
    assert recorder.letters == []
    # The waits are the policy's: 0.001 s, then 0.001 * 2.
    assert "(attempt 1/3): ConnectionError: try 1; retrying in 0.001s" in caplog.text
    assert "(attempt 2/3): ConnectionError: try 2; retrying in 0.002s" in caplog.text
    assert current_var.get() is None


async def test_the_last_failure_of_a_retried_handler_is_given_up(recorder: Recorder) -> None:
    calls: list[int] = []

    def always_fails() -> None:  # sync: retried in its worker thread
        calls.append(current_event().attempt)
        raise ConnectionError(f"attempt {len(calls)}")

    sub = sub_of(always_fails, retry=policy(2))
    result = await recorder.dispatcher.run(envelope(), plan_of(sub))

    assert calls == [1, 2]
    [failure] = result.failures
    assert (failure.attempts, str(failure.exception), failure.subscription) == (
        2,
        "attempt 2",
        sub,
    )
    [letter] = recorder.letters
    assert (letter.attempts, letter.message) == (2, "attempt 2")


async def test_the_delay_before_each_retry_comes_from_the_policy(recorder: Recorder) -> None:
    asked: list[int] = []

    class RecordingPolicy(RetryPolicy):
        __slots__ = ()

        def delay_before(self, attempt: int) -> float:
            asked.append(attempt)
            return 0.0

    async def fails() -> None:
        raise ValueError("again")

    result = await recorder.dispatcher.run(
        envelope(), plan_of(sub_of(fails, retry=RecordingPolicy(max_attempts=4)))
    )

    assert asked == [2, 3, 4]
    assert result.failures[0].attempts == 4


# ---------------------------------------------------------------- timeouts and threads


async def test_an_async_handler_that_outruns_its_timeout_is_cancelled(recorder: Recorder) -> None:
    cancelled: list[bool] = []

    async def slow() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    sub = sub_of(slow, timeout=0.01)
    result = await recorder.dispatcher.run(envelope(), plan_of(sub))

    [failure] = result.failures
    assert isinstance(failure.exception, HandlerTimeout)
    assert str(failure.exception) == f"handler {sub.name} timed out after 0.01s and was cancelled"
    assert cancelled == [True]


async def test_a_sync_handler_that_outruns_its_timeout_is_abandoned_in_its_thread(
    recorder: Recorder,
) -> None:
    release = threading.Event()
    dispatcher = recorder.dispatcher

    def blocks() -> None:
        release.wait(5)

    result = await dispatcher.run(envelope(), plan_of(sub_of(blocks, timeout=0.01)))

    [failure] = result.failures
    assert isinstance(failure.exception, HandlerTimeout)
    assert "it was abandoned and keeps its worker thread" in str(failure.exception)
    assert dispatcher.abandoned_threads == 1
    release.set()
    # Waiting for the worker threads to finish: the abandoned one has then returned.
    await asyncio.wait_for(asyncio.to_thread(dispatcher.threads.executor.shutdown, True), 5)
    assert dispatcher.abandoned_threads == 0


async def test_a_sync_handlers_own_timeout_error_is_not_a_handler_timeout(
    recorder: Recorder,
) -> None:
    def raises_timeout() -> None:
        raise TimeoutError("the remote service timed out")

    def in_time() -> None:
        pass

    result = await recorder.dispatcher.run(
        envelope(), plan_of(sub_of(raises_timeout, timeout=5), sub_of(in_time, timeout=5))
    )

    [failure] = result.failures
    assert type(failure.exception) is TimeoutError
    assert str(failure.exception) == "the remote service timed out"
    assert recorder.dispatcher.abandoned_threads == 0


async def test_sync_handlers_run_in_eventbus_threads_with_their_event_current(
    recorder: Recorder,
) -> None:
    seen: list[tuple[str, EventEnvelope]] = []

    def handler(job: int) -> None:
        seen.append((threading.current_thread().name, current_event()))

    event = envelope(1)
    result = await recorder.dispatcher.run(event, plan_of(sub_of(handler)))

    assert result.ok
    [(thread, current)] = seen
    assert thread.startswith("eventbus_")
    assert thread != threading.current_thread().name
    assert current is event


async def test_a_coroutine_returned_by_a_sync_handler_is_awaited(recorder: Recorder) -> None:
    finished: list[str] = []

    async def the_work(job: int) -> None:
        await asyncio.sleep(0)
        finished.append(f"job {job}")

    def undecorated_wrapper(job: int) -> Coroutine[Any, Any, None]:
        return the_work(job)  # an async function behind a plain decorator

    sub = sub_of(undecorated_wrapper, timeout=5)
    assert not sub.is_async
    result = await recorder.dispatcher.run(envelope(3), plan_of(sub))

    assert result.ok
    assert finished == ["job 3"]


# ---------------------------------------------------------------- give_up


def test_give_up_builds_the_failure_with_its_subscription_and_logs_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def handler() -> None:
        pass

    sub = sub_of(handler)
    event = envelope()
    error = ValueError("it broke")

    failure = Dispatcher().give_up(sub, event, error, 2)

    assert failure == HandlerFailure(sub.name, error, 2)
    assert failure.subscription is sub
    assert f"Handler {sub.name} failed on event {event.describe()} after 2 attempt(s)" in (
        caplog.text
    )
    assert "ValueError: it broke" in caplog.text
