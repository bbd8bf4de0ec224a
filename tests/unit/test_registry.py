"""Registry, Plan and Subscription on their own: lookup, priority groups, the plan cache,
and the checks every subscription goes through."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from fnmatch import fnmatchcase
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel

from fastapi_opinionated_eventbus._core import registry as registry_module
from fastapi_opinionated_eventbus._core.registry import (
    Plan,
    Registry,
    Subscription,
    build_subscription,
    check_event_name,
    check_handler,
    check_subscription_options,
    is_pattern,
)
from fastapi_opinionated_eventbus._core.retry import RetryPolicy


async def async_handler(*args: object) -> None:
    pass


async def other_async_handler(*args: object) -> None:
    pass


def sync_handler(*args: object) -> None:
    pass


def passthrough(function: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """A plain (non-async) decorator around an async function, as many libraries write."""

    @functools.wraps(function)
    def wrapper(*args: object) -> Awaitable[None]:
        return function(*args)

    return wrapper


@passthrough
async def decorated_async_handler(*args: object) -> None:
    pass


class AsyncCallable:
    async def __call__(self, *args: object) -> None:
        pass


class SyncCallable:
    def __call__(self, *args: object) -> None:
        pass


class GeneratorCallable:
    def __call__(self, *args: object) -> Iterator[None]:
        yield None


class UserCreated(BaseModel):
    __event_name__: ClassVar[str] = "user.created"
    id: int


class Nameless(BaseModel):
    id: int


def subscribe(
    registry: Registry, event: str, handler: Callable[..., Any], **options: Any
) -> Subscription:
    sub = Subscription(event, handler, **options)
    registry.add(sub)
    return sub


def handlers_of(plan: Plan) -> list[list[Subscription]]:
    return [list(group) for group in plan.groups]


# ---------------------------------------------------------------- lookup


def test_an_exact_name_matches_only_itself() -> None:
    registry = Registry()
    sub = subscribe(registry, "user.created", async_handler)

    assert handlers_of(registry.plan("user.created")) == [[sub]]
    for other in ("user.create", "user.created.v2", "User.created", "user"):
        plan = registry.plan(other)
        assert plan.count == 0
        assert plan.groups == ()


@pytest.mark.parametrize(
    ("pattern", "matching", "not_matching"),
    [
        # fnmatch's * is not a path glob: it matches dots too.
        ("user.*", ["user.created", "user.", "user.profile.updated"], ["users.created", "user"]),
        ("*", ["a", "user.created", "a.b.c.d"], []),
        ("order.?", ["order.1", "order.x"], ["order.12", "order."]),
        ("[ab].done", ["a.done", "b.done"], ["c.done", "ab.done"]),
        ("*.failed", ["job.failed", "a.b.failed"], ["job.failed.twice"]),
        # fnmatchcase: case matters on every platform.
        ("User.*", ["User.created"], ["user.created"]),
    ],
)
def test_patterns_follow_fnmatch_semantics(
    pattern: str, matching: list[str], not_matching: list[str]
) -> None:
    registry = Registry()
    sub = subscribe(registry, pattern, async_handler)
    assert sub.is_pattern

    for name in matching:
        assert handlers_of(registry.plan(name)) == [[sub]], name
    for name in not_matching:
        assert registry.plan(name).count == 0, name


def test_is_pattern_recognises_the_shell_wildcards() -> None:
    assert is_pattern("user.*")
    assert is_pattern("order.?")
    assert is_pattern("[ab].x")
    assert not is_pattern("user.created")
    assert not is_pattern("a-b_c:d")


def test_groups_by_descending_priority_keeping_subscription_order_within_a_group() -> None:
    registry = Registry()
    low = subscribe(registry, "job.done", async_handler, priority=-5)
    first_default = subscribe(registry, "job.done", sync_handler)
    pattern_high = subscribe(registry, "job.*", other_async_handler, priority=10)
    high = subscribe(registry, "job.done", other_async_handler, priority=10)
    second_default = subscribe(registry, "job.done", other_async_handler)
    pattern_default = subscribe(registry, "*", async_handler)

    plan = registry.plan("job.done")

    # Within a group exact names come first (in subscription order), then patterns.
    assert handlers_of(plan) == [
        [high, pattern_high],
        [first_default, second_default, pattern_default],
        [low],
    ]
    assert plan.count == 6


# ---------------------------------------------------------------- the plan cache


def test_a_resolved_plan_is_cached_and_served_again() -> None:
    registry = Registry()
    subscribe(registry, "user.*", async_handler)

    first = registry.plan("user.created")
    assert registry.cached_names == 1
    assert registry.plan("user.created") is first
    assert registry.cached_names == 1
    registry.plan("user.deleted")
    assert registry.cached_names == 2
    assert list(registry.cached) == ["user.created", "user.deleted"]


def test_a_full_cache_evicts_its_oldest_entry() -> None:
    registry = Registry(cache_size=2)
    subscribe(registry, "*", async_handler)

    a = registry.plan("a")
    b = registry.plan("b")
    registry.plan("c")

    assert registry.cached_names == 2
    assert list(registry.cached) == ["b", "c"]
    assert registry.plan("b") is b  # still cached
    assert registry.plan("a") is not a  # evicted: resolved again
    assert list(registry.cached) == ["c", "a"]


def test_names_that_fail_the_check_are_never_cached() -> None:
    registry = Registry()
    for bad in ("", " user.created", "user.created "):
        with pytest.raises(ValueError, match="non-empty string without surrounding spaces"):
            registry.plan(bad)
    assert registry.cached_names == 0


def test_adding_a_subscription_clears_the_cache() -> None:
    registry = Registry()
    first = subscribe(registry, "user.created", async_handler)
    registry.plan("user.created")
    registry.plan("other")

    second = subscribe(registry, "user.*", other_async_handler)

    assert registry.cached_names == 0
    assert handlers_of(registry.plan("user.created")) == [[first, second]]


def test_removing_a_subscription_clears_the_cache_only_when_something_was_removed() -> None:
    registry = Registry()
    exact = subscribe(registry, "user.created", async_handler)
    subscribe(registry, "user.*", other_async_handler)
    registry.plan("user.created")

    assert registry.remove("user.created", sync_handler) is False
    assert registry.remove("nobody.subscribed", async_handler) is False
    assert registry.cached_names == 1  # nothing changed: the cache is kept

    assert registry.remove("user.*", other_async_handler) is True
    assert registry.cached_names == 0
    assert handlers_of(registry.plan("user.created")) == [[exact]]

    assert registry.remove("user.created", async_handler) is True
    assert registry.cached_names == 0
    assert registry.plan("user.created").count == 0
    assert registry.subscriptions() == []


def test_removing_a_pattern_removes_only_that_handlers_subscription_to_it() -> None:
    registry = Registry()
    kept_same_pattern = subscribe(registry, "user.*", other_async_handler)
    kept_other_pattern = subscribe(registry, "*", async_handler)
    subscribe(registry, "user.*", async_handler)

    assert registry.remove("user.*", async_handler) is True

    assert registry.subscriptions() == [kept_same_pattern, kept_other_pattern]


def test_setting_a_schema_clears_the_cache_and_plans_carry_it() -> None:
    registry = Registry()
    subscribe(registry, "user.created", async_handler)
    assert registry.plan("user.created").schema is None

    registry.set_schema("user.created", UserCreated)

    assert registry.cached_names == 0
    assert registry.plan("user.created").schema is UserCreated
    assert registry.schema_for("user.created") is UserCreated
    assert registry.schemas() == {"user.created": UserCreated}


def test_clear_forgets_subscriptions_schemas_and_plans() -> None:
    registry = Registry()
    subscribe(registry, "user.created", async_handler)
    subscribe(registry, "user.*", async_handler)
    registry.set_schema("user.created", UserCreated)
    cache = registry.cached
    registry.plan("user.created")

    registry.clear()

    assert registry.subscriptions() == []
    assert registry.schemas() == {}
    assert registry.cached_names == 0
    assert registry.cached is cache  # emit holds on to this very dict


class YieldingCache(dict[str, Plan]):
    """A plan cache that lets other threads run whenever its size is read: the moment
    between deciding whether to evict and inserting, where an unguarded cache overflows."""

    def __len__(self) -> int:
        size = super().__len__()
        time.sleep(0)  # releases the GIL: the size may be out of date when it is used
        return size


def test_concurrent_resolution_never_lets_the_cache_outgrow_its_size() -> None:
    size = 4
    registry = Registry(cache_size=size)
    registry.cached = YieldingCache()
    subscribe(registry, "*", async_handler)
    workers = 6
    barrier = threading.Barrier(workers)

    def resolve(worker: int) -> int:
        barrier.wait(timeout=5)
        largest = 0
        for i in range(300):
            registry.plan(f"w{worker}.e{i}")  # always a new name: every call evicts
            largest = max(largest, len(registry.cached))
        return largest

    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(resolve, worker) for worker in range(workers)]
        largest = [future.result(timeout=30) for future in futures]

    assert max(largest) <= size
    assert registry.cached_names == size


@pytest.mark.parametrize("change", ["unsubscribe", "subscribe"])
def test_a_plan_resolved_while_subscriptions_change_is_not_kept(
    monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    # emit_nowait resolves plans in worker threads while the loop may (un)subscribe: a
    # plan matched against the old subscriptions must not outlive the change.
    registry = Registry()
    exact = subscribe(registry, "user.created", async_handler)
    pattern = subscribe(registry, "user.*", other_async_handler)
    matching, changed = threading.Event(), threading.Event()

    def pausing_fnmatchcase(name: str, pat: str) -> bool:
        if threading.current_thread() is not threading.main_thread() and not matching.is_set():
            matching.set()  # the exact subscriptions are read, the patterns being matched
            assert changed.wait(5)
        return fnmatchcase(name, pat)

    monkeypatch.setattr(registry_module, "fnmatchcase", pausing_fnmatchcase)
    with ThreadPoolExecutor(1) as pool:
        resolving = pool.submit(registry.plan, "user.created")
        assert matching.wait(5)
        if change == "unsubscribe":
            assert registry.remove("user.created", async_handler)
            expected = [[pattern]]
        else:
            added = subscribe(registry, "user.created", sync_handler)
            expected = [[exact, added, pattern]]
        changed.set()
        resolving.result(timeout=5)

    assert handlers_of(registry.plan("user.created")) == expected


# ---------------------------------------------------------------- Plan


def plain_sub(handler: Callable[..., Any] = async_handler, **options: Any) -> Subscription:
    return Subscription("job.done", handler, **options)


def test_plan_counts_its_handlers_across_groups() -> None:
    plan = Plan(((plain_sub(), plain_sub(sync_handler)), (plain_sub(),)))
    assert plan.count == 3
    assert Plan(()).count == 0


def test_single_is_the_one_plain_async_handler_of_an_inline_plan() -> None:
    sub = plain_sub()
    assert Plan(((sub,),)).single is sub
    assert Plan(((sub,),), inline=False).single is None  # metrics or tracing wrap it


@pytest.mark.parametrize(
    "groups",
    [
        pytest.param(((plain_sub(), plain_sub()),), id="two in a group"),
        pytest.param(((plain_sub(),), (plain_sub(),)), id="two groups"),
        pytest.param(((plain_sub(sync_handler),),), id="sync"),
        pytest.param(((plain_sub(retry=RetryPolicy()),),), id="retry"),
        pytest.param(((plain_sub(timeout=1.0),),), id="timeout"),
        pytest.param(((plain_sub(wrapped=True),),), id="wrapped"),
        pytest.param((), id="none"),
    ],
)
def test_single_is_none_unless_one_plain_handler(
    groups: tuple[tuple[Subscription, ...], ...],
) -> None:
    assert Plan(groups).single is None


def test_only_keeps_the_subscriptions_of_one_kind_in_their_groups() -> None:
    high_broadcast = plain_sub(priority=5, broadcast=True)
    high = plain_sub(priority=5)
    low_broadcast = plain_sub(broadcast=True)
    lone_low = plain_sub(priority=-1)
    plan = Plan(((high_broadcast, high), (low_broadcast,), (lone_low,)), UserCreated, inline=False)

    broadcast = plan.only(broadcast=True)
    others = plan.only(broadcast=False)

    assert handlers_of(broadcast) == [[high_broadcast], [low_broadcast]]
    assert handlers_of(others) == [[high], [lone_low]]
    assert broadcast.count == 2
    assert broadcast.schema is UserCreated
    assert broadcast.inline is False
    assert broadcast.single is None  # not inline
    # Computed once per plan.
    assert plan.only(broadcast=True) is broadcast
    assert plan.only(broadcast=False) is others


def test_only_of_an_inline_plan_may_have_a_single_handler() -> None:
    sub = plain_sub()
    plan = Plan(((plain_sub(broadcast=True), sub),))
    assert plan.single is None
    assert plan.only(broadcast=False).single is sub


# ---------------------------------------------------------------- Subscription


@pytest.mark.parametrize(
    ("handler", "is_async"),
    [
        (async_handler, True),
        (decorated_async_handler, True),
        (AsyncCallable(), True),
        (sync_handler, False),
        (SyncCallable(), False),
        (lambda *args: None, False),
    ],
    ids=["async def", "wraps-decorated async", "async __call__", "def", "__call__", "lambda"],
)
def test_subscription_knows_whether_its_handler_is_async(
    handler: Callable[..., Any], is_async: bool
) -> None:
    sub = Subscription("job.done", handler)
    assert sub.is_async is is_async
    assert sub.plain is is_async  # no options: plain exactly when async


@pytest.mark.parametrize(
    "options",
    [{"timeout": 1.0}, {"retry": RetryPolicy(max_attempts=2)}, {"wrapped": True}],
    ids=["timeout", "retry", "wrapped"],
)
def test_options_that_wrap_a_handler_make_it_not_plain(options: dict[str, Any]) -> None:
    sub = Subscription("job.done", async_handler, **options)
    assert sub.is_async
    assert not sub.plain
    # Options that do not wrap it keep it plain.
    assert Subscription("job.done", async_handler, priority=3, broadcast=True).plain


def test_a_handler_with_a_dependency_is_not_plain() -> None:
    from fastapi import Depends

    def settings() -> str:
        return "s"

    async def handler(user: object, value: str = Depends(settings)) -> None:
        pass

    sub = Subscription("job.done", handler)
    assert sub.injection is not None
    assert not sub.plain
    assert Subscription("job.done", async_handler).injection is None


def test_subscription_name_is_module_and_qualname() -> None:
    assert Subscription("a", async_handler).name == f"{__name__}:async_handler"
    assert Subscription("a", AsyncCallable()).name == f"{__name__}:AsyncCallable"
    assert Subscription("a", decorated_async_handler).name == (
        f"{__name__}:decorated_async_handler"
    )


def test_subscription_records_whether_it_is_a_pattern() -> None:
    assert Subscription("user.*", async_handler).is_pattern
    assert not Subscription("user.created", async_handler).is_pattern


# ---------------------------------------------------------------- checks


def test_check_event_name_returns_a_good_name() -> None:
    assert check_event_name("user.created") == "user.created"
    assert check_event_name("user.*") == "user.*"


@pytest.mark.parametrize("bad", [None, 3, b"user.created", ["a"]])
def test_check_event_name_refuses_what_is_not_a_str(bad: object) -> None:
    with pytest.raises(TypeError, match=rf"The topic must be a str, got {type(bad).__name__}"):
        check_event_name(bad, what="topic")


@pytest.mark.parametrize("bad", ["", " ", " user", "user ", "user\n"])
def test_check_event_name_refuses_empty_or_padded_names(bad: str) -> None:
    with pytest.raises(ValueError, match="The event name must be a non-empty string"):
        check_event_name(bad)


def test_check_subscription_options_returns_the_name_and_no_schema() -> None:
    assert check_subscription_options("user.*") == ("user.*", None)


def test_check_subscription_options_takes_a_typed_event_class() -> None:
    assert check_subscription_options(UserCreated) == ("user.created", UserCreated)


def test_check_subscription_options_refuses_a_model_without_event_name() -> None:
    with pytest.raises(TypeError, match="Nameless is used as a typed event but has no event name"):
        check_subscription_options(Nameless)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"priority": True}, TypeError, "priority must be an int"),
        ({"priority": 1.5}, TypeError, "priority must be an int"),
        ({"retry": 3}, TypeError, "retry must be a RetryPolicy or None"),
        ({"timeout": True}, TypeError, "timeout must be a number of seconds"),
        ({"timeout": "1"}, TypeError, "timeout must be a number of seconds"),
        ({"timeout": 0}, ValueError, "timeout must be > 0 seconds"),
        ({"timeout": -1.0}, ValueError, "timeout must be > 0 seconds"),
        ({"broadcast": 1}, TypeError, "broadcast must be a bool"),
    ],
)
def test_check_subscription_options_refuses_bad_options(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        check_subscription_options("user.created", **options)


def test_check_subscription_options_accepts_good_options() -> None:
    name, schema = check_subscription_options(
        "user.created", priority=-3, retry=RetryPolicy(), timeout=2, broadcast=True
    )
    assert (name, schema) == ("user.created", None)


def test_a_typed_event_cannot_have_a_pattern_name() -> None:
    class AnyUser(BaseModel):
        __event_name__: ClassVar[str] = "user.*"

    with pytest.raises(ValueError, match=r"cannot have a pattern name 'user\.\*'"):
        check_subscription_options(AnyUser)


def test_check_handler_returns_callables_as_they_are() -> None:
    for handler in (async_handler, sync_handler, AsyncCallable(), decorated_async_handler):
        assert check_handler(handler) is handler


def test_check_handler_refuses_what_is_not_callable() -> None:
    with pytest.raises(TypeError, match="An event handler must be callable, got str"):
        check_handler("user.created")


def generator_handler(*args: object) -> Iterator[None]:
    yield None


async def async_generator_handler(*args: object) -> Any:
    yield None


@functools.wraps(generator_handler)
def decorated_generator_handler(*args: object) -> Iterator[None]:
    return generator_handler(*args)


class AsyncGeneratorCallable:
    async def __call__(self, *args: object) -> Any:
        yield None


@pytest.mark.parametrize(
    ("handler", "what"),
    [
        (generator_handler, "is a generator function"),
        (async_generator_handler, "is a generator function"),
        (decorated_generator_handler, "is a generator function"),
        (GeneratorCallable(), "is an object whose __call__ is a generator function"),
        (AsyncGeneratorCallable(), "is an object whose __call__ is a generator function"),
    ],
    ids=["generator", "async generator", "wraps-decorated generator", "__call__", "async __call__"],
)
def test_check_handler_refuses_generators_that_nothing_would_iterate(
    handler: object, what: str
) -> None:
    with pytest.raises(TypeError, match="nothing would iterate it") as caught:
        check_handler(handler)
    assert what in str(caught.value)
    assert str(caught.value).startswith(f"{__name__}:")


def test_build_subscription_checks_and_builds() -> None:
    policy = RetryPolicy(max_attempts=2)
    sub, schema = build_subscription(
        "job.*", sync_handler, priority=4, retry=policy, timeout=1.5, broadcast=True
    )
    assert schema is None
    assert (sub.event, sub.handler, sub.priority, sub.retry, sub.timeout, sub.broadcast) == (
        "job.*",
        sync_handler,
        4,
        policy,
        1.5,
        True,
    )
    assert sub.is_pattern and not sub.is_async and not sub.plain

    typed, typed_schema = build_subscription(UserCreated, async_handler)
    assert typed.event == "user.created"
    assert typed_schema is UserCreated
    assert typed.plain


def test_build_subscription_refuses_a_bad_name_or_handler() -> None:
    with pytest.raises(ValueError, match=r"event name \(or pattern\) to subscribe to"):
        build_subscription(" job", async_handler)
    with pytest.raises(TypeError, match="nothing would iterate it"):
        build_subscription("job", generator_handler)
    with pytest.raises(TypeError, match="timeout must be"):
        build_subscription("job", async_handler, timeout="soon")  # type: ignore[arg-type]
