"""A minimal Starlette app and an httpx client around it, for the after-response scenario."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from benchmarks.harness import Counter, PairedCase

Endpoint = Callable[[Request], Awaitable[Response]]


async def plain(request: Request) -> Response:
    return PlainTextResponse("ok")


def make_app(emit: Endpoint, middleware: Sequence[Middleware] = ()) -> Starlette:
    """``/emit`` emits one event; ``/plain`` is the same request without the event."""
    return Starlette(
        routes=[Route("/emit", emit), Route("/plain", plain)],
        middleware=list(middleware),
    )


def paired_case(
    app: Any,
    counter: Counter,
    *,
    settle: Callable[[], Awaitable[None]] | None = None,
    close: Callable[[], Awaitable[None]] | None = None,
    note: str = "",
) -> PairedCase:
    """Requests go through httpx's in-process ASGI transport (no sockets).

    ``settle`` runs at the end of each batch, inside the timed region, for systems whose handlers
    may still be running when the ASGI call returns: their work is then counted too.
    """
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench")

    def loop(path: str) -> Callable[[int], Awaitable[None]]:
        async def run(n: int) -> None:
            get = client.get
            for _ in range(n):
                response = await get(path)
                if response.status_code != 200:
                    raise RuntimeError(f"GET {path} -> {response.status_code}")
            if settle is not None:
                await settle()

        return run

    async def close_all() -> None:
        await client.aclose()
        if close is not None:
            await close()

    return PairedCase(loop("/emit"), loop("/plain"), counter, close_all, note)
