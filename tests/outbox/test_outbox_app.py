"""The outbox in a real app: a route stores a user and emits through the outbox in one
transaction; the domain's handler runs after the commit; the introspection endpoint
shows the outbox."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from outbox_support import Database
from support import Factory, domain

HANDLERS = """
from fastapi_opinionated_eventbus import OnInternalEvent, current_event

seen = []


@OnInternalEvent("user.created")
async def welcome(user: dict) -> None:
    seen.append((current_event().id, user))
"""

CONTROLLER = """
import os

from fastapi_opinionated.decorators.routing import Controller, Post
from pydantic import BaseModel
from sqlalchemy import Column, Integer, String
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import NullPool

from fastapi_opinionated_eventbus import eventbus_api


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "outbox_test_users"
    id = Column(Integer, primary_key=True)
    name = Column(String(100), nullable=False)


# No pool: nothing stays open after the test (the app never disposes of its engine).
engine = create_async_engine(os.environ["APP_DATABASE_URL"], poolclass=NullPool)


class NewUser(BaseModel):
    name: str
    fail: bool = False


@Controller("/users")
class UserController:
    @Post("/")
    async def create(self, new: NewUser) -> dict[str, object]:
        async with AsyncSession(engine) as session, session.begin():
            user = User(name=new.name)
            session.add(user)
            await session.flush()
            user_id = user.id
            envelope = await eventbus_api().outbox(session).emit(
                "user.created", {"id": user.id, "name": user.name}
            )
            if new.fail:
                raise RuntimeError("the request fails after the emit")
        return {"id": user_id, "event_id": envelope.id}
"""


def _wait(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_route_commits_a_user_and_its_event(
    database: Database,
    app_dir: Callable[..., Path],
    eventbus_app_factory: Factory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("APP_DATABASE_URL", database.async_url)
    root = app_dir({"users/handlers.py": HANDLERS, "users/controllers/controller.py": CONTROLLER})
    app = eventbus_app_factory(
        root,
        outbox_url=database.async_url,
        outbox_table=database.table,
        outbox_poll_interval=0.1,
        introspection_path="/_eventbus",
    )
    seen = domain("users.handlers").seen
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.post("/users/", json={"name": "Jane"})
        assert response.status_code == 200, response.text
        created = response.json()
        _wait(lambda: len(seen) == 1)
        failed = client.post("/users/", json={"name": "Ghost", "fail": True})
        assert failed.status_code == 500
        time.sleep(0.3)
        report = client.get("/_eventbus").json()
    assert seen == [(created["event_id"], {"id": created["id"], "name": "Jane"})]
    outbox = report["health"]["outbox"]
    assert outbox["reachable"] is True and outbox["pending"] == 0
    assert outbox["table"] == database.table and outbox["dispatched_here"] == 1
    if database.password:
        assert database.password not in str(report)
