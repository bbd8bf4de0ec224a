"""FastAPI's ``Depends`` in handlers: each handler's signature analysed once, at subscribe.

``analyse_handler`` turns a handler's signature into an :class:`Injection` (None for the
many handlers that use no dependency: they stay on the fast path) made of
:class:`Dependency` trees. Everything that cannot work for an event is refused here, at
import or subscribe time, naming the handler and the parameter: a dependency that needs the
HTTP request (``Request``, ``WebSocket``, ``Response``, ``BackgroundTasks``,
``SecurityScopes``, ``Query()``...), a parameter nothing can fill, an annotation that does
not resolve, a cycle. Resolving the trees for each run is :mod:`.solving`'s job.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Final, get_args, get_origin

from fastapi import BackgroundTasks, params
from fastapi.requests import HTTPConnection
from fastapi.responses import Response
from fastapi.security import SecurityScopes
from pydantic.fields import FieldInfo

from .envelope import EventEnvelope

__all__ = ["Dependency", "Injection", "analyse_dependency", "analyse_handler", "describe_call"]

# What a call is, decided once: how solving produces its value.
ASYNC: Final = 0  # async def: awaited on the loop
SYNC: Final = 1  # def, or a class: run in a worker thread
ASYNC_GEN: Final = 2  # async generator: value at its yield, teardown after the handler
SYNC_GEN: Final = 3  # generator: the same, each step in a worker thread

_KIND_NAMES = {ASYNC: "async", SYNC: "sync", ASYNC_GEN: "async yield", SYNC_GEN: "yield"}

# Types FastAPI fills from the HTTP request: an event has none.
# (FastAPI fills Starlette's BackgroundTasks too, the base of its own.)
_REQUEST_TYPES: tuple[type, ...] = (
    HTTPConnection,  # Request, WebSocket
    Response,
    BackgroundTasks.__mro__[1],
    SecurityScopes,
)

# The marker of an injected EventEnvelope among a call's parameters.
ENVELOPE: Final = None


@dataclass(frozen=True, slots=True, eq=False)
class Dependency:
    """One ``Depends(call)`` with its own parameters, analysed."""

    call: Callable[..., Any]
    name: str
    """``module:qualname``, for logs and the CLI."""
    kind: int
    use_cache: bool
    params: tuple[tuple[str, Dependency | None], ...]
    """Keyword arguments to call it with: a sub-dependency, or ``ENVELOPE`` (the event)."""

    def to_json(self, parameter: str) -> dict[str, Any]:
        return {
            "parameter": parameter,
            "dependency": self.name,
            "kind": _KIND_NAMES[self.kind],
            "use_cache": self.use_cache,
            "dependencies": _params_json(self.params),
        }


@dataclass(frozen=True, slots=True, eq=False)
class Injection:
    """What a handler gets injected, besides the emitted arguments."""

    params: tuple[tuple[str, Dependency | None], ...]
    names: frozenset[str]
    """The injected parameters: an emitted keyword argument may not use these names."""
    positional: tuple[str, ...] | None
    """When an injected parameter comes before an emitted one, the names emitted
    positional arguments are passed under (else None: they are passed positionally)."""
    leading: int
    """With ``positional``: how many positional-only parameters still take the first
    emitted arguments positionally."""
    signature: inspect.Signature
    """The handler's signature without its injected parameters: what an emit must fill."""

    def to_json(self) -> list[dict[str, Any]]:
        return _params_json(self.params)

    def summary(self) -> list[str]:
        """``repo=Depends(module:qualname)`` (or ``event: EventEnvelope``) per injected
        parameter, for the CLI's table."""
        return [
            f"{name}: EventEnvelope" if dep is None else f"{name}=Depends({dep.name})"
            for name, dep in self.params
        ]


def _params_json(items: tuple[tuple[str, Dependency | None], ...]) -> list[dict[str, Any]]:
    return [
        {"parameter": name, "dependency": "EventEnvelope", "kind": "event"}
        if dep is None
        else dep.to_json(name)
        for name, dep in items
    ]


def describe_call(call: object) -> str:
    """``module:qualname`` of a dependency (a function, a class or a callable object)."""
    target = call if inspect.isroutine(call) or isinstance(call, type) else type(call)
    module = getattr(target, "__module__", None) or "?"
    qualname = getattr(target, "__qualname__", None) or type(target).__qualname__
    return f"{module}:{qualname}"


