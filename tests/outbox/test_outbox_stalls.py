"""A database that stops answering in the middle of a relay cycle: every wait of the relay
is bounded, the stuck connection is dropped, and the row is dispatched again on a new one.

The relay talks to PostgreSQL through a TCP proxy that can freeze the connections open at
that moment (they pass no more bytes, either way, and are never answered again: a server
that hangs, a network path that went dark) while new connections pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses

import pytest
from outbox_support import Database, Make, eventually, outbox_rows
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from fastapi_opinionated_eventbus import current_event
from fastapi_opinionated_eventbus.outbox import _relay


class FreezingProxy:
    """Forwards 127.0.0.1:<port> to ``host:port``. :meth:`freeze` makes the connections
    open now pass nothing more; :meth:`freeze_at` does that to the first connection whose
    client sends ``marker`` after ``after``, before the server sees the marker. Closing
    either end of a connection closes both (so the server ends the session of a client
    that dropped its socket)."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._frozen: set[asyncio.StreamWriter] = set()
        self._open: set[asyncio.StreamWriter] = set()
        self._marker: tuple[bytes, bytes] | None = None
        self._armed: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.froze = asyncio.Event()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def freeze(self) -> None:
        self._frozen |= self._open
        self.froze.set()

    def freeze_at(self, marker: bytes, *, after: bytes) -> None:
        self._marker = (marker, after)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._open:
            writer.close()

    async def _serve(
        self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter
    ) -> None:
        upstream_reader, upstream = await asyncio.open_connection(*self._target)
        self._open |= {client, upstream}
        try:
            await asyncio.gather(
                self._pump(client_reader, upstream, client),
                self._pump(upstream_reader, client, upstream),
            )
        finally:
            for writer in (client, upstream):
                self._open.discard(writer)
                writer.close()

    async def _pump(
        self, reader: asyncio.StreamReader, to: asyncio.StreamWriter, origin: asyncio.StreamWriter
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                if self._marker is not None and self._is_client(origin):
                    marker, after = self._marker
                    if after in data:
                        self._armed.add(origin)
                    if origin in self._armed and marker in data.rpartition(after)[2]:
                        self._marker = None
                        self._frozen |= {origin, to}
                        self.froze.set()
                if origin in self._frozen or to in self._frozen:
                    continue  # swallowed: that connection never hears back
                to.write(data)
                await to.drain()
        to.close()  # one end went away: so does the other

    def _is_client(self, writer: asyncio.StreamWriter) -> bool:
        peer = writer.get_extra_info("peername")
        return bool(peer) and tuple(peer[:2]) != self._target


@pytest.mark.parametrize("stall", ["settling", "committing"])
async def test_a_database_that_stops_answering_mid_cycle_costs_one_bounded_wait(
    stall: str, pg_database: Database, make_bus: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_relay, "DB_TIMEOUT", 1.0)
    url = make_url(pg_database.async_url)
    assert url.host is not None and url.port is not None
    proxy = FreezingProxy(url.host, url.port)
    port = await proxy.start()
    proxied = url.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
    bus = make_bus(dataclasses.replace(pg_database, async_url=proxied))
    calls: list[str] = []

    async def job(n: int) -> None:
        calls.append(current_event().id)
        if len(calls) > 1:
            return
        if stall == "settling":
            proxy.freeze()  # the relay's claim is open on its connection: it never ends
        else:
            # Settled (its rows deleted), but the commit never reaches the server.
            proxy.freeze_at(b"COMMIT", after=b"DELETE FROM")

    bus.subscribe("job", job)
    engine = create_async_engine(pg_database.async_url)  # the app's, not through the proxy
    try:
        await bus.start()
        async with AsyncSession(engine) as session, session.begin():
            envelope = await bus.outbox(session).emit("job", 1)
        await eventually(lambda: len(calls) >= 2, timeout=20, what="the event dispatched again")
        # Each statement, the commit and the close waited DB_TIMEOUT at most; then the
        # dropped connection's session ended and the row could be claimed again.
        assert proxy.froze.is_set()
        assert calls == [envelope.id, envelope.id]

        async def settled() -> bool:
            return not await outbox_rows(pg_database)

        await eventually(settled, what="the row settled")
    finally:
        await bus.aclose()
        await proxy.close()
        await engine.dispose()
