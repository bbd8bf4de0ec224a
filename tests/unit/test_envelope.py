"""EventEnvelope on its own: ids, the hot path's constructor, copies at another attempt
or with a trace, chains, and the identity check of events received from outside."""

from __future__ import annotations

import contextvars
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC

import pytest

from fastapi_opinionated_eventbus._core.envelope import (
    EventEnvelope,
    check_identity,
    current_event,
    current_var,
    new_envelope,
    reset_current,
)
from fastapi_opinionated_eventbus._core.errors import NoCurrentEvent

TRACE = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}


def sequence_of(event_id: str) -> tuple[str, int]:
    prefix, _, sequence = event_id.rpartition("-")
    return prefix, int(sequence, 16)


def test_the_id_is_made_when_first_read_and_then_stable() -> None:
    envelope = EventEnvelope("user.created", (), {})
    assert isinstance(envelope._key, int)  # only a sequence number so far

    first = envelope.id

    assert isinstance(envelope._key, str)
    assert envelope.id is first
    prefix, _ = sequence_of(first)
    assert len(prefix) == 16 and int(prefix, 16) >= 0


def test_ids_follow_the_sequence_of_construction_not_of_reading() -> None:
    first = EventEnvelope("a", (), {})
    second = new_envelope("b", (), {}, None)
    third = EventEnvelope("c", (), {})

    # Read out of order: the numbers are those taken at construction.
    numbers = [sequence_of(e.id) for e in (third, first, second)]

    assert len({prefix for prefix, _ in numbers}) == 1
    assert [n for _, n in numbers] == [
        numbers[1][1] + 2,
        numbers[1][1],
        numbers[1][1] + 1,
    ]


def test_ids_are_unique_across_threads() -> None:
    def make(count: int) -> list[str]:
        return [new_envelope("e", (), {}, None).id for _ in range(count)]

    with ThreadPoolExecutor(4) as pool:
        ids = [i for chunk in pool.map(make, [2000] * 4) for i in chunk]

    assert len(set(ids)) == len(ids) == 8000


def test_a_given_id_is_kept_as_given() -> None:
    envelope = EventEnvelope("user.created", (), {}, event_id="from-the-broker-1")
    assert envelope.id == "from-the-broker-1"
    assert envelope.correlation_id == "from-the-broker-1"


def test_new_envelope_behaves_like_the_constructor() -> None:
    before = time.time()
    built = EventEnvelope("user.created", (1,), {"by": "admin"}, "req-1")
    fast = new_envelope("user.created", (1,), {"by": "admin"}, "req-1")
    after = time.time()

    for envelope in (built, fast):
        assert envelope.name == "user.created"
        assert envelope.args == (1,)
        assert envelope.kwargs == {"by": "admin"}
        assert envelope.correlation_id == "req-1"
        assert (envelope.attempt, envelope.chain, envelope.trace_context) == (1, (), None)
        assert before <= envelope.emitted_at_timestamp <= after
        assert envelope.emitted_at.tzinfo is UTC
        # datetime keeps microseconds.
        assert envelope.emitted_at.timestamp() == pytest.approx(
            envelope.emitted_at_timestamp, abs=1e-6
        )
        assert envelope.describe() == (f"'user.created' (id={envelope.id}, correlation=req-1)")
        assert repr(envelope) == f"<EventEnvelope 'user.created' id={envelope.id} attempt=1>"
        assert envelope.with_attempt(2).attempt == 2
        assert envelope.child_chain() == ("user.created",)
    assert sequence_of(built.id)[0] == sequence_of(fast.id)[0]
    assert built.id != fast.id


def test_without_a_correlation_id_the_event_is_its_own() -> None:
    for envelope in (EventEnvelope("a", (), {}), new_envelope("a", (), {}, None)):
        assert envelope.correlation_id == envelope.id
        assert envelope.describe() == f"'a' (id={envelope.id}, correlation={envelope.id})"


def test_kwargs_is_a_copy_every_handler_may_change() -> None:
    envelope = EventEnvelope("a", (), {"n": 1})
    envelope.kwargs["n"] = 2
    assert envelope.kwargs == {"n": 1}


