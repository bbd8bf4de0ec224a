"""The payload schema of each event in the catalog: JSON Schema draft 07, as AsyncAPI 3.0's
Schema Object is.

* A typed event's payload is its model, as Pydantic describes it: the one argument its
  handlers receive.
* An untyped event's payload is what ``emit`` passes after the name: a JSON array of the
  positional arguments, each item described by the handler's annotated parameter and
  titled with its name (keyword-only parameters go under ``x-eventbus-keyword-arguments``).
  A handler without any annotation says nothing, and an event none of whose handlers says
  anything has the empty schema ``{}``: never a guess. Handlers that say different things
  are all required (``allOf``), since each receives the same arguments. A pattern's
  handlers describe the pattern, not every name it matches.

Model definitions are shared (``ref_template`` decides where they live): the AsyncAPI
document puts them under ``components/schemas``; the page gives each event its own
``$defs``.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter

if TYPE_CHECKING:
    from collections.abc import Callable

    from .catalog import EventEntry

__all__ = ["JsonSchema", "describe_payloads", "self_contained"]

JsonSchema = dict[str, Any]
_MODE = "validation"  # what handlers accept
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


@dataclass(frozen=True, slots=True)
class _Parameter:
    name: str
    annotation: Any
    """The resolved annotation; inspect.Parameter.empty when there is none."""
    unresolved: str | None
    """The annotation's text when it could not be resolved (a forward reference)."""
    default: Any
    """inspect.Parameter.empty when the parameter is required."""

    @property
    def required(self) -> bool:
        return self.default is inspect.Parameter.empty


@dataclass(frozen=True, slots=True)
class _Arguments:
    """A handler's parameters, as emit's arguments fill them."""

    positional: list[_Parameter]
    rest: _Parameter | None
    """``*args``, if the handler takes any number of positional arguments."""
    keyword: list[_Parameter]


def _arguments(handler: Callable[..., Any]) -> _Arguments | None:
    """The handler's parameters; None when none is annotated (it says nothing)."""
    try:
        signature = inspect.signature(handler, eval_str=True)
        unresolved = False
    except (NameError, SyntaxError, TypeError, ValueError, AttributeError):
        try:
            signature = inspect.signature(handler)  # annotations stay text
        except (TypeError, ValueError):
            return None
        unresolved = True
    params: list[_Parameter] = []
    for param in signature.parameters.values():
        annotation: Any = param.annotation
        text: str | None = None
        if unresolved and isinstance(annotation, str):
            annotation, text = inspect.Parameter.empty, annotation
        params.append(_Parameter(param.name, annotation, text, param.default))
    if all(p.annotation is inspect.Parameter.empty and p.unresolved is None for p in params):
        return None
    kinds = {param.name: param.kind for param in signature.parameters.values()}
    return _Arguments(
        positional=[p for p in params if kinds[p.name] in _POSITIONAL],
        rest=next((p for p in params if kinds[p.name] is inspect.Parameter.VAR_POSITIONAL), None),
        keyword=[p for p in params if kinds[p.name] is inspect.Parameter.KEYWORD_ONLY],
    )


def _adapter(annotation: Any) -> TypeAdapter[Any] | None:
    """A TypeAdapter that can describe ``annotation`` in JSON Schema, or None."""
    if annotation is inspect.Parameter.empty:
        return None
    try:
        adapter: TypeAdapter[Any] = TypeAdapter(annotation)
        adapter.json_schema()  # some types validate but have no JSON Schema
    except Exception:
        return None
    return adapter


class _Plan:
    """Collects the TypeAdapters of every event, for one shared generation of schemas."""

    def __init__(self) -> None:
        self.inputs: list[tuple[Any, Any, TypeAdapter[Any]]] = []

    def add(self, key: Any, annotation: Any) -> bool:
        adapter = _adapter(annotation)
        if adapter is not None:
            self.inputs.append((key, _MODE, adapter))
        return adapter is not None


