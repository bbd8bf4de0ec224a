from __future__ import annotations

import itertools

from fastapi_opinionated.decorators.routing import Controller, Get, Post
from pydantic import BaseModel

from fastapi_opinionated_eventbus import eventbus_api

from .. import activity

_ids = itertools.count(1)


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
        user_data = {"id": next(_ids), **user.model_dump()}
        # Every handler of user.created has run when this returns.
        result = await eventbus_api().emit("user.created", user_data)
        return {**user_data, "handlers_run": result.handled}

    @Post("/payments")
    async def pay(self, payment: Payment) -> dict[str, object]:
        await eventbus_api().emit(
            "payment.processed", payment.payment_id, payment.status, payment.amount
        )
        return {"ok": True}

    @Get("/activity")
    async def list_activity(self) -> list[dict[str, object]]:
        return activity.entries()
