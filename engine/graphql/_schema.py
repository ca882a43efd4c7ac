"""Building one schema generation from every script's registrations, and running queries on it."""

from __future__ import annotations

import functools
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from typing import Any

import attrs
import trio

from engine.graphql import _engine
from engine.graphql._engine import BuildFailed, Engine, Event, ExecContext, error_response
from engine.graphql._limits import nesting_problem
from engine.graphql._merge import MergedSchema, SchemaMerger
from engine.graphql._model import (
    Audience,
    FieldRegistration,
    FragmentError,
    ResolveFn,
    SubscriptionSource,
    Visibility,
)
from engine.graphql._runtime import GraphQLRuntime
from engine.graphql._sdl import Fragment, analyze_fragment

_VISIBLE: Mapping[Audience, frozenset[Visibility]] = {
    "external": frozenset(("external",)),
    "engine": frozenset(("external", "engine")),
}

_Item = tuple[FieldRegistration, Fragment]


def check_fragment(reg: FieldRegistration) -> None:
    """Refuse a registration whose SDL cannot be used, with a :class:`FragmentError`.

    Checks the name, sizes and resolver, parses the SDL with Tartiflette's SDL parser
    (reporting syntax errors with line and column) and requires the operation's root block to
    define the field ``reg.name``.  Whether the types it references exist is only known when the
    schema is built.
    """
    analyze_fragment(reg)


