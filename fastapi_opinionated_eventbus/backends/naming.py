"""Names every broker backend derives from the app: one slug of the app's title."""

from __future__ import annotations

import re

__all__ = ["app_prefix", "default_prefix"]

_NOT_SLUG = re.compile(r"[^a-z0-9]+")


def default_prefix(title: str) -> str:
    """The prefix of an app titled ``title``: ``"Orders API"`` -> ``"orders-api"``.

    Redis keys and Kafka topics and groups start with it, so two apps on one broker keep
    apart as long as their titles differ; set the backend's prefix, topic or group option
    when they do not (e.g. both keep FastAPI's default title).
    """
    return _NOT_SLUG.sub("-", title.lower()).strip("-") or "eventbus"


def app_prefix(app_name: str | None) -> str:
    """The prefix of an app, ``eventbus`` when the bus was built without an app name."""
    return default_prefix(app_name) if app_name else "eventbus"
