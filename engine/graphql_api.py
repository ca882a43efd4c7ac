"""``graphQLRegistry`` for scripts: registering fields, broadcasting to subscriptions and
``executeGraphQL``, with the original engine's strings (UPSTREAM_API §2.9, §3).

Registration is checked here and collected by the invocation host, like routes; the schema is
built by the script service when it swaps a version in.  Subscription messages travel through
the streams hub on one internal path per subscription field, so GraphQL subscribers get the
same bounded queues, filters and lag handling as stream subscribers.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, cast

from engine.errors import HostCallError
from engine.graphql import FieldRegistration, FragmentError, Operation, check_fragment
from engine.stream_api import parse_filter, parse_mode
from engine.streams import Delivery, StreamHub

SUBSCRIPTION_PREFIX: Final = "/engine/graphql/subscription/"
MAX_SDL_CHARS: Final = 100_000
MAX_NAME_CHARS: Final = 100
MAX_QUERY_CHARS: Final = 100_000
MAX_VARIABLES_CHARS: Final = 50_000
VISIBILITIES: Final = ("internal", "engine", "external")

REGISTER_METHODS: Final[Mapping[str, Operation]] = {
    "graphQLRegistry.registerQuery": "query",
    "graphQLRegistry.registerMutation": "mutation",
    "graphQLRegistry.registerSubscription": "subscription",
    # v0.9: three arguments, always external (the prelude passes the visibility).
    "registerGraphQLQuery": "query",
    "registerGraphQLMutation": "mutation",
    "registerGraphQLSubscription": "subscription",
}
SEND_METHODS: Final = frozenset(
    {
        "graphQLRegistry.sendSubscriptionMessage",
        "graphQLRegistry.sendSubscriptionMessageFiltered",
    }
)
EXECUTE: Final = "graphQLRegistry.executeGraphQL"

# executeGraphQL(query, variables, depth) -> the GraphQL response.
Execute = Callable[[str, dict[str, Any] | None, int], Awaitable[dict[str, Any]]]


def subscription_path(field: str) -> str:
    return SUBSCRIPTION_PREFIX + field


def registration(method: str, args: list[Any], *, script_uri: str) -> FieldRegistration | str:
    """The registration a ``register*`` call asks for, or the original's error string."""
    operation = REGISTER_METHODS[method]
    name, sdl, resolver, visibility = (list(args) + [None] * 4)[:4]
    label = operation
    shown = _as_js(name)

    def refused(problem: str) -> str:
        return f"Error registering GraphQL {label} '{shown}': {problem}"

    if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME_CHARS:
        return refused(f"name must be 1-{MAX_NAME_CHARS} characters")
    if not isinstance(sdl, str) or not 1 <= len(sdl) <= MAX_SDL_CHARS:
        return refused(f"SDL must be 1-{MAX_SDL_CHARS} characters")
    if "__proto__" in sdl or "constructor" in sdl:
        return refused("SDL must not contain '__proto__' or 'constructor'")
    if visibility not in VISIBILITIES:
        shown_visibility = _as_js(visibility)
        return refused(
            f"Invalid visibility: '{shown_visibility}'. Must be 'internal', 'engine', or 'external'"
        )
    if operation == "subscription" and visibility != "external":
        return refused("subscriptions must be 'external'")
    if resolver is not None and (not isinstance(resolver, str) or not resolver.strip()):
        return refused("the resolver must be a function or its name")
    if resolver is None and operation != "subscription":
        return refused("a resolver function is required")
    field = FieldRegistration(
        script_uri=script_uri,
        operation=operation,
        name=name,
        sdl=sdl,
        resolver=resolver,
        visibility=cast(Any, visibility),
    )
    try:
        check_fragment(field)
    except FragmentError as exc:
        return refused(exc.problem)
    return field


def registered(operation: Operation, name: str) -> str:
    return f"GraphQL {operation} '{name}' registered successfully"


def _as_js(value: Any) -> str:
    """A script's argument as JavaScript would print it in a template string (a missing one
    reads ``undefined``, not Python's ``None``)."""
    if value is None:
        return "undefined"
    if isinstance(value, str):
        return value
    return _text(value)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _error_json(message: str) -> str:
    return json.dumps({"errors": [{"message": message}]}, separators=(",", ":"))


class GraphQLHostApi:
    """Broadcasts to subscriptions and ``executeGraphQL`` for scripts."""

    def __init__(self, hub: StreamHub, execute: Execute) -> None:
        self._hub = hub
        self._execute = execute

    async def call(self, name: str, args: list[Any], *, depth: int) -> str:
        if name == EXECUTE:
            return await self._execute_graphql(args, depth)
        field = args[0] if args else None
        if not isinstance(field, str) or not field:
            raise HostCallError(f"{name}: the subscription name must be a non-empty string")
        data = _text(args[1] if len(args) > 1 else None)
        path = subscription_path(field)
        if name == "graphQLRegistry.sendSubscriptionMessageFiltered":
            filter = parse_filter(args[2] if len(args) > 2 else None)
            mode = parse_mode(args[3] if len(args) > 3 else None)
            delivery = self._hub.publish(path, data, filter, mode) if self._known(path) else None
        else:
            delivery = self._hub.publish(path, data) if self._known(path) else None
        sent = (delivery or Delivery(0, 0)).sent
        return f"GraphQL subscription message sent to '{field}' ({sent} connections) successfully"

    def _known(self, path: str) -> bool:
        # Only paths with subscribers: a message nobody listens to is not kept for replay.
        return self._hub.count(path) > 0

    async def _execute_graphql(self, args: list[Any], depth: int) -> str:
        query = args[0] if args else None
        raw = args[1] if len(args) > 1 else None
        if not isinstance(query, str) or not 1 <= len(query) <= MAX_QUERY_CHARS:
            return _error_json(f"the query must be 1-{MAX_QUERY_CHARS} characters")
        variables: dict[str, Any] | None = None
        if raw is not None:
            if not isinstance(raw, str) or len(raw) > MAX_VARIABLES_CHARS:
                return _error_json(
                    f"the variables must be JSON text of at most {MAX_VARIABLES_CHARS} characters"
                )
            try:
                decoded = json.loads(raw) if raw.strip() else None
            except ValueError as exc:
                return _error_json(f"the variables are not valid JSON: {exc}")
            except RecursionError:
                return _error_json("the variables are nested too deeply")
            if decoded is not None and not isinstance(decoded, dict):
                return _error_json("the variables must be a JSON object")
            variables = decoded
        result = await self._execute(query, variables, depth)
        return json.dumps(result, ensure_ascii=False, separators=(",", ":"))