@attrs.frozen(eq=False)
class BuiltSchema:
    """One immutable schema generation.

    A generation never changes after it is built: the engine swaps in a new one when scripts
    change, and queries already running on the old one finish on it.
    """

    sdl: str
    rejected: tuple[FragmentError, ...]
    generation: int
    audience: Audience
    # The registrations whose fields this schema serves, in schema order.
    accepted: tuple[FieldRegistration, ...]
    _engine: Engine = attrs.field(repr=False)
    _runtime: GraphQLRuntime = attrs.field(repr=False)
    _source: SubscriptionSource | None = attrs.field(repr=False)

    async def execute(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        operation_name: str | None = None,
        *,
        context: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Run a query or mutation; returns the GraphQL response ``{"data": ..., "errors": [...]}``.

        Errors of every kind (syntax, validation, resolvers) come back inside the response.
        Size and depth limits are the caller's (:func:`check_query`); this only refuses what
        would endanger the process.
        """
        problem = nesting_problem(query) if isinstance(query, str) else "the query must be text"
        if problem is not None:
            return error_response(problem)
        return await self._runtime.run_asyncio(
            _engine.execute, self._engine, query, variables, operation_name, ExecContext(context)
        )

    async def subscribe(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        operation_name: str | None = None,
        *,
        context: Mapping[str, Any] | None = None,
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Yield one execution result per payload of the subscription's source.

        An invalid request yields its error response once and ends.  The source (opened with
        the field name and its coerced arguments) is owned by this generator, in the consumer's
        task: closing the generator (``aclose()``, leaving ``async with aclosing(...)``) or
        cancelling the consumer closes the source at once.  Always close the generator; an
        abandoned one keeps its source open until it is garbage collected.
        """
        problem = nesting_problem(query) if isinstance(query, str) else "the query must be text"
        if problem is not None:
            yield error_response(problem)
            return
        probe: list[tuple[str, dict[str, Any]]] = []
        results = await self._runtime.run_asyncio(
            _engine.run_subscription,
            self._engine,
            query,
            variables,
            operation_name,
            ExecContext(context, probe),
        )
        if not probe:  # refused before reaching the source: the results are the errors
            for result in results:
                yield result
            return
        if self._source is None:
            yield error_response("subscriptions are not available")
            return
        field, arguments = probe[0]
        exec_context = ExecContext(context)
        async with self._source(field, arguments) as payloads:
            async for payload in payloads:
                for result in await self._runtime.run_asyncio(
                    _engine.run_subscription,
                    self._engine,
                    query,
                    variables,
                    operation_name,
                    exec_context,
                    Event(payload),
                ):
                    yield result


async def build_schema(
    registrations: Sequence[FieldRegistration],
    resolve: ResolveFn,
    *,
    audience: Audience,
    runtime: GraphQLRuntime,
    subscription_source: SubscriptionSource | None = None,
) -> BuiltSchema:
    """Merge every registration into one schema for ``audience`` and build it.

    Order decides conflicts: the registration that comes first keeps a field or a type, a
    later one that disagrees is rejected.  A script registering the same field twice keeps its
    last registration.  Conflicts are judged over every registration whatever its visibility,
    so both audiences reject the same fragments for them; a fragment Tartiflette refuses is
    found by trial builds (bisecting over scripts) and rejected while the others are served.
    The work runs in a worker thread; ``resolve`` and ``subscription_source`` are Trio callables.
    """
    generation = runtime.next_generation()
    accepted, rejected, engine, merged = await trio.to_thread.run_sync(
        functools.partial(_build, tuple(registrations), audience, resolve, lambda: runtime.loop)
    )
    return BuiltSchema(
        sdl=merged.sdl,
        rejected=rejected,
        generation=generation,
        audience=audience,
        accepted=accepted,
        engine=engine,
        runtime=runtime,
        source=subscription_source,
    )


def _build(
    registrations: tuple[FieldRegistration, ...],
    audience: Audience,
    resolve: ResolveFn,
    loop: Callable[[], Any],
) -> tuple[tuple[FieldRegistration, ...], tuple[FragmentError, ...], Engine, MergedSchema]:
    rejected: list[FragmentError] = []
    merger = SchemaMerger()
    items: list[_Item] = []
    for reg in _last_per_field(registrations):
        try:
            fragment = analyze_fragment(reg)
        except FragmentError as error:
            rejected.append(error)
            continue
        problem = merger.add(reg, fragment)
        if problem is not None:
            rejected.append(FragmentError.of(reg, problem))
        else:
            items.append((reg, fragment))
    visible = [item for item in items if item[0].visibility in _VISIBLE[audience]]
    kept, failed, engine, merged = _TrialBuilder(resolve, loop).build(visible)
    accepted = tuple(reg for reg, _ in kept)
    return accepted, tuple(rejected + failed), engine, merged


def _last_per_field(registrations: tuple[FieldRegistration, ...]) -> list[FieldRegistration]:
    last: dict[tuple[str, str, str], FieldRegistration] = {}
    for reg in registrations:
        key = (reg.script_uri, reg.operation, reg.name)
        last.pop(key, None)  # re-insert: the later registration takes the later place
        last[key] = reg
    return list(last.values())


class _TrialBuilder:
    """Finds the fragments Tartiflette refuses by building subsets, and builds the rest.

    The common case is one build.  When it fails, a binary search over scripts (in order)
    finds the first script whose fragments break the build; its registrations are then tried
    one by one on top of everything that built, twice, so a field using a type declared by a
    later registration of the same script still gets in.  Then the search goes on after it.
    """

    def __init__(self, resolve: ResolveFn, loop: Callable[[], Any]) -> None:
        self._resolve = resolve
        self._loop = loop

    def build(
        self, items: list[_Item]
    ) -> tuple[list[_Item], list[FragmentError], Engine, MergedSchema]:
        groups: dict[str, list[_Item]] = {}
        for item in items:
            groups.setdefault(item[0].script_uri, []).append(item)
        remaining = list(groups.values())
        kept: list[_Item] = []
        failed: list[FragmentError] = []
        while remaining:
            outcome = self._attempt(kept + _flat(remaining))
            if not isinstance(outcome, str):
                return kept + _flat(remaining), failed, *outcome
            good, bad = 0, len(remaining) - 1  # kept + remaining[:good] builds; [:bad+1] not
            while good < bad:
                middle = (good + bad) // 2
                if isinstance(self._attempt(kept + _flat(remaining[: middle + 1])), str):
                    bad = middle
                else:
                    good = middle + 1
            kept += _flat(remaining[:bad])
            failed += self._isolate(kept, remaining[bad])
            remaining = remaining[bad + 1 :]
        outcome = self._attempt(kept)
        if isinstance(outcome, str):  # pragma: no cover - every kept item built before
            raise RuntimeError(f"the GraphQL schema no longer builds: {outcome}")
        return kept, failed, *outcome

    def _isolate(self, kept: list[_Item], group: list[_Item]) -> list[FragmentError]:
        """Add what of ``group`` builds on top of ``kept`` (in place); the rest is rejected."""
        pending = group
        problems: dict[int, str] = {}
        for _ in range(2):
            still: list[_Item] = []
            for item in pending:
                outcome = self._attempt([*kept, item], explain=True)
                if isinstance(outcome, str):
                    problems[id(item)] = outcome
                    still.append(item)
                else:
                    kept.append(item)
            if len(still) == len(pending):
                break
            pending = still
        return [
            FragmentError.of(item[0], f"the schema does not build: {problems[id(item)]}")
            for item in pending
        ]

    def _attempt(
        self, items: list[_Item], *, explain: bool = False
    ) -> tuple[Engine, MergedSchema] | str:
        merger = SchemaMerger()
        for reg, fragment in items:
            problem = merger.add(reg, fragment)
            assert problem is None, problem  # conflicts were settled before any build
        merged = merger.result()
        try:
            return _engine.build_engine(merged, self._resolve, self._loop, explain=explain), merged
        except BuildFailed as error:
            return str(error)


def _flat(groups: list[list[_Item]]) -> list[_Item]:
    return [item for group in groups for item in group]
