"""Everything that touches Tartiflette's engine: building one, and running queries on it.

Tartiflette keeps a process-wide registry of schemas keyed by name (``SchemaRegistry._schemas``,
a private dict) and refuses to register a resolver twice under one name.  So every build gets
a name never used before, and its registry entry is removed as soon as the engine is cooked --
after a failure too.  A cooked engine never looks at the registry again, so a dropped engine is
collected and rebuilding forever does not grow memory.

A build runs synchronously: cooking an engine is declared ``async`` but awaits nothing that
suspends, so the coroutine is driven to completion by hand.  That lets builds run in a worker
thread, away from the event loop, and keeps them independent of any asyncio loop.
"""

from __future__ import annotations

import datetime
import itertools
import re
from collections.abc import Callable, Coroutine, Mapping
from types import MappingProxyType
from typing import Any

import structlog
from tartiflette import Resolver, Scalar, Subscription, TartifletteError, create_engine
from tartiflette.constants import UNDEFINED_VALUE
from tartiflette.language import ast
from tartiflette.resolver.default import default_field_resolver, default_type_resolver
from tartiflette.schema.registry import SchemaRegistry
from trio_asyncio import trio_as_aio

from engine.graphql._merge import PLACEHOLDER_FIELD, PLACEHOLDER_VALUE, MergedSchema
from engine.graphql._model import (
    ROOT_TYPES,
    FieldRegistration,
    ResolveError,
    ResolveFn,
    ResolveInfo,
)
from engine.graphql._sdl import FieldShape, Kind
from engine.graphql._shapes import ShapeError, shape_value

log = structlog.get_logger("aiwebengine.graphql")

Engine = Any  # tartiflette.Engine, untyped
_EMPTY: Mapping[str, Any] = MappingProxyType({})
_ISO_SCALARS: dict[str, Callable[[str], object]] = {
    "Date": datetime.date.fromisoformat,
    "DateTime": datetime.datetime.fromisoformat,
    "Time": datetime.time.fromisoformat,
}
_schema_names = itertools.count(1)


class BuildFailed(Exception):
    """Tartiflette refused the merged SDL; the message is one line for a FragmentError."""


class ExecContext:
    """The context object Tartiflette hands to resolvers for one execution."""

    __slots__ = ("probe", "user")

    def __init__(
        self, user: Mapping[str, Any] | None, probe: list[tuple[str, dict[str, Any]]] | None = None
    ) -> None:
        self.user = _EMPTY if user is None else user
        # Set while probing a subscription: its source records (field, arguments) and stops.
        self.probe = probe


class Event:
    """One subscription payload, passed to Tartiflette as the root value of one execution."""

    __slots__ = ("payload",)

    def __init__(self, payload: Any) -> None:
        self.payload = payload


def registry_size() -> int:
    """How many schemas Tartiflette's registry holds (for leak tests)."""
    return len(SchemaRegistry._schemas)


def build_engine(
    merged: MergedSchema, resolve: ResolveFn, loop: Callable[[], Any], *, explain: bool = True
) -> Engine:
    """Cook an engine for ``merged``; raises :class:`BuildFailed` with Tartiflette's reason.

    ``explain=False`` skips the second build that makes the reason precise, for callers that
    only need to know whether it builds.
    """
    try:
        return _cook(merged, resolve, loop, with_resolvers=True)
    except BuildFailed:
        if explain:
            # Resolvers are bound before Tartiflette validates the SDL, and binding one to a
            # field of an unknown type fails with "Unknown Field Definition Query.x".  Cooking
            # the SDL alone gives the validation message, which names the actual mistake.
            _cook(merged, resolve, loop, with_resolvers=False)
        raise


