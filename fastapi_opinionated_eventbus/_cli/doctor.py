"""``doctor``: the checks it runs and the findings it reports.

The installed version, the plugin enabled, the settings valid, the backend answering
(asked through the backend itself), the handlers importable; then the static scan's
cross-check of emitted names against subscriptions (:mod:`.scan`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._core.bus import EventBus
from .._core.settings import BusSettings
from .._text import loggable
from ..plugin import PLUGIN_PATH
from .connect import THIS_PROCESS_KEYS, target_of, with_bus
from .discovery import (
    ENABLE_COMMAND,
    ENABLED_FILE,
    CliError,
    HandlerInfo,
    discover_handlers,
    enabled_plugins,
    installed_version,
    plugin_enabled,
    reexport_paths,
    settings_from_env,
)
from .scan import Scan, Site, closest, did_you_mean, matches, scan_app

__all__ = ["Finding", "cross_check", "diagnose"]


@dataclass(frozen=True, slots=True)
class Finding:
    """One line of ``doctor``'s report."""

    level: str  # "ok" | "warning" | "error"
    message: str
    location: str | None = None

    def to_json(self) -> dict[str, str | None]:
        return {"level": self.level, "location": self.location, "message": self.message}


def cross_check(handlers: list[HandlerInfo], scan: Scan) -> list[Finding]:
    """Emitted names no subscription reaches (errors); exact subscriptions nothing emits
    (warnings)."""
    exact = {h.event for h in handlers if not h.is_pattern}
    exact.update(site.name for site in (*scan.subscribed, *scan.undiscovered))
    patterns = sorted({h.event for h in handlers if h.is_pattern})
    findings = [_summary(scan)]
    findings += [
        _unsubscribed(site, exact)
        for site in scan.emitted
        if not matches(site.name, exact, patterns)
    ]
    emitted = {site.name for site in scan.emitted}
    findings.extend(
        _unemitted(h, scan) for h in handlers if not h.is_pattern and h.event not in emitted
    )
    findings.extend(_undiscovered(site) for site in scan.undiscovered)
    findings.extend(
        Finding("warning", f"not scanned: {s.name}", s.location) for s in scan.unparsable
    )
    return findings


def _summary(scan: Scan) -> Finding:
    computed = f" ({len(scan.computed)} with computed names not checked)" if scan.computed else ""
    return Finding("ok", f"{len(scan.emitted)} emit(s) found in {scan.files} file(s){computed}")


def _unsubscribed(site: Site, exact: set[str]) -> Finding:
    hint = did_you_mean(closest(site.name, exact))
    return Finding(
        "error", f"{site.name!r} is emitted but no handler subscribes to it{hint}", site.location
    )


def _unemitted(handler: HandlerInfo, scan: Scan) -> Finding:
    caveat = (
        f"; {len(scan.computed)} emit(s) with computed names were not checked"
        if scan.computed
        else ""
    )
    return Finding(
        "warning",
        f"{handler.handler} subscribes to {handler.event!r} but nothing emits it{caveat}",
        handler.location,
    )


def _undiscovered(site: Site) -> Finding:
    return Finding(
        "warning",
        f"@OnInternalEvent({site.name!r}) is outside app/domains: the core does not import "
        "this module, so the handler runs only if something imports it before startup",
        site.location,
    )


# ====================================================================== doctor's checks
def diagnose(root: Path, exclude: Iterable[str] = ()) -> list[Finding]:
    """Every check of ``doctor``, in the order it reports them."""
    findings = [Finding("ok", installed_version())]
    findings += _check_plugin(root)
    settings, found = _check_settings()
    findings += found
    if settings is not None:
        findings += _check_backend(root, settings)
    infos, found = _check_handlers(root)
    findings += found
    if infos is not None:
        typed = {h.schema_class: h.event for h in infos if h.schema_class}
        findings += cross_check(infos, scan_app(root, typed, exclude))
    return findings


def _check_plugin(root: Path) -> list[Finding]:
    listed = enabled_plugins(root)
    if not plugin_enabled(listed):
        return [Finding("error", f"the EventBus plugin is not enabled: run `{ENABLE_COMMAND}`")]
    findings = [Finding("ok", f"plugin enabled in {ENABLED_FILE}")]
    for path in reexport_paths(listed):
        findings.append(
            Finding(
                "warning",
                f"{path!r} is a re-export: the core ignores App.configurePlugin options "
                f"given for it; list {PLUGIN_PATH!r} instead",
                str(ENABLED_FILE),
            )
        )
    return findings


def _check_settings() -> tuple[BusSettings | None, list[Finding]]:
    try:
        return settings_from_env(), []
    except CliError as exc:
        return None, [Finding("error", str(exc))]


def _check_handlers(root: Path) -> tuple[list[HandlerInfo] | None, list[Finding]]:
    try:
        infos = discover_handlers(root)
    except CliError as exc:
        # Without the handlers, every emit would look unsubscribed: skip the cross-check.
        return None, [Finding("error", str(exc))]
    if not infos:
        return infos, [Finding("warning", "no @OnInternalEvent handler found under app/domains")]
    return infos, [Finding("ok", f"{len(infos)} handler(s) discovered under app/domains")]


def _check_backend(root: Path, settings: BusSettings) -> list[Finding]:
    """The configured backend, asked through itself (connected, never consuming): any
    backend whose ``health()`` reports ``reachable``."""
    notes: list[Finding] = []

    def note(message: str) -> None:
        notes.append(Finding("warning", message))

    try:
        distributed, health = asyncio.run(
            with_bus(target_of(root, settings), "the health check", _health, on_warning=note)
        )
    except CliError as exc:
        return [Finding("error", str(exc)), *notes]
    name = health.get("backend", settings.backend)
    notes += [Finding("warning", loggable(str(w))) for w in health.get("warnings") or ()]
    if not health.get("reachable", False):
        reason = health.get("error") or "no reason given"
        return [Finding("error", f"the {name} backend is unreachable: {reason}"), *notes]
    if not distributed:
        return [Finding("ok", f"backend {name}: handlers run in the app's own process"), *notes]
    where = ", ".join(
        f"{key}={value}"
        for key, value in health.items()
        if isinstance(value, str) and key not in _NOT_WHERE
    )
    return [Finding("ok", f"backend {name} reachable" + (f": {where}" if where else "")), *notes]


# Text keys of a health report that do not say where the app's events are.
_NOT_WHERE = frozenset({"backend", "error"}) | THIS_PROCESS_KEYS


async def _health(bus: EventBus) -> tuple[bool, Mapping[str, Any]]:
    return bus.backend.distributed, await bus.backend.health()
