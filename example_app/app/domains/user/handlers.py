"""Handlers of the user domain: they react to events, the routes never call them."""

from __future__ import annotations

import threading
from typing import Any

from fastapi_opinionated_eventbus import OnInternalEvent

from . import activity


@OnInternalEvent("user.created")
async def send_welcome_notification(user: dict[str, Any]) -> None:
    # Async handler: runs on the event loop.
    activity.record("welcome", user_id=user["id"])


@OnInternalEvent("user.created")
def write_audit_record(user: dict[str, Any]) -> None:
    # Sync handler: runs in a worker thread, so blocking I/O here does not stall the app.
    activity.record("audit", user_id=user["id"], thread=threading.current_thread().name)


@OnInternalEvent("payment.processed")
async def handle_payment_result(payment_id: str, status: str, amount: float) -> None:
    activity.record("payment", payment_id=payment_id, status=status, amount=amount)
