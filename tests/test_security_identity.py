"""Identities, the capability table (upstream §6.1 plus two tightenings) and who scripts run as."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from security import (
    AuthMethod,
    Capability,
    Denied,
    Role,
    UserContext,
    can,
    capabilities,
    insufficient,
    require,
    runs_as,
)
from security.identity import INVOCATION_KINDS, SCRIPT_SCOPED

C = Capability

ANONYMOUS = UserContext.anonymous()
USER = UserContext.user("u-plain")
EDITOR = UserContext.user("u-editor", [Role.Editor])
ADMIN_USER = UserContext.user("u-admin", [Role.Administrator])
ADMIN_TOKEN = UserContext.admin_token()
SYSTEM = UserContext.system("script-init")

# The whole table, spelled out so that any change to it shows up in a diff of this file.
# Columns: anonymous in production, anonymous in development, a logged-in user, an Editor, an
# Administrator (the same in both profiles; logged-in users also keep their column in
# development, as upstream). "Y" = holds the capability regardless of which script.
TABLE = """
capability             anon-prod  anon-dev  user  editor  admin
ReadScripts            Y          Y         Y     Y       Y
ReadAssets             Y          Y         Y     Y       Y
WriteScripts           -          Y         Y     Y       Y
WriteAssets            -          Y         Y     Y       Y
ViewLogs               -          Y         Y     Y       Y
ManageStreams          -          Y         Y     Y       Y
ManageScriptDatabase   -          Y         Y     Y       Y
DeleteScripts          -          Y         -     -       Y
DeleteAssets           -          Y         -     -       Y
DeleteLogs             -          Y         -     -       Y
ManageGraphQL          -          Y         -     -       Y
CreateScripts          -          Y         -     Y       Y
"""


def _table() -> dict[str, dict[Capability, bool]]:
    header, *rows = TABLE.strip().splitlines()
    columns = header.split()[1:]
    table: dict[str, dict[Capability, bool]] = {column: {} for column in columns}
    for row in rows:
        name, *marks = row.split()
        for column, mark in zip(columns, marks, strict=True):
            table[column][Capability[name]] = mark == "Y"
    return table


COLUMNS = {
    "anon-prod": [(ANONYMOUS, False)],
    "anon-dev": [(ANONYMOUS, True)],
    "user": [(USER, False), (USER, True)],
    "editor": [(EDITOR, False), (EDITOR, True)],
    "admin": [(ADMIN_USER, False), (ADMIN_USER, True), (ADMIN_TOKEN, False), (ADMIN_TOKEN, True)],
}


def test_the_table_names_every_capability_once() -> None:
    for column in _table().values():
        assert set(column) == set(Capability)


@pytest.mark.parametrize("column", list(COLUMNS))
def test_capability_table(column: str) -> None:
    expected = {cap for cap, held in _table()[column].items() if held}
    for user, development in COLUMNS[column]:
        assert capabilities(user, development=development) == expected, (user, development)
        for cap in Capability:
            assert can(user, cap, development=development) is (cap in expected)


def test_capability_names_are_upstreams() -> None:
    upstream = {
        "ReadScripts",
        "ReadAssets",
        "WriteScripts",
        "WriteAssets",
        "ViewLogs",
        "ManageStreams",
        "ManageScriptDatabase",
        "DeleteScripts",
        "DeleteAssets",
        "DeleteLogs",
        "ManageGraphQL",
    }
    assert {cap.name for cap in Capability} == upstream | {"CreateScripts"}
    assert all(cap.name == cap.value for cap in Capability)
    assert [role.name for role in Role] == ["Authenticated", "Editor", "Administrator"]


def test_the_engine_principal_is_an_administrator() -> None:
    assert capabilities(SYSTEM, development=False) == frozenset(Capability)


# --- the ownership tightening ---------------------------------------------------------------

OWNERS = frozenset({"u-plain", "u-editor"})
NOT_OURS = frozenset({"someone-else"})


@pytest.mark.parametrize("cap", sorted(SCRIPT_SCOPED, key=str))
def test_changing_one_script_needs_ownership_or_administrator(cap: Capability) -> None:
    # Owners keep whatever the table gives them; everybody else but admins loses it.
    for user in (USER, EDITOR):
        holds = cap in capabilities(user, development=False)
        assert can(user, cap, development=False, owners=OWNERS) is holds
        assert not can(user, cap, development=False, owners=NOT_OURS)
        assert not can(user, cap, development=False, owners=frozenset())
    for admin in (ADMIN_USER, ADMIN_TOKEN, SYSTEM):
        assert can(admin, cap, development=False, owners=NOT_OURS)
    # Development keeps upstream's open door for anonymous callers, owners or not.
    assert can(ANONYMOUS, cap, development=True, owners=NOT_OURS)
    assert not can(ANONYMOUS, cap, development=False, owners=NOT_OURS)


def test_a_plain_user_cannot_write_another_users_assets_any_more() -> None:
    # Upstream let any logged-in user write any script's assets (§6.2); we do not.
    assert can(USER, C.WriteAssets, development=False)  # a host API acting on its own script
    assert not can(USER, C.WriteAssets, development=False, owners=NOT_OURS)
    assert can(USER, C.WriteAssets, development=False, owners=OWNERS)


def test_only_editors_and_administrators_create_scripts() -> None:
    assert not can(USER, C.CreateScripts, development=False)
    assert not can(USER, C.CreateScripts, development=True)
    assert can(EDITOR, C.CreateScripts, development=False)
    assert can(ADMIN_TOKEN, C.CreateScripts, development=False)
    assert not can(ANONYMOUS, C.CreateScripts, development=False)
    assert can(ANONYMOUS, C.CreateScripts, development=True)


def test_owners_do_not_matter_for_capabilities_that_are_not_about_one_script() -> None:
    for cap in set(Capability) - SCRIPT_SCOPED:
        for user in (ANONYMOUS, USER, EDITOR, ADMIN_TOKEN):
            for development in (False, True):
                assert can(user, cap, development=development, owners=NOT_OURS) is can(
                    user, cap, development=development
                )


# --- refusals -------------------------------------------------------------------------------


def test_require_names_the_missing_capability() -> None:
    with pytest.raises(Denied) as refused:
        require(ANONYMOUS, C.ViewLogs, development=False)
    assert refused.value.capability is C.ViewLogs
    assert not refused.value.ownership
    assert str(refused.value) == "Insufficient capabilities: required [ViewLogs]"
    assert refused.value.message == str(refused.value)


def test_require_says_when_ownership_is_what_is_missing() -> None:
    with pytest.raises(Denied) as refused:
        require(USER, C.WriteAssets, development=False, owners=NOT_OURS)
    assert refused.value.capability is C.WriteAssets
    assert refused.value.ownership
    assert str(refused.value) == (
        "Insufficient capabilities: required [WriteAssets]"
        " (as an owner of the script or an Administrator)"
    )


def test_require_passes_silently_when_allowed() -> None:
    require(EDITOR, C.CreateScripts, development=False)
    require(USER, C.WriteScripts, development=False, owners=OWNERS)


def test_the_host_api_refusal_string_is_upstreams() -> None:
    assert insufficient(C.ViewLogs) == "Error: Insufficient capabilities: required [ViewLogs]"
    assert insufficient(C.ManageGraphQL) == (
        "Error: Insufficient capabilities: required [ManageGraphQL]"
    )


# --- identities -----------------------------------------------------------------------------


def test_constructors_build_what_they_say() -> None:
    assert UserContext(None, frozenset(), AuthMethod.ANONYMOUS) == ANONYMOUS
    assert (ANONYMOUS.is_anonymous, ANONYMOUS.is_authenticated, ANONYMOUS.is_admin) == (
        True,
        False,
        False,
    )
    assert ADMIN_TOKEN.is_admin and ADMIN_TOKEN.is_authenticated and ADMIN_TOKEN.user_id is None
    assert ADMIN_TOKEN.method is AuthMethod.ADMIN_TOKEN
    assert EDITOR.roles == {Role.Authenticated, Role.Editor}
    assert EDITOR.is_editor and not EDITOR.is_admin and EDITOR.user_id == "u-editor"
    assert USER.method is AuthMethod.SESSION and not USER.is_editor
    assert SYSTEM.is_admin and not SYSTEM.is_authenticated and SYSTEM.service == "script-init"


def test_actor_names_who_acted() -> None:
    assert [u.actor for u in (ANONYMOUS, ADMIN_TOKEN, USER, SYSTEM)] == [
        "anonymous",
        "admin_token",
        "u-plain",
        "script-init",
    ]


@pytest.mark.parametrize(
    ("user_id", "roles", "method", "service"),
    [
        ("u", (), AuthMethod.ANONYMOUS, None),
        (None, (Role.Authenticated,), AuthMethod.ANONYMOUS, None),
        (None, (Role.Authenticated,), AuthMethod.SESSION, None),
        ("u", (), AuthMethod.SESSION, None),
        ("", (Role.Authenticated,), AuthMethod.SESSION, None),
        (None, (Role.Authenticated,), AuthMethod.ADMIN_TOKEN, None),
        (None, (Role.Administrator,), AuthMethod.SYSTEM, None),
        (None, (Role.Authenticated,), AuthMethod.SYSTEM, "scheduler"),
        ("u", (Role.Authenticated,), AuthMethod.SESSION, "scheduler"),
    ],
)
def test_inconsistent_identities_are_refused(
    user_id: str | None, roles: tuple[Role, ...], method: AuthMethod, service: str | None
) -> None:
    with pytest.raises(ValueError, match="inconsistent UserContext"):
        UserContext(user_id, frozenset(roles), method, service)


# --- who a script runs as -------------------------------------------------------------------

ENGINE_KINDS = {
    "init": "script-init",
    "graphqlQuery": "graphql-resolver",
    "graphqlMutation": "graphql-resolver",
    "graphqlSubscription": "stream-customization",
    "streamCustomization": "stream-customization",
    "scheduled": "scheduler",
    "messageListener": "dispatcher",
    "mcpPrompt": "mcp-prompt",
}
CALLER_KINDS = ["httpRoute", "mcpTool", "websocketMessage", "test", "eval"]


def test_every_kind_is_listed_here() -> None:
    assert set(ENGINE_KINDS) | set(CALLER_KINDS) == INVOCATION_KINDS


@pytest.mark.parametrize(("kind", "service"), ENGINE_KINDS.items())
def test_engine_started_code_runs_as_an_engine_administrator(kind: str, service: str) -> None:
    for caller in (ANONYMOUS, USER, ADMIN_TOKEN):
        identity = runs_as(kind, caller)
        assert identity == UserContext.system(service)
        assert identity.is_admin


@pytest.mark.parametrize("kind", CALLER_KINDS)
def test_client_triggered_code_runs_as_the_caller(kind: str) -> None:
    for caller in (ANONYMOUS, USER, EDITOR, ADMIN_TOKEN):
        assert runs_as(kind, caller) is caller


def test_an_unknown_kind_is_an_error_not_a_guess() -> None:
    with pytest.raises(ValueError, match="unknown invocation kind 'cron'"):
        runs_as("cron", ANONYMOUS)


# --- properties -----------------------------------------------------------------------------

user_ids = st.text(min_size=1, max_size=12)
users = st.one_of(
    st.just(ANONYMOUS),
    st.just(ADMIN_TOKEN),
    st.builds(UserContext.user, user_ids, st.sets(st.sampled_from(Role))),
    st.builds(UserContext.system, st.sampled_from(sorted(set(ENGINE_KINDS.values())))),
)


@given(users, st.booleans())
def test_everyone_may_read_and_administrators_may_do_everything(
    user: UserContext, development: bool
) -> None:
    held = capabilities(user, development=development)
    assert {C.ReadScripts, C.ReadAssets} <= held
    if user.is_admin:
        assert held == frozenset(Capability)
    # Development never takes anything away.
    assert held <= capabilities(user, development=True)


@given(users, st.sampled_from(Capability), st.booleans(), st.frozensets(user_ids, max_size=3))
def test_knowing_the_owners_only_ever_narrows(
    user: UserContext, cap: Capability, development: bool, owners: frozenset[str]
) -> None:
    scoped = can(user, cap, development=development, owners=owners)
    if scoped:
        assert can(user, cap, development=development)
    if user.user_id is not None:
        # Being an owner restores exactly what the table grants.
        assert can(user, cap, development=development, owners=owners | {user.user_id}) is can(
            user, cap, development=development
        )


@given(users, st.sampled_from(Capability), st.booleans(), st.none() | st.frozensets(user_ids))
def test_require_agrees_with_can(
    user: UserContext, cap: Capability, development: bool, owners: frozenset[str] | None
) -> None:
    allowed = can(user, cap, development=development, owners=owners)
    try:
        require(user, cap, development=development, owners=owners)
    except Denied as refused:
        assert not allowed
        assert refused.capability is cap
        assert f"required [{cap.name}]" in str(refused)
    else:
        assert allowed


@given(users, st.sampled_from(sorted(INVOCATION_KINDS)))
def test_runs_as_never_lowers_engine_code_or_raises_callers(user: UserContext, kind: str) -> None:
    identity = runs_as(kind, user)
    assert identity is user or (identity.is_admin and identity.method is AuthMethod.SYSTEM)
