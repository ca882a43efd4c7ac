"""Who is calling, and what they may do: identities, roles and the capability table.

A :class:`UserContext` is built once per request (or per engine-initiated invocation) and passed
explicitly to every service and sandbox call; nothing here reads a global. The capability table
is upstream's (UPSTREAM_API §6.1) with two deliberate tightenings, both listed in
``docs/compatibility.md``:

* creating a script needs ``CreateScripts``, held only by ``Editor``, ``Administrator`` and, in
  the development profile, anonymous callers (upstream let any logged-in user create scripts);
* changing one existing script -- its source, assets, secrets or owners -- needs ownership of that
  script or ``Administrator`` (upstream let any logged-in user write any script's assets).

Everything is a pure function of its arguments, so the whole table is testable as values.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

import attrs


class Role(enum.Enum):
    """Roles as upstream stores them; the member names are the stored names."""

    Authenticated = "Authenticated"  # everyone who presented a valid credential
    Editor = "Editor"  # may create scripts (upstream: a flag that granted nothing)
    Administrator = "Administrator"  # every capability, on every script


class Capability(enum.Enum):
    """Upstream's capability names (§6.1), verbatim, plus the engine's ``CreateScripts``.

    The member name is what refusals print (``required [WriteScripts]``), so it must stay the
    upstream spelling that scripts and tools may match on.
    """

    ReadScripts = "ReadScripts"
    ReadAssets = "ReadAssets"
    WriteScripts = "WriteScripts"
    WriteAssets = "WriteAssets"
    ViewLogs = "ViewLogs"
    ManageStreams = "ManageStreams"
    ManageScriptDatabase = "ManageScriptDatabase"
    DeleteScripts = "DeleteScripts"
    DeleteAssets = "DeleteAssets"
    DeleteLogs = "DeleteLogs"
    ManageGraphQL = "ManageGraphQL"
    # Not upstream: the first tightening needs a name of its own so that a refused creation says
    # what is missing instead of naming WriteScripts, which the caller may well hold.
    CreateScripts = "CreateScripts"


class AuthMethod(enum.Enum):
    """How the identity was established; recorded in the audit trail."""

    ANONYMOUS = "anonymous"  # no credential
    ADMIN_TOKEN = "admin_token"  # noqa: S105 -- a method's name, not a token
    SESSION = "session"  # a login session (cookie or bearer session token)
    SYSTEM = "system"  # the engine itself, running a script's init, jobs, resolvers...


def _role_set(roles: Iterable[Role]) -> frozenset[Role]:
    return frozenset(roles)


@attrs.frozen
class UserContext:
    """The identity a request or invocation acts as.

    ``user_id`` is ``None`` for anonymous callers, the admin-token holder and the engine's own
    principals: code that keys data by user (``personalStorage``, user secrets) must check it,
    not :attr:`is_authenticated`. ``service`` names the engine principal of a ``SYSTEM`` context
    (``script-init``, ``scheduler``, ...), as upstream does.
    """

    user_id: str | None
    roles: frozenset[Role] = attrs.field(converter=_role_set)
    method: AuthMethod
    service: str | None = None

    def __attrs_post_init__(self) -> None:
        # The constructors below always build consistent values; this guards hand-built ones,
        # because an inconsistent identity (say, a session without a user) is a security bug.
        problem = _inconsistency(self)
        if problem is not None:
            raise ValueError(f"inconsistent UserContext: {problem}")

    @classmethod
    def anonymous(cls) -> UserContext:
        return cls(None, frozenset(), AuthMethod.ANONYMOUS)

    @classmethod
    def admin_token(cls) -> UserContext:
        """The holder of the configured admin token: an authenticated Administrator."""
        return cls(None, {Role.Authenticated, Role.Administrator}, AuthMethod.ADMIN_TOKEN)

    @classmethod
    def user(
        cls, user_id: str, roles: Iterable[Role] = (), *, method: AuthMethod = AuthMethod.SESSION
    ) -> UserContext:
        """A logged-in user; ``Authenticated`` is implied."""
        return cls(user_id, {Role.Authenticated, *roles}, method)

    @classmethod
    def system(cls, service: str) -> UserContext:
        """The engine acting for a script (init, jobs, resolvers, listeners) as admin."""
        return cls(None, {Role.Administrator}, AuthMethod.SYSTEM, service)

    @property
    def is_admin(self) -> bool:
        return Role.Administrator in self.roles

    @property
    def is_editor(self) -> bool:
        return Role.Editor in self.roles

    @property
    def is_authenticated(self) -> bool:
        return Role.Authenticated in self.roles

    @property
    def is_anonymous(self) -> bool:
        return self.method is AuthMethod.ANONYMOUS

    @property
    def actor(self) -> str:
        """A short name for the audit trail: the user id, the engine service, or the method."""
        return self.user_id or self.service or self.method.value


def _inconsistency(user: UserContext) -> str | None:
    if user.user_id == "":
        return "an empty user id"
    if user.method is AuthMethod.ANONYMOUS:
        if user.user_id is not None or user.roles:
            return "an anonymous context with a user id or roles"
    elif user.method is AuthMethod.SYSTEM:
        if user.service is None or not user.is_admin:
            return "a system context needs a service name and Administrator"
    elif not user.is_authenticated:
        return f"a {user.method.value} context without the Authenticated role"
    elif user.method is AuthMethod.SESSION and user.user_id is None:
        return "a session without a user id"
    elif user.method is AuthMethod.ADMIN_TOKEN and not user.is_admin:
        return "an admin-token context without Administrator"
    if user.method is not AuthMethod.SYSTEM and user.service is not None:
        return "a service name outside a system context"
    return None


_ALL = frozenset(Capability)
_ANONYMOUS_PRODUCTION = frozenset({Capability.ReadScripts, Capability.ReadAssets})
_AUTHENTICATED = _ANONYMOUS_PRODUCTION | {
    Capability.WriteScripts,
    Capability.WriteAssets,
    Capability.ViewLogs,
    Capability.ManageStreams,
    Capability.ManageScriptDatabase,
}
_EDITOR = _AUTHENTICATED | {Capability.CreateScripts}

# Capabilities that change one script. With the script's owners known (``can(..., owners=)``),
# they also need ownership or an unrestricted caller: the second tightening. A script's secrets
# and owners are part of the script, so writing them is ``WriteScripts`` on that script.
SCRIPT_SCOPED: frozenset[Capability] = frozenset(
    {
        Capability.WriteScripts,
        Capability.WriteAssets,
        Capability.DeleteScripts,
        Capability.DeleteAssets,
    }
)


def _unrestricted(user: UserContext, development: bool) -> bool:
    # Upstream's development profile treats anonymous callers as admin-equivalent ("admin checks"
    # there mean holding DeleteScripts); keeping that is what makes a local deploy work with no
    # credentials. Logged-in users keep their own, narrower table in development, as upstream.
    return user.is_admin or (development and user.is_anonymous)


def capabilities(user: UserContext, *, development: bool) -> frozenset[Capability]:
    """The capabilities ``user`` holds, independent of any particular script (§6.1)."""
    if _unrestricted(user, development):
        return _ALL
    if user.is_anonymous:
        return _ANONYMOUS_PRODUCTION
    if user.is_editor:
        return _EDITOR
    return _AUTHENTICATED


def _refusal(
    user: UserContext,
    capability: Capability,
    development: bool,
    owners: frozenset[str] | None,
) -> Denied | None:
    if capability not in capabilities(user, development=development):
        return Denied(capability)
    if owners is None or capability not in SCRIPT_SCOPED or _unrestricted(user, development):
        return None
    if user.user_id is not None and user.user_id in owners:
        return None
    return Denied(capability, ownership=True)


def can(
    user: UserContext,
    capability: Capability,
    *,
    development: bool,
    owners: frozenset[str] | None = None,
) -> bool:
    """May ``user`` use ``capability``?

    ``owners`` is ``None`` when the action is not about one existing script (listing, a host API
    acting on the calling script, creating a script); pass the script's owner ids when it is, and
    the script-scoped capabilities then also need ownership or Administrator.
    """
    return _refusal(user, capability, development, owners) is None


def require(
    user: UserContext,
    capability: Capability,
    *,
    development: bool,
    owners: frozenset[str] | None = None,
) -> None:
    """Like :func:`can`, but raise :class:`Denied` naming what is missing."""
    refusal = _refusal(user, capability, development, owners)
    if refusal is not None:
        raise refusal


class Denied(Exception):
    """A refused call; the HTTP layer answers 403 with :attr:`message`."""

    def __init__(self, capability: Capability, *, ownership: bool = False) -> None:
        self.capability = capability
        self.ownership = ownership  # held the capability, but not on this script
        suffix = " (as an owner of the script or an Administrator)" if ownership else ""
        self.message = f"Insufficient capabilities: required [{capability.name}]{suffix}"
        super().__init__(self.message)


def insufficient(capability: Capability) -> str:
    """The refusal string host APIs return to scripts, exactly as upstream words it."""
    return f"Error: Insufficient capabilities: required [{capability.name}]"


# Who a script's code runs as, by invocation kind (the context's ``kind``, §1.5 and §6.1).
# Code that the engine starts on its own runs as an engine principal with admin rights, named as
# upstream names them; code a client triggers runs as that client.
_ENGINE_PRINCIPALS: dict[str, str] = {
    "init": "script-init",
    "graphqlQuery": "graphql-resolver",
    "graphqlMutation": "graphql-resolver",
    "graphqlSubscription": "stream-customization",
    "streamCustomization": "stream-customization",
    "scheduled": "scheduler",
    "messageListener": "dispatcher",
    "mcpPrompt": "mcp-prompt",
}
_CALLER_KINDS = frozenset({"httpRoute", "mcpTool", "websocketMessage", "test", "eval"})
INVOCATION_KINDS: frozenset[str] = frozenset(_ENGINE_PRINCIPALS) | _CALLER_KINDS


def runs_as(kind: str, caller: UserContext) -> UserContext:
    """The identity an invocation of ``kind`` runs with, given who triggered it.

    An unknown kind is a programming error and raises ``ValueError``: guessing either way would
    silently grant or withhold admin rights.
    """
    service = _ENGINE_PRINCIPALS.get(kind)
    if service is not None:
        return UserContext.system(service)
    if kind in _CALLER_KINDS:
        return caller
    raise ValueError(f"unknown invocation kind {kind!r}")