def _cook(
    merged: MergedSchema, resolve: ResolveFn, loop: Callable[[], Any], *, with_resolvers: bool
) -> Engine:
    name = f"aiwebengine-graphql-{next(_schema_names)}"
    kinds = merged.kinds
    try:
        for operation, registrations in merged.roots.items():
            root = ROOT_TYPES[operation]
            for reg in registrations if with_resolvers else ():
                path = f"{root}.{reg.name}"
                shape = merged.shapes[(root, reg.name)]
                if operation == "subscription":
                    Subscription(path, schema_name=name)(_subscription_source)
                    Resolver(path, schema_name=name)(_event_resolver(shape, kinds))
                else:
                    Resolver(path, schema_name=name)(
                        _root_resolver(reg, shape, kinds, resolve, loop)
                    )
        if merged.has_placeholder:
            Resolver(f"Query.{PLACEHOLDER_FIELD}", schema_name=name)(_placeholder)
        for scalar in merged.custom_scalars:
            Scalar(scalar, schema_name=name)(_JsonScalar())
        # Tartiflette's own Date/DateTime/Time want Python datetimes; scripts deal in text.
        for scalar, parse in _ISO_SCALARS.items():
            Scalar(scalar, schema_name=name)(_IsoScalar(parse))
        sdl = merged.sdl + "".join(f"\nscalar {scalar}" for scalar in _ISO_SCALARS)
        return _run_to_completion(
            create_engine(
                sdl,
                schema_name=name,
                custom_default_resolver=_default_resolver(merged.shapes, kinds),
                custom_default_type_resolver=_type_resolver,
                # Only root fields call scripts; everything below them is a lookup in the
                # value a script returned.  Awaiting those inline instead of gathering them in
                # asyncio tasks is several times faster on wide selections, and root fields,
                # registered with their own resolvers above, still run concurrently.
                coerce_parent_concurrently=False,
                coerce_list_concurrently=False,
            )
        )
    except Exception as error:
        raise BuildFailed(_build_message(error, name)) from error
    finally:
        SchemaRegistry._schemas.pop(name, None)


def _build_message(error: Exception, schema_name: str) -> str:
    # Schema validation lists its findings as "\n0: ...\n1: ..."; make that one line.
    text = str(error).replace(f"< {schema_name} >", "the schema")
    findings = [" ".join(part.split()) for part in re.split(r"\n\d+: ", text)]
    return "; ".join(finding for finding in findings if finding) or type(error).__name__


def _run_to_completion(coroutine: Coroutine[Any, Any, Engine]) -> Engine:
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise RuntimeError("Tartiflette suspended while cooking a schema")


async def execute(
    engine: Engine,
    query: str,
    variables: dict[str, Any] | None,
    operation_name: str | None,
    context: ExecContext,
) -> dict[str, Any]:
    """Run one query or mutation (on the asyncio side)."""
    try:
        result: dict[str, Any] = await engine.execute(
            query, operation_name=operation_name, context=context, variables=variables
        )
    except Exception as error:  # parsing happens outside Tartiflette's own error handling
        return error_response(_failure(error))
    return result


async def run_subscription(
    engine: Engine,
    query: str,
    variables: dict[str, Any] | None,
    operation_name: str | None,
    context: ExecContext,
    event: Event | None = None,
) -> list[dict[str, Any]]:
    """Run a subscription to its end (on the asyncio side) and return every result.

    With ``context.probe`` set, the source stops at once after recording its field and
    arguments, so the results are only errors (invalid query); with ``event`` the source yields
    that one payload, so there is exactly one result.  Either way Tartiflette's generators are
    exhausted here and none is left for the garbage collector to close later.
    """
    results: list[dict[str, Any]] = []
    stream = engine.subscribe(
        query,
        operation_name=operation_name,
        context=context,
        variables=variables,
        initial_value=event,
    )
    try:
        async for result in stream:
            results.append(result)
    except Exception as error:  # Tartiflette raises plain exceptions for some bad requests
        results.append(error_response(_failure(error)))
    finally:
        await stream.aclose()
    return results


def error_response(message: str) -> dict[str, Any]:
    return {"data": None, "errors": [{"message": message, "path": None, "locations": []}]}


def _failure(error: Exception) -> str:
    if isinstance(error, RecursionError):
        return "the query is nested too deeply"
    return str(error) or type(error).__name__


# -- resolvers ---------------------------------------------------------------------------------


def _root_resolver(
    reg: FieldRegistration,
    shape: FieldShape,
    kinds: Mapping[str, Kind],
    resolve: ResolveFn,
    loop: Callable[[], Any],
) -> Callable[..., Coroutine[Any, Any, Any]]:
    async def resolver(parent: Any, args: dict[str, Any], ctx: Any, info: Any) -> Any:
        call = ResolveInfo(
            field=reg.name,
            operation=reg.operation,
            path=tuple(info.path.as_list()),
            context=ctx.user if isinstance(ctx, ExecContext) else _EMPTY,
        )
        try:
            value = await trio_as_aio(resolve, loop=loop())(reg, dict(args), call)
        except ResolveError as error:
            extensions = {"code": error.code} if error.code else None
            raise TartifletteError(error.message, extensions=extensions) from error
        except Exception as error:
            log.error(
                "graphql resolver failed",
                script_uri=reg.script_uri,
                field=reg.name,
                exc_info=error,
            )
            raise TartifletteError(f"internal error while resolving '{reg.name}'") from error
        return _shaped(value, shape, kinds)

    return resolver


