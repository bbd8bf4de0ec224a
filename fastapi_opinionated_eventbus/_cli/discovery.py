"""What the CLI learns from an app directory: its enabled plugins and declared handlers.

Handlers are discovered the way the core's own ``fastapi-opinionated list handlers`` does
it (metadata mode): enabled plugins are instantiated but not enabled, then every module
under ``app/domains`` is imported, which runs the ``@OnInternalEvent`` declarations.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import logging
import os
import re
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from .._core.declarations import FORWARDS, HANDLERS, PLUGIN_NAME
from .._core.enablement import (
    DOMAINS_DIR,
    ENABLE_COMMAND,
    ENABLED_FILE,
    EnabledFileError,
    plugin_enabled,
    read_enabled,
    reexport_paths,
)
from .._core.errors import ConfigurationError
from .._core.injection import Injection
from .._core.retry import RetryPolicy
from .._core.settings import BusSettings, load_settings

__all__ = [
    "DOMAINS_DIR",
    "ENABLED_FILE",
    "ENABLE_COMMAND",
    "CliError",
    "HandlerInfo",
    "app_title",
    "app_version",
    "configure_core_logs",
    "discover_handlers",
    "enabled_plugins",
    "enter_app",
    "installed_version",
    "plugin_enabled",
    "reexport_paths",
    "require_app_root",
    "require_plugin_enabled",
    "settings_from_env",
    "warn",
]


class CliError(Exception):
    """A problem the user can fix: printed as one line on stderr, exit code 2."""


def require_app_root(root: Path) -> Path:
    if not (root / DOMAINS_DIR).is_dir():
        raise CliError(
            f"{root} is not a fastapi-opinionated app directory (no {DOMAINS_DIR}/): "
            "run this in the app's root"
        )
    return root


def enter_app(options: Any) -> Path:
    """Validate the app root that the global options (``ctx.obj``: ``app_dir``,
    ``verbose``) name, make it the current directory (the core reads its files relative to
    it) and quiet the core's logs."""
    app_dir: Path = getattr(options, "app_dir", Path("."))
    root = require_app_root(app_dir.resolve())
    os.chdir(root)
    plain = bool(os.environ.get("NO_COLOR")) or not sys.stderr.isatty()
    configure_core_logs(verbose=bool(getattr(options, "verbose", False)), plain=plain)
    return root


# ====================================================================== enabled plugins
def enabled_plugins(root: Path) -> list[str]:
    """``ENABLED_PLUGINS`` of the app, read as the core reads it (executed, not parsed)."""
    try:
        return read_enabled(root)
    except EnabledFileError as exc:
        raise CliError(str(exc)) from None


def require_plugin_enabled(root: Path) -> None:
    if not plugin_enabled(enabled_plugins(root)):
        raise CliError(f"the EventBus plugin is not enabled in this app: run `{ENABLE_COMMAND}`")


# ====================================================================== settings
def settings_from_env() -> BusSettings:
    """The bus options from ``EVENTBUS_*`` variables (``main.py``'s options are not read:
    importing it would build and start the whole app)."""
    try:
        return load_settings()
    except ConfigurationError as exc:
        raise CliError(str(exc)) from None


def app_title(root: Path) -> str | None:
    """The title ``main.py`` passes to ``App.create()``; None when it cannot be read."""
    return _create_argument(root, "title", "FastAPI")  # FastAPI's default title


def app_version(root: Path) -> str | None:
    """The version ``main.py`` passes to ``App.create()``; None when it cannot be read."""
    return _create_argument(root, "version", "0.1.0")  # FastAPI's default version


def _create_argument(root: Path, name: str, default: str) -> str | None:
    """A literal keyword argument of ``App.create()`` in ``main.py`` (``default`` when it
    is not given); None when it cannot be read without running ``main.py``."""
    try:
        tree = ast.parse((root / "main.py").read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return None
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "create"
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "App"
        ):
            return _keyword_argument(node, name, default)
    return None


def _keyword_argument(call: ast.Call, name: str, default: str) -> str | None:
    for keyword in call.keywords:
        if keyword.arg is None:  # App.create(**options): could hold it
            return None
        if keyword.arg == name:
            value = keyword.value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                return value.value
            return None
    return default


# ====================================================================== discovery
@dataclass(frozen=True, slots=True)
class HandlerInfo:
    """One ``@OnInternalEvent`` declaration, as the CLI shows it."""

    event: str
    handler: str
    is_async: bool
    is_pattern: bool
    file: str | None
    line: int | None
    priority: int
    retry: RetryPolicy | None
    timeout: float | None
    broadcast: bool
    schema: str | None
    schema_class: str | None = dataclasses.field(default=None, compare=False)
    injection: Injection | None = dataclasses.field(default=None, compare=False)
    """The handler's FastAPI dependencies (None: it has none)."""

    @property
    def dependencies(self) -> list[str]:
        """``repo=Depends(module:qualname)`` per injected parameter."""
        return [] if self.injection is None else self.injection.summary()

    @property
    def location(self) -> str:
        if self.file is None:
            return "?"
        return self.file if self.line is None else f"{self.file}:{self.line}"

    def to_json(self) -> dict[str, Any]:
        return {
            "event": self.event,
            "pattern": self.is_pattern,
            "handler": self.handler,
            "is_async": self.is_async,
            "file": self.file,
            "line": self.line,
            "priority": self.priority,
            "retry": None if self.retry is None else dataclasses.asdict(self.retry),
            "timeout": self.timeout,
            "broadcast": self.broadcast,
            "schema": self.schema,
            "dependencies": [] if self.injection is None else self.injection.to_json(),
        }


