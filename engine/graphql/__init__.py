"""GraphQL for scripts: their SDL fragments merged into one schema, served by Tartiflette.

This package knows nothing of HTTP or of the sandbox: the engine passes registrations in and a
resolve callback that runs the script's function; the HTTP surfaces call ``execute`` and
``subscribe``.  Tartiflette stays behind these names, so it could be replaced.

Contract:

* **One runtime for the app's lifetime.**  Tartiflette is asyncio-based; it runs on one
  trio_asyncio loop opened with ``async with graphql_runtime() as runtime:`` (or
  ``runtime = await nursery.start(GraphQLRuntime.run)``).  Every ``BuiltSchema`` is bound to
  the runtime it was built with; ``execute``/``subscribe`` may be called from *any* Trio task
  of the process, including request handlers that do not descend from the task that opened
  the loop (the runtime sets ``trio_asyncio.current_loop`` around each call).  Once the
  runtime is closed, ``execute`` raises RuntimeError.
* **Registrations.**  :func:`check_fragment` vets one :class:`FieldRegistration` as a script
  registers it (syntax with line and column, the root block must define the field, names,
  sizes).  :func:`build_schema` merges all of them into one schema for an audience: "external"
  serves ``external`` fields (``/graphql``), "engine" serves ``external`` + ``engine`` ones
  (``executeGraphQL``); ``internal`` fields are in neither.  Conflicts go to the registration
  that came first; the losers are in ``BuiltSchema.rejected`` as :class:`FragmentError` values
  (script, field, problem) and everything else is served.  With no query field at all the
  schema has ``placeholder: String``.
* **Resolvers.**  ``resolve(registration, arguments, ResolveInfo)`` is a Trio coroutine; its
  value is shaped to the declared type (JSON text is parsed where an object or list is
  declared, for scripts written for the original engine).  Raising :class:`ResolveError` puts
  its message (and ``code`` in ``extensions``) in the response's ``errors`` with ``path`` and
  ``locations``; any other exception is logged and reported as an internal error.
* **Subscriptions.**  ``BuiltSchema.subscribe`` opens ``subscription_source(field, arguments)``
  in the caller's task and yields ``{"data": {field: payload}}`` per payload; closing or
  cancelling the consumer closes the source.
* **Generations are immutable.**  Building a new generation never disturbs the old one;
  whoever holds a ``BuiltSchema`` can keep executing on it.  Each build uses a fresh
  Tartiflette schema name and removes it from Tartiflette's global registry afterwards.
* **Limits.**  :func:`check_query` enforces size and depth (fragments expanded) before
  execution; ``execute`` itself only refuses nesting deep enough to crash the C parser.
  :func:`operation_of` tells which kind of operation a query would run (to route
  subscriptions), without a schema.
"""

from engine.graphql._limits import check_query, operation_of
from engine.graphql._model import (
    Audience,
    FieldRegistration,
    FragmentError,
    Operation,
    QueryRejected,
    ResolveError,
    ResolveFn,
    ResolveInfo,
    SubscriptionSource,
    Visibility,
)
from engine.graphql._runtime import GraphQLRuntime, graphql_runtime
from engine.graphql._schema import BuiltSchema, build_schema, check_fragment

__all__ = [
    "Audience",
    "BuiltSchema",
    "FieldRegistration",
    "FragmentError",
    "GraphQLRuntime",
    "Operation",
    "QueryRejected",
    "ResolveError",
    "ResolveFn",
    "ResolveInfo",
    "SubscriptionSource",
    "Visibility",
    "build_schema",
    "check_fragment",
    "check_query",
    "graphql_runtime",
    "operation_of",
]
