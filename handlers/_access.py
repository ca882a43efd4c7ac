"""Who may call which ``/engine`` endpoint, and the audit events of ``/engine`` calls.

Every ``/engine`` view declares what it needs with one decorator, so that an endpoint without a
declaration stands out (the authorization matrix test fails for it):

* ``@requires(Capability.X)`` -- the caller must hold the capability (``security.can`` with the
  profile's table); a view that acts on one existing script calls :func:`authorize` again with
  the script's ``owners`` once owners exist (the login work adds them), and the script-scoped
  capabilities then also need ownership or Administrator;
* ``@requires_role(Role.Administrator)`` -- the caller must hold the role itself (the audit
  trail): the development profile's anonymous callers hold every capability but no role;
* ``@public`` -- anyone (the landing page, the script types).

A refusal raises :class:`security.Denied` or :class:`RoleRequired`; the handlers installed by
:func:`install` answer 403 JSON naming what is missing and record an ``access.denied`` event.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, ParamSpec, TypeVar

from quart import Response, current_app, g, request
from quart_trio import QuartTrio

from engine.audit import ALLOWED, DENIED
from engine.runtime import EngineRuntime
from handlers._gate import Caller
from handlers._responses import close_if_body_unread, management_error
from security import Capability, Denied, Role, UserContext, require

P = ParamSpec("P")
R = TypeVar("R")

# The attribute a decorated view carries: what it requires (a Capability, a Role or PUBLIC).
REQUIREMENT_ATTR: Final = "aiwebengine_requires"
PUBLIC: Final = "public"
Requirement = Capability | Role | str


class RoleRequired(Exception):
    """A call that needs a role the caller does not hold; answered with 403."""

    def __init__(self, role: Role) -> None:
        self.role = role
        self.message = f"Insufficient role: required [{role.name}]"
        super().__init__(self.message)


def _runtime() -> EngineRuntime:
    runtime: EngineRuntime = current_app.extensions["aiwebengine"]
    return runtime


def current_caller() -> Caller:
    caller: Caller = g.caller
    return caller


def current_user() -> UserContext:
    return current_caller().user


def authorize(capability: Capability, *, owners: frozenset[str] | None = None) -> None:
    """Raise :class:`security.Denied` unless the caller may use ``capability`` (on a script
    with these ``owners``, when given)."""
    development = not _runtime().config.is_production
    require(current_user(), capability, development=development, owners=owners)


def can_use(capability: Capability) -> bool:
    try:
        authorize(capability)
    except Denied:
        return False
    return True


def _declare(requirement: Requirement, check: Callable[[], None]) -> Any:
    def decorate(view: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @functools.wraps(view)
        async def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            check()
            return await view(*args, **kwargs)

        setattr(guarded, REQUIREMENT_ATTR, requirement)
        return guarded

    return decorate


def requires(
    capability: Capability,
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    result: Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]] = _declare(
        capability, lambda: authorize(capability)
    )
    return result


def requires_role(role: Role) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    def check() -> None:
        if role not in current_user().roles:
            raise RoleRequired(role)

    result: Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]] = _declare(role, check)
    return result


def public(view: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    setattr(view, REQUIREMENT_ATTR, PUBLIC)
    return view


async def audit(
    action: str,
    *,
    outcome: str = ALLOWED,
    target: str | None = None,
    detail: Mapping[str, object] | None = None,
) -> None:
    """Record an audit event about the current request, as its caller."""
    runtime = _runtime()
    if not runtime.started:
        return
    caller = current_caller()
    await runtime.audit.record(
        action,
        outcome=outcome,
        user=caller.user,
        client_ip=caller.client_ip,
        request_id=str(getattr(g, "request_id", "") or "") or None,
        target=target,
        detail=detail,
    )


def request_target() -> str:
    return f"{request.method} {request.path}"


def install(app: QuartTrio) -> None:
    @app.errorhandler(Denied)
    async def denied(exc: Denied) -> Response:
        name = exc.capability.name
        await audit(
            "access.denied",
            outcome=DENIED,
            target=request_target(),
            detail={"capability": name, "ownership": exc.ownership},
        )
        return close_if_body_unread(
            management_error(403, exc.message, capability=name, required=[name])
        )

    @app.errorhandler(RoleRequired)
    async def role_required(exc: RoleRequired) -> Response:
        await audit(
            "access.denied",
            outcome=DENIED,
            target=request_target(),
            detail={"role": exc.role.name},
        )
        return close_if_body_unread(management_error(403, exc.message, role=exc.role.name))