# ====================================================================== handlers
def analyse_handler(handler: Callable[..., Any], name: str) -> Injection | None:
    """The handler's injected parameters, or None when it has none (the common case).

    :raises TypeError: a dependency that cannot be resolved for an event, naming the handler
        and the parameter.
    """
    if not _may_inject(handler):
        return None
    try:
        signature, globalns = _signature(handler)
    except (TypeError, ValueError):
        return None  # not introspectable: it takes the emitted arguments, as before
    injected: list[tuple[str, Dependency | None]] = []
    kept: list[inspect.Parameter] = []
    for param in signature.parameters.values():
        where = f"handler {name}, parameter {param.name!r}"
        annotation = _annotation(param, globalns, where)
        injects, target = _injected(param, annotation, where, (handler,))
        if not injects:
            kept.append(param)
            continue
        if param.kind not in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
            raise TypeError(
                f"{where}: an injected parameter must be passable by keyword, not "
                f"{param.kind.description}"
            )
        injected.append((param.name, target))
    if not injected:
        return None
    return Injection(
        params=tuple(injected),
        names=frozenset(n for n, _ in injected),
        positional=_positional_names(signature, {n for n, _ in injected}, name),
        leading=sum(p.kind is p.POSITIONAL_ONLY for p in kept),
        signature=signature.replace(parameters=kept),
    )


def _may_inject(handler: Callable[..., Any]) -> bool:
    """Cheap pre-check: a plain function with no annotations and no ``Depends`` default has
    nothing to inject (no signature is built for it)."""
    function = inspect.unwrap(handler)
    if not inspect.isfunction(function) or function is not handler:
        return True  # decorated, a method, a class or a callable object: look closer
    if function.__annotations__:
        return True
    defaults = [*(function.__defaults__ or ()), *(function.__kwdefaults__ or {}).values()]
    return any(isinstance(default, params.Depends) for default in defaults)


def _positional_names(
    signature: inspect.Signature, injected: set[str], handler: str
) -> tuple[str, ...] | None:
    """Emitted positional arguments are passed by name when an injected parameter stands
    before an emitted one (``async def h(repo: Annotated[Repo, Depends(...)], user)``)."""
    seen_injected = False
    needs_names = False
    for param in signature.parameters.values():
        if param.name in injected:
            seen_injected = True
        elif seen_injected and param.kind in (param.POSITIONAL_OR_KEYWORD, param.VAR_POSITIONAL):
            needs_names = True
    if not needs_names:
        return None
    if any(p.kind is p.VAR_POSITIONAL for p in signature.parameters.values()):
        raise TypeError(
            f"handler {handler}: its injected parameters come before *args, which could "
            "then not receive the emitted arguments; make them keyword-only (after *args)"
        )
    return tuple(
        p.name
        for p in signature.parameters.values()
        if p.name not in injected and p.kind is p.POSITIONAL_OR_KEYWORD
    )


# ====================================================================== dependencies
def _injected(
    param: inspect.Parameter, annotation: Any, where: str, path: tuple[object, ...]
) -> tuple[bool, Dependency | None]:
    """(whether the parameter is injected, and its Dependency or ENVELOPE)."""
    base, depends, _ = _split(param, annotation, where)
    if depends is None:
        return _is_envelope(base), ENVELOPE
    call = depends.dependency
    if call is None:  # Depends() takes the annotated class itself, as in FastAPI
        if not (isinstance(base, type) and callable(base)):
            raise TypeError(
                f"{where}: Depends() without a dependency needs a class as the annotation, "
                f"got {base!r}"
            )
        call = base
    return True, analyse_dependency(call, depends.use_cache, where, path)


def analyse_dependency(
    call: Callable[..., Any], use_cache: bool, where: str, path: tuple[object, ...] = ()
) -> Dependency:
    """Analyse ``call`` and its sub-dependencies; ``where`` says whose parameter it fills.

    :raises TypeError: it cannot be resolved for an event (the message says why).
    """
    name = describe_call(call)
    where = f"{where} -> dependency {name}"
    if not callable(call):
        raise TypeError(f"{where}: a dependency must be callable, got {call!r}")
    if isinstance(call, type) and issubclass(call, _REQUEST_TYPES):
        raise TypeError(f"{where}: {_no_request(call)}")
    if any(seen is call for seen in path):
        raise TypeError(f"{where}: a dependency cycle ({name} depends on itself)")
    try:
        signature, globalns = _signature(call)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{where}: its signature cannot be read ({exc})") from None
    sub_params: list[tuple[str, Dependency | None]] = []
    for param in signature.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue  # they receive nothing, as in FastAPI
        param_where = f"{where}, parameter {param.name!r}"
        annotation = _annotation(param, globalns, param_where)
        base, depends, request_field = _split(param, annotation, param_where)
        if request_field is not None:
            raise TypeError(
                f"{param_where}: {type(request_field).__name__}() reads the HTTP request, and "
                "there is no request behind an event"
            )
        if depends is None and isinstance(base, type) and issubclass(base, _REQUEST_TYPES):
            raise TypeError(f"{param_where}: {_no_request(base)}")
        injects, target = _injected(param, annotation, param_where, (*path, call))
        if not injects:
            if param.default is not param.empty:
                continue  # keeps its default
            unresolved = (
                f" (its annotation {annotation!r} does not resolve in its module)"
                if isinstance(annotation, str)
                else ""
            )
            raise TypeError(
                f"{param_where}: nothing can fill it (an event has no query, path or body)"
                f"{unresolved}: give it a default, make it Depends(...), or annotate it "
                "EventEnvelope to receive the event"
            )
        if param.kind is param.POSITIONAL_ONLY:
            raise TypeError(f"{param_where}: a positional-only parameter cannot be injected")
        sub_params.append((param.name, target))
    return Dependency(call, name, _kind_of(call), use_cache, tuple(sub_params))


