"""GraphQL in the script service: the schema follows the loaded scripts, resolvers run in the
sandbox, subscribers listen on the streams hub.

:class:`GraphQLSupport` is a part of :class:`engine.scripts.ScriptService`, kept in its own
module for size: it reads the service's loaded scripts and runs invocations through it.  Every
schema change happens under ``_graphql_lock`` and rebuilds from the loaded scripts, so two
deploys at once cannot lose each other's fields; the new schema is swapped in together with
the script version that caused it.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio

from engine.errors import EngineError, ScriptFailed
from engine.graphql import FieldRegistration, QueryRejected, ResolveError, ResolveInfo
from engine.graphql_api import subscription_path
from engine.graphql_service import GraphQLService, SchemaPair
from engine.http_contract import anonymous_auth
from engine.invocation_host import MAX_DISPATCH_DEPTH
from engine.logs import now_ms
from engine.stream_api import StreamCustomizationFailed, customization_metadata
from engine.streams import StreamHub

if TYPE_CHECKING:
    from engine.scripts import LoadedScript

# What a subscription resolver may return instead of an object of metadata.
_NO_METADATA = frozenset({"string", "undefined", "null"})


class GraphQLSupport:
    # Provided by ScriptService.
    graphql: GraphQLService | None
    hub: StreamHub
    _graphql_lock: trio.Lock
    _loaded: dict[str, LoadedScript]
    _ids: itertools.count[int]

    if TYPE_CHECKING:

        async def _invoke_value(
            self,
            script_uri: str,
            handler: str,
            kind: str,
            context: dict[str, Any],
            request_id: str,
            *,
            route: str,
            nested: bool = False,
            depth: int = 0,
        ) -> dict[str, Any]: ...

    async def attach_graphql(self, service: GraphQLService) -> None:
        """Serve GraphQL through ``service`` from now on, starting with the loaded scripts."""
        self.graphql = service
        async with self._graphql_lock:
            self._graphql_install(await service.build(self._graphql_fields()))

    def _touches_graphql(
        self, previous: LoadedScript | None, fields: tuple[FieldRegistration, ...]
    ) -> bool:
        return self.graphql is not None and bool(fields or (previous and previous.graphql))

    def _graphql_fields(
        self, uri: str | None = None, fields: tuple[FieldRegistration, ...] = ()
    ) -> list[FieldRegistration]:
        """Every loaded script's fields in load order, ``uri``'s replaced by ``fields``."""
        collected: list[FieldRegistration] = []
        for script in self._loaded.values():
            collected.extend(fields if script.uri == uri else script.graphql)
        if uri is not None and uri not in self._loaded:
            collected.extend(fields)
        return collected

    async def _build_graphql(
        self, uri: str, fields: tuple[FieldRegistration, ...]
    ) -> tuple[SchemaPair, str | None]:
        """A schema with ``uri``'s new fields, and why some of them were refused (or None)."""
        assert self.graphql is not None
        pair = await self.graphql.build(self._graphql_fields(uri, fields))
        refused = {
            str(problem): None
            for problem in (*pair.external.rejected, *pair.engine.rejected)
            if problem.script_uri == uri
        }
        return pair, "; ".join(refused) if refused else None

    def _graphql_install(self, pair: SchemaPair) -> None:
        """Swap ``pair`` in; subscribers of a subscription field it no longer serves are ended,
        as stream subscribers are when their stream is removed (the hub would otherwise keep
        them, waiting for messages nobody can send any more)."""
        assert self.graphql is not None
        before = self.graphql.current
        self.graphql.install(pair)
        if before is None:
            return
        served = {f.name for f in pair.external.accepted if f.operation == "subscription"}
        for field in before.external.accepted:
            if field.operation == "subscription" and field.name not in served:
                self.hub.close_path(subscription_path(field.name), "the subscription was removed")

    async def _drop_graphql(self, uri: str, previous: LoadedScript | None) -> None:
        if self.graphql is None or previous is None or not previous.graphql:
            return
        async with self._graphql_lock:
            self._graphql_install(await self.graphql.build(self._graphql_fields()))

    async def _execute_graphql(
        self, query: str, variables: dict[str, Any] | None, depth: int
    ) -> dict[str, Any]:
        """``graphQLRegistry.executeGraphQL``: the engine audience, resolvers on their own
        workers (the caller holds one), nesting bounded like messages."""
        if self.graphql is None:
            return {"errors": [{"message": "GraphQL is not available"}]}
        if depth >= MAX_DISPATCH_DEPTH:
            return {
                "errors": [
                    {"message": f"executeGraphQL may nest at most {MAX_DISPATCH_DEPTH} levels deep"}
                ]
            }
        try:
            return await self.graphql.execute(
                query,
                variables,
                None,
                request_id=f"gql_{now_ms()}_{next(self._ids)}",
                audience="engine",
                nested=True,
                depth=depth + 1,
            )
        except QueryRejected as exc:
            return {"errors": [{"message": str(exc)}]}

    async def resolve_field(
        self, field: FieldRegistration, arguments: dict[str, Any] | None, info: ResolveInfo
    ) -> Any:
        """Run a query or mutation field's resolver (kind ``graphqlQuery``/``graphqlMutation``)."""
        if field.resolver is None:
            raise ResolveError(f"field '{field.name}' has no resolver")
        kind = "graphqlMutation" if field.operation == "mutation" else "graphqlQuery"
        request_id = str(info.context.get("request_id") or f"gql_{now_ms()}_{next(self._ids)}")
        context: dict[str, Any] = {
            "kind": kind,
            "invocationId": request_id,
            "scriptUri": field.script_uri,
            "handlerName": field.resolver,
            "request": {
                "path": "/graphql",
                "method": "POST",
                "query": {},
                "form": {},
                "params": {},
                "files": [],
                "body": None,
                "auth": anonymous_auth(),
            },
            "args": arguments if arguments else None,
            "meta": {"graphql": {"fieldName": field.name, "operation": field.operation}},
        }
        try:
            value = await self._invoke_value(
                field.script_uri,
                field.resolver,
                kind,
                context,
                request_id,
                route="/graphql",
                nested=bool(info.context.get("nested")),
                depth=int(info.context.get("depth") or 0),
            )
        except EngineError as exc:
            raise ResolveError(exc.details or exc.message, code=exc.code) from None
        return value.get("value")

    @asynccontextmanager
    async def subscription_source(
        self, field_name: str, arguments: dict[str, Any] | None
    ) -> AsyncIterator[AsyncIterator[Any]]:
        """The messages of one GraphQL subscriber, from the streams hub.  Its metadata are the
        subscription's arguments as strings, or what the field's resolver returns for them
        (called like a stream customization function, kind ``graphqlSubscription``)."""
        query = {
            str(k): v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))
            for k, v in (arguments or {}).items()
        }
        field = next(
            (
                f
                for script in self._loaded.values()
                for f in script.graphql
                if f.operation == "subscription" and f.name == field_name
            ),
            None,
        )
        metadata: dict[str, str] = dict(query)
        if field is not None and field.resolver is not None:
            request_id = f"gqlsub_{now_ms()}_{next(self._ids)}"
            path = subscription_path(field_name)
            context: dict[str, Any] = {
                "kind": "graphqlSubscription",
                "invocationId": request_id,
                "scriptUri": field.script_uri,
                "handlerName": field.resolver,
                "request": {
                    "path": path,
                    "method": "GET",
                    "query": query,
                    "auth": anonymous_auth(),
                },
                "args": query,
                "meta": {"stream": {"path": path}},
            }
            try:
                value = await self._invoke_value(
                    field.script_uri,
                    field.resolver,
                    "graphqlSubscription",
                    context,
                    request_id,
                    route=path,
                )
            except ScriptFailed as exc:
                raise ResolveError(
                    f"Stream customization function failed: {exc.details or exc.message}"
                ) from None
            except EngineError as exc:
                raise ResolveError(exc.message, code=exc.code) from None
            # v0.9 subscription resolvers were field resolvers returning a greeting ("Subscription
            # initialized") or nothing: no metadata of their own, the arguments stay the metadata.
            if value.get("valueType") not in _NO_METADATA:
                try:
                    metadata = customization_metadata(value)
                except StreamCustomizationFailed as exc:
                    raise ResolveError(exc.message) from None
        with self.hub.subscribe(subscription_path(field_name), metadata) as subscription:

            async def payloads() -> AsyncIterator[Any]:
                async for event in subscription:
                    yield event.data

            yield payloads()
