from __future__ import annotations

import uuid

from fastapi_opinionated.decorators.routing import Controller, Get, Post
from pydantic import BaseModel

from fastapi_opinionated_eventbus import eventbus_api

from .. import activity


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
        # Unique across worker processes (a per-process counter would repeat).
        user_data = {"id": uuid.uuid4().hex, **user.model_dump()}
        result = await eventbus_api().emit("user.created", user_data)
        # Local backend: every handler of user.created has run when emit returns (2).
        # Redis: emit returns once Redis stored the event (0 ran here); a worker runs the
        # handlers afterwards: look for event_id in the activity.
        return {
            **user_data,
            "event_id": result.event_id,
            "handled_before_response": result.handled,
        }

    @Post("/payments")
    async def pay(self, payment: Payment) -> dict[str, object]:
        await eventbus_api().emit(
            "payment.processed", payment.payment_id, payment.status, payment.amount
        )
        return {"ok": True}

    @Get("/activity")
    async def list_activity(self) -> list[dict[str, object]]:
        return activity.entries()