def test_with_attempt_and_with_trace_are_the_same_event() -> None:
    original = EventEnvelope(
        "order.paid", (1,), {"x": 2}, "req-1", chain=("cart.checked_out",), emitted_at=100.0
    )

    retried = original.with_attempt(3)
    traced = retried.with_trace(TRACE)

    for copy in (retried, traced):
        assert copy.id == original.id
        assert (copy.name, copy.args, copy.kwargs) == ("order.paid", (1,), {"x": 2})
        assert copy.correlation_id == "req-1"
        assert copy.chain == ("cart.checked_out",)
        assert copy.emitted_at_timestamp == 100.0
    assert (retried.attempt, retried.trace_context) == (3, None)
    assert (traced.attempt, traced.trace_context) == (3, TRACE)
    assert (original.attempt, original.trace_context) == (1, None)  # unchanged


def test_child_chain_appends_this_events_name() -> None:
    root = EventEnvelope("cart.checked_out", (), {})
    child = EventEnvelope("order.paid", (), {}, chain=root.child_chain())

    assert root.chain == ()
    assert child.chain == ("cart.checked_out",)
    assert child.child_chain() == ("cart.checked_out", "order.paid")


# ---------------------------------------------------------------- current_event


def test_current_event_outside_a_handler_says_so() -> None:
    with pytest.raises(NoCurrentEvent, match=r"current_event\(\) was called outside"):
        current_event()


def test_current_event_is_what_the_runner_set_until_reset() -> None:
    envelope = EventEnvelope("a", (), {})
    token = current_var.set(envelope)
    assert current_event() is envelope
    reset_current(token)
    assert current_var.get() is None


def test_reset_current_with_a_token_of_another_context_is_ignored() -> None:
    token = contextvars.copy_context().run(current_var.set, EventEnvelope("a", (), {}))
    reset_current(token)  # does not raise ValueError
    assert current_var.get() is None


# ---------------------------------------------------------------- check_identity


def test_check_identity_accepts_what_this_bus_emits() -> None:
    envelope = EventEnvelope("user.created", (), {}, "req-1", chain=("signup.done",))
    check_identity(envelope.name, envelope.id, envelope.correlation_id, list(envelope.chain))
    check_identity("user.*-é", "x" * 256, "A" + "b" * 127, ())
    check_identity("a", "id", None, [])


NAME = "its event name is empty, has surrounding spaces or holds control characters"
CHAIN = "its chain entry is empty, has surrounding spaces or holds control characters"
ID = "its event id is empty, longer than 256 characters, or holds spaces or control characters"
CORRELATION = (
    "its correlation id is not one this bus writes (at most 128 characters of A-Z a-z 0-9 . _ : -)"
)


@pytest.mark.parametrize(
    ("name", "event_id", "correlation_id", "chain", "message"),
    [
        ("", "id-1", None, (), NAME),
        (" user.created", "id-1", None, (), NAME),
        ("user.created\n", "id-1", None, (), NAME),
        ("user\nERROR forged", "id-1", None, (), NAME),
        ("user\x1b[31m", "id-1", None, (), NAME),
        ("user\u2028created", "id-1", None, (), NAME),
        ("user.created", "id-1", None, ("ok", ""), CHAIN),
        ("user.created", "id-1", None, ("evil\rentry",), CHAIN),
        ("user.created", "", None, (), ID),
        ("user.created", "x" * 257, None, (), ID),
        ("user.created", "has space", None, (), ID),
        ("user.created", "tab\tid", None, (), ID),
        ("user.created", "nbsp\u00a0id", None, (), ID),
        ("user.created", "id\x85", None, (), ID),
        ("user.created", "id-1", "", (), CORRELATION),
        ("user.created", "id-1", "-leading-dash", (), CORRELATION),
        ("user.created", "id-1", "no spaces", (), CORRELATION),
        ("user.created", "id-1", "c" * 129, (), CORRELATION),
        ("user.created", "id-1", "req\n1", (), CORRELATION),
    ],
)
def test_check_identity_refuses_without_quoting_the_value(
    name: str, event_id: str, correlation_id: str | None, chain: tuple[str, ...], message: str
) -> None:
    with pytest.raises(ValueError) as caught:
        check_identity(name, event_id, correlation_id, chain)

    # The whole message is fixed text: no value, hostile or long, is quoted in it.
    assert str(caught.value) == message
