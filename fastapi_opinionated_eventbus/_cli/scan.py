"""The static scan of the app's code behind ``doctor``, and the name matching ``emit`` uses.

The scan compares what the code emits (string literals passed to ``emit``,
``emit_nowait`` and ``emit_after_response``) with what handlers subscribe to. The scan
itself imports nothing: it reads every ``.py`` file under the app root with ``ast``.

``emit`` is a common method name (Socket.IO, pyee, ...): a call ``x.emit("name")`` counts
only when ``x`` is evidently the event bus: ``eventbus_api()``, a name containing "bus",
or a name the same module assigns from ``eventbus_api()``/``EventBus(...)`` or annotates
as ``EventBus``; or the transactional outbox: ``<anything>.outbox(session).emit(...)``, or
a name the module assigns from such an ``.outbox(...)`` call. ``emit_nowait`` and
``emit_after_response`` always count. A line with the comment ``# eventbus: ignore`` is
skipped.
"""

from __future__ import annotations

import ast
import difflib
import fnmatch
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .discovery import HandlerInfo

__all__ = [
    "Scan",
    "Site",
    "closest",
    "did_you_mean",
    "iter_python_files",
    "matches",
    "scan_app",
    "unsubscribed_emit",
]

EMITTERS = frozenset({"emit", "emit_nowait", "emit_after_response"})
_ALWAYS_BUS = frozenset({"emit_nowait", "emit_after_response"})
_BUS_FACTORIES = frozenset({"eventbus_api", "EventBus"})
# eventbus_api().outbox(session) emits too (after the transaction commits).
_EMITTER_FACTORIES = _BUS_FACTORIES | {"outbox"}
_SKIPPED_DIRS = frozenset({"__pycache__", "node_modules", "site-packages", "venv"})
IGNORE_MARK = "eventbus: ignore"
DOMAINS_PREFIX = "app/domains/"


@dataclass(frozen=True, slots=True)
class Site:
    """A place in the code: an event name (or expression text) at ``file:line``."""

    name: str
    file: str
    line: int

    @property
    def location(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(slots=True)
class Scan:
    emitted: list[Site] = field(default_factory=list)
    """Literal event names passed to the bus's emit methods."""
    computed: list[Site] = field(default_factory=list)
    """Emits whose name is an expression the scan cannot evaluate."""
    subscribed: list[Site] = field(default_factory=list)
    """Literal names given to ``bus.subscribe`` (subscriptions made at run time)."""
    undiscovered: list[Site] = field(default_factory=list)
    """``@OnInternalEvent`` outside ``app/domains``: the core never imports those modules."""
    unparsable: list[Site] = field(default_factory=list)
    files: int = 0
    truncated: bool = False
    """The scan stopped at its file limit: files after it were not read."""


def iter_python_files(root: Path, exclude: Iterable[str] = ()) -> Iterator[Path]:
    """Every ``.py`` under ``root``, minus hidden directories, virtualenvs and caches."""
    patterns = tuple(exclude)
    for directory, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _SKIPPED_DIRS)
        for name in sorted(files):
            path = Path(directory, name)
            relative = path.relative_to(root).as_posix()
            if name.endswith(".py") and not any(fnmatch.fnmatch(relative, p) for p in patterns):
                yield path


def scan_app(
    root: Path,
    typed_events: Mapping[str, str],
    exclude: Iterable[str] = (),
    max_files: int | None = None,
) -> Scan:
    """Scan the app's files. ``typed_events`` maps a typed event class's name to its event
    name, so ``emit(UserCreated(...))`` counts as emitting ``user.created``. At most
    ``max_files`` files are read (``truncated`` says when there were more)."""
    scan = Scan()
    for path in iter_python_files(root, exclude):
        if max_files is not None and scan.files >= max_files:
            scan.truncated = True
            break
        scan.files += 1
        _scan_file(path, path.relative_to(root).as_posix(), typed_events, scan)
    return scan


def _scan_file(path: Path, relative: str, typed_events: Mapping[str, str], scan: Scan) -> None:
    try:
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source, filename=relative)
    except (SyntaxError, UnicodeDecodeError, ValueError) as exc:
        line = getattr(exc, "lineno", None) or 1
        scan.unparsable.append(Site(f"{type(exc).__name__}: {exc}", relative, line))
        return
    lines = source.splitlines()
    visitor = _Visitor(relative, typed_events, _bus_names(tree))
    visitor.visit(tree)
    keep = [site for site in visitor.emitted if not _ignored(lines, site.line)]
    scan.emitted.extend(keep)
    scan.computed.extend(s for s in visitor.computed if not _ignored(lines, s.line))
    scan.subscribed.extend(visitor.subscribed)
    if not relative.startswith(DOMAINS_PREFIX):
        scan.undiscovered.extend(visitor.declared)