def describe_payloads(
    events: Sequence[EventEntry], ref_template: str
) -> tuple[dict[str, JsonSchema], dict[str, JsonSchema]]:
    """Each event's payload schema by name, and the model definitions they refer to."""
    plan = _Plan()
    handler_arguments: dict[tuple[str, int], _Arguments] = {}
    for event in events:
        if event.schema is not None:
            plan.add((event.name,), event.schema)
            continue
        for index, handler in enumerate(event.handlers):
            arguments = _arguments(handler.subscription.handler)
            if arguments is None:
                continue
            handler_arguments[(event.name, index)] = arguments
            for param in (*arguments.positional, *arguments.keyword, arguments.rest):
                if param is not None:
                    plan.add((event.name, index, param.name), param.annotation)
    generated, definitions = TypeAdapter.json_schemas(plan.inputs, ref_template=ref_template)
    schemas = {key: _draft07(schema) for (key, _), schema in generated.items()}
    payloads: dict[str, JsonSchema] = {}
    for event in events:
        if event.schema is not None:
            payloads[event.name] = schemas[(event.name,)]
            continue
        described = [
            _arguments_schema(arguments, _lookup(schemas, key))
            for key, arguments in handler_arguments.items()
            if key[0] == event.name
        ]
        payloads[event.name] = _all_of(described)
    defs = {name: _draft07(schema) for name, schema in definitions.get("$defs", {}).items()}
    return payloads, defs


def _lookup(
    schemas: dict[Any, JsonSchema], handler_key: tuple[str, int]
) -> Callable[[str], JsonSchema | None]:
    """The generated schema of one handler's parameter, by the parameter's name."""
    return lambda name: schemas.get((*handler_key, name))


def _arguments_schema(
    arguments: _Arguments, schema_of: Callable[[str], JsonSchema | None]
) -> JsonSchema:
    def item(param: _Parameter) -> JsonSchema:
        described: JsonSchema = {"title": param.name}
        schema = schema_of(param.name)
        if schema is None:
            if param.unresolved is not None:
                described["description"] = (
                    f"annotated {param.unresolved!r}, which does not resolve at run time"
                )
            elif (text := _annotation_text(param.annotation)) is not None:
                described["description"] = f"annotated {text}, which has no JSON Schema"
        elif "$ref" in schema:  # draft 07 ignores the siblings of a $ref
            described["allOf"] = [schema]
        else:
            described = {**schema, **described}
        if not param.required and _is_json(param.default):
            described["default"] = param.default
        return described

    described: JsonSchema = {"type": "array"}
    if arguments.positional:
        described["items"] = [item(param) for param in arguments.positional]
    required = sum(1 for param in arguments.positional if param.required)
    if required:
        described["minItems"] = required
    if arguments.rest is None:
        described["maxItems"] = len(arguments.positional)
    elif (rest := schema_of(arguments.rest.name)) is not None:
        key = "additionalItems" if arguments.positional else "items"
        described[key] = rest
    if arguments.keyword:
        described["x-eventbus-keyword-arguments"] = {
            "type": "object",
            "properties": {param.name: item(param) for param in arguments.keyword},
            "required": [param.name for param in arguments.keyword if param.required],
        }
    return described


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def _annotation_text(annotation: Any) -> str | None:
    if annotation is inspect.Parameter.empty:
        return None
    return getattr(annotation, "__qualname__", None) or repr(annotation)


def _all_of(schemas: list[JsonSchema]) -> JsonSchema:
    unique = list({json.dumps(s, sort_keys=True): s for s in schemas}.values())
    if not unique:
        return {}
    return unique[0] if len(unique) == 1 else {"allOf": unique}


def _draft07(schema: Any) -> Any:
    """Pydantic writes draft 2020-12; tuples (``prefixItems``) become draft 07's
    ``items`` arrays. Nothing else it writes differs in meaning."""
    if isinstance(schema, list):
        return [_draft07(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    converted = {key: _draft07(value) for key, value in schema.items()}
    if "prefixItems" in converted:
        rest = converted.pop("items", None)
        converted["items"] = converted.pop("prefixItems")
        if rest is not None:
            converted["additionalItems"] = rest
    return converted


def self_contained(payload: JsonSchema, definitions: dict[str, JsonSchema]) -> JsonSchema:
    """``payload`` with the definitions it uses as ``$defs`` (refs ``#/$defs/...``)."""
    used = _referenced(payload, definitions)
    return (
        {**payload, "$defs": {name: definitions[name] for name in sorted(used)}}
        if used
        else payload
    )


def _referenced(schema: Any, definitions: dict[str, JsonSchema]) -> set[str]:
    found: set[str] = set()
    pending = [schema]
    while pending:
        node = pending.pop()
        if isinstance(node, list):
            pending.extend(node)
        elif isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                name = ref.removeprefix("#/$defs/")
                if name in definitions and name not in found:
                    found.add(name)
                    pending.append(definitions[name])
            pending.extend(node.values())
    return found
