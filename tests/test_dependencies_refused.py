"""Dependencies that cannot work for an event are refused when the handler is subscribed (at
import of its module, or at ``subscribe()``), naming the handler and the parameter."""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from fastapi import Depends, Request
from support import AppDir, Factory

from fastapi_opinionated_eventbus import EventBus
from fastapi_opinionated_eventbus.testing import started_bus

HANDLER = "app.domains.bad.handlers:handle"

REQUEST_NEEDING = """
    from typing import Annotated

    from fastapi import BackgroundTasks, Depends, Request, Response, WebSocket
    from fastapi.security import SecurityScopes

    from fastapi_opinionated_eventbus import OnInternalEvent


    def get_user(source: {kind}) -> str:
        return "user"


    async def get_repo(user: Annotated[str, Depends(get_user)]) -> str:
        return "repo"


    @OnInternalEvent("x")
    async def handle(payload, repo: Annotated[str, Depends(get_repo)]) -> None:
        pass
"""


@pytest.mark.parametrize(
    "kind", ["Request", "WebSocket", "Response", "BackgroundTasks", "SecurityScopes"]
)
def test_a_dependency_needing_the_request_is_refused_at_import(
    kind: str, app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    root = app_dir({"bad/handlers.py": REQUEST_NEEDING.replace("{kind}", kind)})
    with pytest.raises(TypeError) as refused:
        eventbus_app_factory(root)
    message = str(refused.value)
    assert message.startswith(
        f"handler {HANDLER}, parameter 'repo' -> dependency app.domains.bad.handlers:get_repo, "
        "parameter 'user' -> dependency app.domains.bad.handlers:get_user, parameter 'source': "
        f"it needs a {kind}"
    ), message
    assert "there is no request behind an event" in message


UNRESOLVABLE = {
    "a parameter nothing fills": (
        """
        def get_repo(dsn: str) -> str:
            return dsn


        @OnInternalEvent("x")
        async def handle(repo: str = Depends(get_repo)) -> None:
            pass
        """,
        "parameter 'repo' -> dependency app.domains.bad.handlers:get_repo, parameter 'dsn': "
        "nothing can fill it",
    ),
    "a request field": (
        """
        from fastapi import Query


        def get_page(page: int = Query(1)) -> int:
            return page


        @OnInternalEvent("x")
        async def handle(page: Annotated[int, Depends(get_page)]) -> None:
            pass
        """,
        "parameter 'page': Query() reads the HTTP request",
    ),
    "Depends() on no class": (
        """
        @OnInternalEvent("x")
        async def handle(repo: Annotated[list[int], Depends()]) -> None:
            pass
        """,
        "parameter 'repo': Depends() without a dependency needs a class",
    ),
    "an annotation that does not resolve": (
        """
        @OnInternalEvent("x")
        async def handle(repo: "Annotated[Repo, Depends(get_repo)]") -> None:
            pass
        """,
        "parameter 'repo': its annotation 'Annotated[Repo, Depends(get_repo)]' cannot be "
        "resolved (NameError",
    ),
    "a cycle": (
        """
        def get_a(b=Depends(lambda: None)) -> None:
            pass


        def get_b(a=Depends(get_a)) -> None:
            pass


        get_a.__defaults__ = (Depends(get_b),)


        @OnInternalEvent("x")
        async def handle(a=Depends(get_a)) -> None:
            pass
        """,
        "a dependency cycle (app.domains.bad.handlers:get_a depends on itself)",
    ),
    "Depends twice": (
        """
        def get_a() -> int:
            return 1


        @OnInternalEvent("x")
        async def handle(a: Annotated[int, Depends(get_a)] = Depends(get_a)) -> None:
            pass
        """,
        "parameter 'a': Depends both in Annotated and as the default",
    ),
}

HEADER = """
from typing import Annotated

from fastapi import Depends

from fastapi_opinionated_eventbus import OnInternalEvent
"""


@pytest.mark.parametrize("case", list(UNRESOLVABLE))
def test_an_unresolvable_signature_is_refused_at_import(
    case: str, app_dir: AppDir, eventbus_app_factory: Factory
) -> None:
    source, expected = UNRESOLVABLE[case]
    import textwrap

    root = app_dir({"bad/handlers.py": HEADER + textwrap.dedent(source)})
    with pytest.raises(TypeError) as refused:
        eventbus_app_factory(root)
    message = str(refused.value)
    assert message.startswith(f"handler {HANDLER}, parameter "), message
    assert expected in message


def test_subscribe_refuses_the_same_way() -> None:
    def get_ip(request: Request) -> str:
        return "127.0.0.1"

    async def handler(ip: str = Depends(get_ip)) -> None:
        pass

    bus = EventBus()
    with pytest.raises(TypeError, match=r"parameter 'ip' -> dependency .*get_ip, parameter "):
        bus.subscribe("x", handler)
    assert bus.subscriptions() == []


def get_a() -> int:
    return 1


def test_injected_parameters_must_be_passable_by_keyword() -> None:
    async def positional_only(a: Annotated[int, Depends(get_a)], /) -> None:
        pass

    async def before_star_args(a: Annotated[int, Depends(get_a)], *rest: Any) -> None:
        pass

    bus = EventBus()
    with pytest.raises(TypeError, match="parameter 'a': an injected parameter must be passable"):
        bus.subscribe("x", positional_only)
    with pytest.raises(TypeError, match=r"come before \*args"):
        bus.subscribe("x", before_star_args)


def test_an_unresolvable_annotation_of_an_emitted_parameter_is_not_an_error() -> None:
    # (This module's annotations are strings: the name is resolved at subscribe, and fails.)
    async def handler(user: UserFromTypeCheckingImport) -> None:  # type: ignore[name-defined]  # noqa: F821
        pass

    sub = EventBus().subscribe("x", handler)
    assert sub.injection is None and sub.plain


def get_ip(request: Request) -> str:
    return "127.0.0.1"


async def test_an_override_that_cannot_be_resolved_fails_the_run_naming_it() -> None:
    def get_port(port: LocalAlias) -> int:  # type: ignore[name-defined]  # noqa: F821
        return 80

    async def handler(a: int = Depends(get_a)) -> None:
        pass

    async with started_bus() as bus:
        bus.subscribe("x", handler)
        bus.dependency_overrides[get_a] = get_ip  # overrides are analysed when first used
        needs_request = await bus.emit("x")
        bus.dependency_overrides[get_a] = get_port
        unresolved = await bus.emit("x")
    override = "the override of dependency test_dependencies_refused:get_a -> dependency "
    [failure] = needs_request.failures
    assert isinstance(failure.exception, TypeError)
    assert str(failure.exception).startswith(
        f"{override}test_dependencies_refused:get_ip, parameter 'request': it needs a Request"
    )
    [failure] = unresolved.failures
    assert "parameter 'port': nothing can fill it (an event has no query, path or body) " in str(
        failure.exception
    )
    assert "(its annotation 'LocalAlias' does not resolve in its module)" in str(failure.exception)