def _event_resolver(
    shape: FieldShape, kinds: Mapping[str, Kind]
) -> Callable[..., Coroutine[Any, Any, Any]]:
    async def resolver(parent: Any, args: dict[str, Any], ctx: Any, info: Any) -> Any:
        if not isinstance(parent, Event):
            raise TartifletteError("subscription fields are delivered through a subscription")
        return _shaped(parent.payload, shape, kinds)

    return resolver


async def _subscription_source(parent: Any, args: dict[str, Any], ctx: Any, info: Any) -> Any:
    if isinstance(ctx, ExecContext) and ctx.probe is not None:
        ctx.probe.append((info.field_name, dict(args)))
        return
    yield parent


async def _placeholder(parent: Any, args: dict[str, Any], ctx: Any, info: Any) -> str:
    return PLACEHOLDER_VALUE


def _default_resolver(
    shapes: Mapping[tuple[str, str], FieldShape], kinds: Mapping[str, Kind]
) -> Callable[..., Coroutine[Any, Any, Any]]:
    async def resolver(parent: Any, args: dict[str, Any], ctx: Any, info: Any) -> Any:
        if not isinstance(parent, Mapping):  # introspection objects
            return await default_field_resolver(parent, args, ctx, info)
        # Key lookup only: Tartiflette's default tries attributes first, so a field called
        # "items" or "keys" would return a dict method.
        value = parent.get(info.field_name)
        shape = shapes.get((info.parent_type.name, info.field_name))
        return value if shape is None else _shaped(value, shape, kinds)

    return resolver


def _type_resolver(result: Any, ctx: Any, info: Any, abstract_type: Any) -> str:
    if isinstance(result, Mapping):
        name = result.get("__typename", result.get("_typename"))
        if not isinstance(name, str):
            raise TypeError(f"a value of the abstract type {abstract_type.name} needs a __typename")
        return name
    return str(default_type_resolver(result, ctx, info, abstract_type))


def _shaped(value: Any, shape: FieldShape, kinds: Mapping[str, Kind]) -> Any:
    try:
        return shape_value(value, shape, kinds)
    except ShapeError as error:
        raise TartifletteError(str(error)) from None


# -- scalars -----------------------------------------------------------------------------------


class _JsonScalar:
    """A script's custom scalar: any JSON value, passed through both ways."""

    def coerce_output(self, value: Any) -> Any:
        return value

    def coerce_input(self, value: Any) -> Any:
        return value

    def parse_literal(self, node: Any) -> Any:
        try:
            return _literal(node)
        except ValueError:
            return UNDEFINED_VALUE


def _literal(node: Any) -> Any:
    if isinstance(node, ast.ObjectValueNode):
        return {field.name.value: _literal(field.value) for field in node.fields}
    if isinstance(node, ast.ListValueNode):
        return [_literal(value) for value in node.values]
    if isinstance(node, ast.NullValueNode):
        return None
    if isinstance(node, ast.IntValueNode):
        return int(node.value)
    if isinstance(node, ast.FloatValueNode):
        return float(node.value)
    if isinstance(node, ast.StringValueNode | ast.BooleanValueNode | ast.EnumValueNode):
        return node.value
    raise ValueError("variables inside a literal")


class _IsoScalar:
    """Date, DateTime or Time as ISO 8601 text, checked on input, never converted."""

    def __init__(self, parse: Callable[[str], object]) -> None:
        self._parse = parse

    def coerce_output(self, value: Any) -> str:
        if isinstance(value, str):
            return value
        if isinstance(value, datetime.date | datetime.time):
            return value.isoformat()
        raise TypeError(f"expected ISO 8601 text, got < {value!r} >")

    def coerce_input(self, value: Any) -> str:
        if not isinstance(value, str):
            raise TypeError(f"expected ISO 8601 text, got < {value!r} >")
        self._parse(value)
        return value

    def parse_literal(self, node: Any) -> Any:
        if not isinstance(node, ast.StringValueNode):
            return UNDEFINED_VALUE
        try:
            self._parse(node.value)
        except ValueError:
            return UNDEFINED_VALUE
        return node.value
