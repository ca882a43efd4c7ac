"""GraphQL as the HTTP surfaces and scripts see it: the current schema and running operations.

:class:`GraphQLService` holds two schema generations built from every loaded script's
registrations -- the *external* one served on ``/graphql*`` and the *engine* one behind
``graphQLRegistry.executeGraphQL`` -- and swaps both in one synchronous step, so an operation
runs entirely on one generation.  Building is the script service's job (it decides whether a
script's fragments were accepted before it swaps the script in); this module checks limits,
executes, and opens subscriptions.  Tartiflette stays behind ``engine.graphql``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing, asynccontextmanager
from contextvars import ContextVar
from typing import Any, Final, Literal

import attrs
import trio

from engine.graphql import (
    BuiltSchema,
    FieldRegistration,
    GraphQLRuntime,
    QueryRejected,
    ResolveError,
    ResolveFn,
    SubscriptionSource,
    build_schema,
    check_query,
    operation_of,
)

__all__ = [
    "GraphQLLimits",
    "GraphQLRequestError",
    "GraphQLService",
    "QueryRejected",
    "SchemaPair",
]


@attrs.frozen
class GraphQLLimits:
    max_query_chars: int = 100_000
    max_depth: int = 15
    max_variables_chars: int = 50_000
    max_subscriptions_per_connection: int = 20
    ping_interval_s: float = 30.0


class GraphQLRequestError(Exception):
    """The operation cannot start; ``errors`` are GraphQL errors to show the client."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(str(error.get("message")) for error in errors))
        self.errors = errors


@attrs.frozen
class SchemaPair:
    """One generation for both audiences, built from the same registrations."""

    external: BuiltSchema
    engine: BuiltSchema


class GraphQLService:
    def __init__(
        self,
        runtime: GraphQLRuntime,
        resolve: ResolveFn,
        source: SubscriptionSource,
        limits: GraphQLLimits | None = None,
    ) -> None:
        self._runtime = runtime
        self._resolve = resolve
        self._source = source
        self.limits = limits or GraphQLLimits()
        self._current: SchemaPair | None = None

    # -- generations ------------------------------------------------------------------

    async def build(self, registrations: Sequence[FieldRegistration]) -> SchemaPair:
        external = await build_schema(
            registrations,
            self._resolve,
            audience="external",
            runtime=self._runtime,
            subscription_source=_announcing(self._source),
        )
        engine = await build_schema(
            registrations,
            self._resolve,
            audience="engine",
            runtime=self._runtime,
            subscription_source=_announcing(self._source),
        )
        return SchemaPair(external, engine)

    def install(self, pair: SchemaPair) -> None:
        self._current = pair

    @property
    def current(self) -> SchemaPair | None:
        return self._current

    def sdl(self) -> str:
        return self._current.external.sdl if self._current is not None else ""

    # -- operations -------------------------------------------------------------------

    def check(self, query: Any, variables: Any = None) -> None:
        """Refuse a query or variables over the limits, with :class:`QueryRejected`."""
        check_query(query, max_chars=self.limits.max_query_chars, max_depth=self.limits.max_depth)
        if variables is not None:
            size = len(json.dumps(variables, ensure_ascii=False))
            if size > self.limits.max_variables_chars:
                raise QueryRejected(
                    f"the variables are longer than {self.limits.max_variables_chars:,} "
                    f"characters as JSON ({size:,})"
                )

    def _schema(self, audience: Literal["external", "engine"]) -> BuiltSchema:
        pair = self._current
        if pair is None:
            raise QueryRejected("GraphQL is not ready yet")
        return pair.external if audience == "external" else pair.engine

    async def execute(
        self,
        query: str,
        variables: dict[str, Any] | None,
        operation_name: str | None,
        *,
        request_id: str,
        audience: Literal["external", "engine"] = "external",
        nested: bool = False,
        depth: int = 0,
    ) -> dict[str, Any]:
        """Run a query or mutation; GraphQL errors come back in ``errors``.

        ``nested`` marks a call made from inside a script invocation (``executeGraphQL``): its
        resolvers then run on workers of their own; ``depth`` counts such calls.
        """
        self.check(query, variables)
        schema = self._schema(audience)
        return await schema.execute(
            query,
            variables,
            operation_name,
            context={"request_id": request_id, "nested": nested, "depth": depth},
        )

    def is_subscription(self, query: str, operation_name: str | None) -> bool:
        try:
            kind = operation_of(query, operation_name)
        except QueryRejected:
            return False
        return kind == "subscription"

    @asynccontextmanager
    async def subscribe(
        self,
        query: str,
        variables: dict[str, Any] | None,
        operation_name: str | None,
        *,
        request_id: str,
    ) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        """Open a subscription on the external schema; leaving the block ends it.

        Entering returns once the subscription listens (its source is open), or raises
        :class:`GraphQLRequestError` when it was refused (validation, an unknown field, a
        customization function that failed).  The results are pumped by a task of this block
        through a small channel: a consumer that stops reading holds the pump, its hub queue
        fills up and the hub drops it, so nothing grows without bound.
        """
        self.check(query, variables)
        if operation_of(query, operation_name) != "subscription":
            raise GraphQLRequestError([{"message": "the operation is not a subscription"}])
        schema = self._schema("external")
        send, receive = trio.open_memory_channel[Any](8)

        async def pump() -> None:
            _ON_OPEN.set(lambda: send.send_nowait(_OPENED))
            results = schema.subscribe(
                query,
                variables,
                operation_name,
                context={"request_id": request_id, "nested": False, "depth": 0},
            )
            async with send, aclosing(results):
                try:
                    async for result in results:
                        await send.send(result)
                except ResolveError as exc:
                    # The source refused to open (a subscription resolver that threw or
                    # returned the wrong shape): a refusal with its reason, like the others.
                    error: dict[str, Any] = {"message": exc.message}
                    if exc.code:
                        error["extensions"] = {"code": exc.code}
                    await send.send({"errors": [error]})

        async def results() -> AsyncIterator[dict[str, Any]]:
            async for item in receive:
                yield item

        # Exceptions are carried out of the nursery by hand, so callers see them as they are
        # rather than wrapped in an exception group.
        refused: GraphQLRequestError | None = None
        raised: BaseException | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump)
            try:
                first = await receive.receive()
            except trio.EndOfChannel:
                first = None
            if first is _OPENED:
                try:
                    yield results()
                except BaseException as exc:  # the caller's block failed: re-raised below
                    raised = exc
            else:
                errors = first.get("errors") if isinstance(first, dict) else None
                refused = GraphQLRequestError(
                    list(errors or [{"message": "the subscription ended before it started"}])
                )
            nursery.cancel_scope.cancel()
        if raised is not None:
            raise raised
        if refused is not None:
            raise refused


# The pump task's way to hear that the core opened its subscription source.
_OPENED: Final = object()
_ON_OPEN: ContextVar[Callable[[], None] | None] = ContextVar("graphql_on_open", default=None)


def _announcing(source: SubscriptionSource) -> SubscriptionSource:
    """``source``, telling the subscribing pump (through ``_ON_OPEN``) when it has opened."""

    @asynccontextmanager
    async def opened(field: str, arguments: dict[str, Any] | None) -> AsyncIterator[Any]:
        async with source(field, arguments) as payloads:
            notify = _ON_OPEN.get()
            if notify is not None:
                notify()
            yield payloads

    return opened