def _ignored(lines: list[str], line: int) -> bool:
    return 0 < line <= len(lines) and IGNORE_MARK in lines[line - 1]


def _terminal_name(node: ast.expr) -> str | None:
    """``bus`` for ``bus``, ``self.bus``, ``App.plugin.bus``; the callee's for a call."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Call):
        return _terminal_name(node.func)
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value.rpartition(".")[2]  # a string annotation: "EventBus"
    return None


def _bus_names(tree: ast.AST) -> frozenset[str]:
    """Names this module binds to the event bus (by assignment or annotation)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and _is_bus_factory(node.value):
            names.update(n for t in node.targets if (n := _terminal_name(t)))
        elif isinstance(node, ast.AnnAssign):
            if _is_bus_factory(node.value) or _terminal_name(node.annotation) == "EventBus":
                name = _terminal_name(node.target)
                if name:
                    names.add(name)
        elif (
            isinstance(node, ast.arg)
            and node.annotation is not None
            and _terminal_name(node.annotation) == "EventBus"
        ):
            names.add(node.arg)
    return frozenset(names)


def _is_bus_factory(value: ast.expr | None) -> bool:
    return isinstance(value, ast.Call) and _terminal_name(value.func) in _EMITTER_FACTORIES


class _Visitor(ast.NodeVisitor):
    def __init__(
        self, relative: str, typed_events: Mapping[str, str], bus_names: frozenset[str]
    ) -> None:
        self.relative = relative
        self.typed_events = typed_events
        self.bus_names = bus_names
        self.emitted: list[Site] = []
        self.computed: list[Site] = []
        self.subscribed: list[Site] = []
        self.declared: list[Site] = []

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Attribute) and node.args:
            if func.attr in EMITTERS and self._is_bus(func):
                self._record_emit(node.args[0], node.lineno)
            elif func.attr == "subscribe" and self._is_bus(func):
                self._record_name(node.args[0], node.lineno, self.subscribed)
        if _terminal_name(func) == "OnInternalEvent" and node.args:
            self._record_name(node.args[0], node.lineno, self.declared)
        self.generic_visit(node)

    def _is_bus(self, func: ast.Attribute) -> bool:
        if func.attr in _ALWAYS_BUS:
            return True
        receiver = _terminal_name(func.value)
        if receiver is None:
            return False
        if isinstance(func.value, ast.Call):
            return receiver in _EMITTER_FACTORIES
        return "bus" in receiver.lower() or receiver in self.bus_names

    def _record_emit(self, arg: ast.expr, line: int) -> None:
        name = self._literal_name(arg)
        if name is not None:
            self.emitted.append(Site(name, self.relative, line))
        elif not isinstance(arg, ast.Starred):
            self.computed.append(Site(ast.unparse(arg), self.relative, line))

    def _record_name(self, arg: ast.expr, line: int, into: list[Site]) -> None:
        name = self._literal_name(arg)
        if name is not None:
            into.append(Site(name, self.relative, line))

    def _literal_name(self, arg: ast.expr) -> str | None:
        """``"user.created"``; for ``UserCreated(...)`` or ``UserCreated``, its event name."""
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            return arg.value
        typed = (
            _terminal_name(arg) if isinstance(arg, ast.Call | ast.Name | ast.Attribute) else None
        )
        return None if typed is None else self.typed_events.get(typed)


def matches(name: str, exact: set[str], patterns: Iterable[str]) -> bool:
    """Whether an emitted name reaches a subscription, as the bus resolves it."""
    return name in exact or any(fnmatch.fnmatchcase(name, p) for p in patterns)


def closest(name: str, subscribed: Iterable[str], count: int = 1) -> list[str]:
    """The subscribed names ``name`` was most likely meant to be (a typo's fix)."""
    return difflib.get_close_matches(name, sorted(set(subscribed)), n=count, cutoff=0.75)


def did_you_mean(names: list[str]) -> str:
    """`` (did you mean 'a' or 'b'?)``, or nothing without a name to suggest."""
    return f" (did you mean {' or '.join(map(repr, names))}?)" if names else ""


def unsubscribed_emit(name: str, handlers: list[HandlerInfo]) -> str | None:
    """Why emitting ``name`` would reach no handler of the app, or None when one matches."""
    exact = {h.event for h in handlers if not h.is_pattern}
    if matches(name, exact, (h.event for h in handlers if h.is_pattern)):
        return None
    hint = did_you_mean(closest(name, exact, count=3)) or (
        f" (`fastapi-opinionated-eventbus handlers` lists the {len(exact)} subscribed names)"
    )
    return f"no handler subscribes to {name!r}, so nothing was emitted{hint}"
