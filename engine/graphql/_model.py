"""The values the GraphQL core takes in and gives out; nothing here knows Tartiflette."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from types import MappingProxyType
from typing import Any, Literal

import attrs

Visibility = Literal["external", "engine", "internal"]
Operation = Literal["query", "mutation", "subscription"]
Audience = Literal["external", "engine"]

# Upstream limits (UPSTREAM_API.md section 5).
MAX_NAME_CHARS = 100
MAX_SDL_CHARS = 100_000

ROOT_TYPES: Mapping[Operation, str] = MappingProxyType(
    {"query": "Query", "mutation": "Mutation", "subscription": "Subscription"}
)
_EMPTY: Mapping[str, Any] = MappingProxyType({})


@attrs.frozen
class FieldRegistration:
    """One ``graphQLRegistry.register*`` call of one script.

    ``sdl`` is either a bare field (``hello(name: String): String``) or whole SDL blocks: the
    root block of the operation (``type Query { hello: String }``, ``extend type`` works too)
    plus any ``type``/``interface``/``union``/``input``/``enum``/``scalar`` it uses.  Only the
    root field called ``name`` is taken from the root block; other root fields in the same text
    belong to other registrations and are ignored.
    """

    script_uri: str
    operation: Operation
    name: str
    sdl: str
    resolver: str | None
    visibility: Visibility


class FragmentError(Exception):
    """A registration the schema cannot take: its message names the script, field and problem."""

    def __init__(
        self,
        script_uri: str,
        field: str,
        problem: str,
        *,
        registration: FieldRegistration | None = None,
    ) -> None:
        super().__init__(f"GraphQL field '{field}' of script '{script_uri}': {problem}")
        self.script_uri = script_uri
        self.field = field
        self.problem = problem
        self.registration = registration

    @classmethod
    def of(cls, registration: FieldRegistration, problem: str) -> FragmentError:
        return cls(registration.script_uri, registration.name, problem, registration=registration)


class ResolveError(Exception):
    """Raised by a resolve callback: ``message`` (and ``code``) reach the client as they are.

    Any other exception a callback raises is logged and reported to the client as an internal
    error, so a bug in the engine never shows its details to callers.
    """

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class QueryRejected(ValueError):
    """A query refused before execution: too long, too deep, not parsable."""


@attrs.frozen
class ResolveInfo:
    """What a resolve callback learns about the field being resolved."""

    field: str
    operation: Operation
    path: tuple[str | int, ...]
    # The ``context`` mapping given to ``execute``/``subscribe`` (request identity and so on).
    context: Mapping[str, Any] = attrs.field(default=_EMPTY, repr=False)


ResolveFn = Callable[[FieldRegistration, dict[str, Any] | None, ResolveInfo], Awaitable[Any]]
"""A Trio coroutine function computing one root field's value (the engine calls the sandbox)."""

SubscriptionSource = Callable[
    [str, dict[str, Any] | None], AbstractAsyncContextManager[AsyncIterator[Any]]
]
"""Given a subscription field name and its arguments, opens the stream of raw payloads."""