def discover_handlers(root: Path) -> list[HandlerInfo]:
    """Import ``app/domains`` in the core's metadata mode; return the declared handlers."""
    _make_importable(root)
    from fastapi_opinionated.app import App
    from fastapi_opinionated.registry.plugin import PluginRegistry
    from fastapi_opinionated.registry.plugin_store import PluginRegistryStore
    from fastapi_opinionated.routing.registry import RouterRegistry

    PluginRegistry.metadata_scanning = True
    try:
        App._load_enabled_plugins(metadata_only=True)
        RouterRegistry.load(str(DOMAINS_DIR))
    except Exception as exc:
        raise CliError(f"cannot import the app's modules: {describe_failure(exc, root)}") from None
    finally:
        PluginRegistry.metadata_scanning = False
    store = PluginRegistryStore.get(PLUGIN_NAME)
    # forward_events() declarations are subscriptions too (their handler forwards).
    entries = [*store.get(HANDLERS, []), *store.get(FORWARDS, [])]
    return [_info(entry, root) for entry in entries]


def _make_importable(root: Path) -> None:
    # Like `uvicorn main:app` run in the app root: `import app.domains...` must resolve.
    path = str(root)
    if path not in sys.path:
        sys.path.insert(0, path)


def describe_failure(exc: BaseException, root: Path) -> str:
    """``Type: message (file:line)``, the line being the app's own frame nearest the error."""
    where = None
    if isinstance(exc, SyntaxError) and exc.filename:
        where = f"{relative(exc.filename, root)}:{exc.lineno}"
    else:
        for frame in reversed(traceback.extract_tb(exc.__traceback__)):
            if _inside(frame.filename, root):
                where = f"{relative(frame.filename, root)}:{frame.lineno}"
                break
    message = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return f"{message} ({where})" if where else message


def _info(entry: dict[str, Any], root: Path) -> HandlerInfo:
    sub = entry["subscription"]
    declared_at = entry.get("location")  # where forward_events() was called
    if declared_at is None:
        file, line = source_location(sub.handler, root)
    else:
        file, line = relative(declared_at[0], root), declared_at[1]
    schema = entry.get("schema")
    return HandlerInfo(
        event=sub.event,
        handler=sub.name,
        is_async=sub.is_async,
        is_pattern=sub.is_pattern,
        file=file,
        line=line,
        priority=sub.priority,
        retry=sub.retry,
        timeout=sub.timeout,
        broadcast=sub.broadcast,
        schema=None if schema is None else f"{schema.__module__}:{schema.__qualname__}",
        schema_class=None if schema is None else schema.__name__,
        injection=sub.injection,
    )


def source_location(handler: Callable[..., Any], root: Path) -> tuple[str | None, int | None]:
    """Where a handler is defined: for a decorated function, its first decorator's line."""
    target: Any = inspect.unwrap(handler)
    while isinstance(target, functools.partial):
        target = target.func
    code = getattr(target, "__code__", None)
    if code is None:  # an object with __call__
        call = type(target).__dict__.get("__call__")
        code = getattr(call, "__code__", None)
    if code is None:
        return None, None
    return relative(code.co_filename, root), code.co_firstlineno


def relative(filename: str, root: Path) -> str:
    return os.path.relpath(filename, root) if _inside(filename, root) else filename


def _inside(filename: str, root: Path) -> bool:
    try:
        Path(filename).resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return ".venv" not in Path(filename).parts


def configure_core_logs(*, verbose: bool, plain: bool) -> None:
    """Quieter, and optionally colourless, core logs on stderr.

    The core sets the root logger to INFO at import ("Imported module: ..." for every
    module) and its formatter always writes ANSI colours, even with ``NO_COLOR``.
    """
    import fastapi_opinionated.shared.logger  # noqa: F401 - installs the core's handlers

    root_logger = logging.getLogger()
    root_logger.setLevel(logging.INFO if verbose else logging.WARNING)
    if plain:
        for handler in root_logger.handlers:
            if handler.formatter is not None and not isinstance(handler.formatter, _Plain):
                handler.setFormatter(_Plain(handler.formatter))


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class _Plain(logging.Formatter):
    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self._inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return _ANSI.sub("", self._inner.format(record))


# ====================================================================== versions
DISTRIBUTION = "fastapi-opinionated-eventbus"
CORE_DISTRIBUTION = "fastapi-opinionated-core"


def installed_version() -> str:
    """Which release runs, and from where: a project installed from the package index
    under this name may be another, older one (0.1.1) that this one is not."""
    package = Path(__file__).resolve().parents[1]
    return (
        f"{DISTRIBUTION} {_version_of(DISTRIBUTION)} (from {package}), "
        f"{CORE_DISTRIBUTION} {_version_of(CORE_DISTRIBUTION)}"
    )


def _version_of(distribution: str) -> str:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return "(not installed)"


def warn(message: str) -> None:
    sys.stderr.write(f"warning: {message}\n")
