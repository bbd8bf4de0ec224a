"""Is the plugin enabled where the app starts, and does the app's code live there?

The core enables a plugin only when ``.fastapi_opinionated/enabled_plugins.py`` *of the
current directory* lists it, and imports handlers and controllers from ``app/domains`` *of
the current directory*. Get either wrong (the enable command never run, ``uvicorn
--app-dir`` from elsewhere) and the core says nothing: routes answer 404 and every emit
fails. These checks say it at startup, with the command that fixes it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi_opinionated.shared.logger import ns_logger

if TYPE_CHECKING:
    from .registry import Subscription

__all__ = [
    "DOMAINS_DIR",
    "ENABLED_FILE",
    "ENABLE_COMMAND",
    "PLUGIN_PATH",
    "EnabledFileError",
    "check_configured",
    "check_domains",
    "plugin_enabled",
    "read_enabled",
    "reexport_paths",
    "report_handlers",
]

logger = ns_logger("EventBus")

# The defining module's path: the core looks the plugin's configuration up by it.
PLUGIN_PATH = "fastapi_opinionated_eventbus.plugin.EventBusPlugin"
ENABLED_FILE = Path(".fastapi_opinionated") / "enabled_plugins.py"
DOMAINS_DIR = Path("app") / "domains"
ENABLE_COMMAND = f"fastapi-opinionated plugins enable {PLUGIN_PATH}"


class EnabledFileError(Exception):
    """``enabled_plugins.py`` exists but cannot be read."""


def read_enabled(root: Path) -> list[str]:
    """``ENABLED_PLUGINS`` of the app at ``root``, read as the core reads it (executed)."""
    path = root / ENABLED_FILE
    if not path.is_file():
        return []
    namespace: dict[str, Any] = {}
    try:
        exec(compile(path.read_text(), str(path), "exec"), namespace)
    except Exception as exc:
        raise EnabledFileError(f"cannot read {ENABLED_FILE}: {type(exc).__name__}: {exc}") from None
    listed = namespace.get("ENABLED_PLUGINS", [])
    return [str(item) for item in listed] if isinstance(listed, list | tuple) else []


def reexport_paths(listed: Sequence[str]) -> list[str]:
    """Entries naming the plugin through a re-export: the core drops their configuration,
    because it looks the configuration up by the defining module's path."""
    return [
        p
        for p in listed
        if p != PLUGIN_PATH
        and p.startswith("fastapi_opinionated_eventbus")
        and p.endswith(".EventBusPlugin")
    ]


def plugin_enabled(listed: Sequence[str]) -> bool:
    return PLUGIN_PATH in listed or bool(reexport_paths(listed))


def check_configured() -> None:
    """The app builds an ``EventBusPlugin`` to configure it, before ``App.create()``: warn
    now if ``App.create()`` is not going to enable it (no hook of the plugin runs then)."""
    root = Path(os.getcwd())
    try:
        enabled = plugin_enabled(read_enabled(root))
    except EnabledFileError:
        return  # App.create() raises its own error about the file
    if enabled:
        return  # on_enable checks app/domains, inside App.create()
    check_domains()
    logger.warning(
        f"EventBusPlugin is configured but not enabled: {root / ENABLED_FILE} does not list "
        f"{PLUGIN_PATH}, so App.create() will not enable it and every emit will raise "
        f"EventBusNotEnabled. Fix: run `{ENABLE_COMMAND}` in the app's root directory (the "
        "one holding app/domains), and start the app from there."
    )


def check_domains() -> None:
    """Warn when the current directory has no ``app/domains``: the core would find no
    handler and no controller there, silently."""
    root = Path(os.getcwd())
    if not (root / DOMAINS_DIR).is_dir():
        logger.warning(
            f"No {DOMAINS_DIR} directory in the current directory ({root}): App.create() "
            "imports the app's handlers and controllers from there, so none will be found "
            "(routes answer 404, emits reach no handler). Start the app from its root "
            "directory: uvicorn's --app-dir changes the import path, not the current directory."
        )


def report_handlers(subscriptions: Sequence[Subscription], *, distributed: bool) -> None:
    """At startup: how many handlers are subscribed, and from which modules (or a warning
    when there are none and this process is the only one that could run them)."""
    root = Path(os.getcwd())
    if not subscriptions:
        where = f"none was found in {root / DOMAINS_DIR}"
        if distributed:  # a producer-only process of a broker app: fine
            logger.info(f"No @OnInternalEvent handler is subscribed in this process ({where})")
        else:
            logger.warning(
                f"No @OnInternalEvent handler is subscribed ({where}): every emit will reach "
                "no handler. Start the app from its root directory."
            )
        return
    modules = sorted({sub.name.partition(":")[0] for sub in subscriptions})
    shown = ", ".join(modules[:_MODULES_SHOWN])
    if len(modules) > _MODULES_SHOWN:
        shown += f" and {len(modules) - _MODULES_SHOWN} more module(s)"
    events = len({sub.event for sub in subscriptions})
    logger.info(
        f"{len(subscriptions)} handler(s) subscribed to {events} event name(s) or pattern(s), "
        f"from {shown} (app root {root})"
    )


_MODULES_SHOWN = 5
