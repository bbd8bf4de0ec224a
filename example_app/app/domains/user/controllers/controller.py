from __future__ import annotations

from fastapi_opinionated.decorators.routing import Controller, Get, Post
from pydantic import BaseModel
from sqlalchemy import select

from fastapi_opinionated_eventbus import eventbus_api

from .. import activity, storage


class NewUser(BaseModel):
    name: str
    email: str


class Payment(BaseModel):
    payment_id: str
    status: str
    amount: float


@Controller("/users", group="USERS")
class UserController:
    @Post("/")
    async def create(self, user: NewUser) -> dict[str, object]:
        # The user and its user.created event are committed together (the transactional
        # outbox): the handlers run right after the commit, never for a rolled-back user.
        async with storage.session() as session, session.begin():
            stored = storage.User(**user.model_dump())
            session.add(stored)
            await session.flush()  # the database assigns the id
            user_data = {"id": stored.id, **user.model_dump()}
            event = await eventbus_api().outbox(session).emit("user.created", user_data)
        return {**user_data, "event_id": event.id}

    @Get("/")
    async def list_users(self) -> list[dict[str, object]]:
        async with storage.session() as session:
            users = await session.scalars(select(storage.User).order_by(storage.User.id))
            return [{"id": u.id, "name": u.name, "email": u.email} for u in users]

    @Post("/payments")
    async def pay(self, payment: Payment) -> dict[str, object]:
        await eventbus_api().emit(
            "payment.processed", payment.payment_id, payment.status, payment.amount
        )
        return {"ok": True}

    @Get("/activity")
    async def list_activity(self) -> list[dict[str, object]]:
        return activity.entries()