def _no_request(kind: type) -> str:
    return (
        f"it needs a {kind.__name__}, which FastAPI takes from the HTTP request: there is no "
        "request behind an event (pass what the handler needs in the event, or derive it "
        "from the EventEnvelope)"
    )


def _split(
    param: inspect.Parameter, annotation: Any, where: str
) -> tuple[Any, params.Depends | None, FieldInfo | None]:
    """(the type, its ``Depends`` if any, a ``Query()``-like request field if any)."""
    base = annotation
    depends: params.Depends | None = None
    field: FieldInfo | None = None
    if get_origin(annotation) is Annotated:
        base, *extras = get_args(annotation)
        for extra in extras:
            if isinstance(extra, params.Depends):
                depends = extra
            elif isinstance(extra, FieldInfo):
                field = extra
    default = param.default
    if isinstance(default, params.Depends):
        if depends is not None:
            raise TypeError(
                f"{where}: Depends both in Annotated and as the default; use one of them"
            )
        depends = default
    elif isinstance(default, FieldInfo):
        field = default
    return base, depends, field


def _is_envelope(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, EventEnvelope)


def _kind_of(call: Callable[..., Any]) -> int:
    dunder_call = getattr(call, "__call__", None)  # noqa: B004 - objects with __call__
    if inspect.isasyncgenfunction(call) or inspect.isasyncgenfunction(dunder_call):
        return ASYNC_GEN
    if inspect.isgeneratorfunction(call) or inspect.isgeneratorfunction(dunder_call):
        return SYNC_GEN
    if isinstance(call, type):
        return SYNC
    if inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(inspect.unwrap(call)):
        return ASYNC
    if not inspect.isroutine(call) and inspect.iscoroutinefunction(dunder_call):
        return ASYNC
    return SYNC


# ====================================================================== annotations
Globals = dict[str, Any] | None


def _signature(call: Callable[..., Any]) -> tuple[inspect.Signature, Globals]:
    """The signature with annotations resolved (``from __future__ import annotations``
    makes them strings). When one does not resolve (a name imported under TYPE_CHECKING,
    say), the plain signature and the globals to resolve the others one by one."""
    try:
        return inspect.signature(call, eval_str=True), None
    except (NameError, AttributeError, SyntaxError, TypeError):
        signature = inspect.signature(call)  # raises again when not an annotation's fault
    return signature, _module_globals(call)


def _annotation(param: inspect.Parameter, globalns: Globals, where: str) -> Any:
    annotation = param.annotation
    if globalns is None or not isinstance(annotation, str):
        return annotation
    try:
        # What inspect.signature(eval_str=True) does, for this one annotation: it is the
        # app's own source text, evaluated in its own module.
        return eval(annotation, globalns, None)
    except Exception as exc:
        if any(word in annotation for word in ("Depends", "Security", "EventEnvelope")):
            raise TypeError(
                f"{where}: its annotation {annotation!r} cannot be resolved "
                f"({type(exc).__name__}: {exc}); import what it names at module level"
            ) from None
        return annotation  # an emitted argument's type: not ours to resolve


def _module_globals(call: Callable[..., Any]) -> dict[str, Any]:
    target: Any = call
    if isinstance(call, type):
        module = sys.modules.get(call.__module__)
        return vars(module) if module is not None else {}
    if not inspect.isroutine(call):
        target = getattr(type(call), "__call__", call)  # noqa: B004 - a callable object
    found = getattr(inspect.unwrap(target), "__globals__", None)
    return found if isinstance(found, dict) else {}
