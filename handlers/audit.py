"""``GET /engine/audit``: the audit trail, newest first, for Administrators.

Filters: ``actor``, ``action``, ``outcome`` (exact), ``since`` (epoch milliseconds or RFC 3339;
entries at or after it), ``limit`` (1..1000, default 100).  Paging: ``before_seq`` gives the
page of older entries (pass the smallest ``seq`` of the page you have), ``after_seq`` the
entries that followed a cursor (pass the largest ``seq`` you have; the next ``limit`` of them).
Every answer lists entries newest first.  The trail is append-only: there is no endpoint that
changes or deletes entries.
"""

from __future__ import annotations

from quart import Blueprint, Response, request

from engine.audit import OUTCOMES, entry_json
from engine.http_contract import decode_query
from engine.runtime import EngineRuntime
from engine.storage import MAX_AUDIT_PAGE, AuditQuery
from handlers._access import requires_role
from handlers._responses import iso_now, json_response, management_error
from handlers.admin import BadParameter, parse_int, parse_since
from security import Role

DEFAULT_PAGE = 100


def audit_query(params: dict[str, str]) -> AuditQuery:
    """The listing's filters from query parameters; :class:`BadParameter` naming a bad one."""
    outcome = params.get("outcome") or None
    if outcome is not None and outcome not in OUTCOMES:
        raise BadParameter("outcome", "must be one of " + ", ".join(sorted(OUTCOMES)))
    limit = parse_int(params, "limit", minimum=1)
    if limit is not None and limit > MAX_AUDIT_PAGE:
        raise BadParameter("limit", f"must be at most {MAX_AUDIT_PAGE}")
    after_seq = parse_int(params, "after_seq", minimum=0)
    before_seq = parse_int(params, "before_seq", minimum=1)
    if after_seq is not None and before_seq is not None:
        raise BadParameter("after_seq", "give after_seq or before_seq, not both")
    return AuditQuery(
        actor=params.get("actor") or None,
        action=params.get("action") or None,
        outcome=outcome,
        since_ms=parse_since(params),
        after_seq=after_seq,
        before_seq=before_seq,
        limit=limit or DEFAULT_PAGE,
    )


def make_blueprint(runtime: EngineRuntime) -> Blueprint:
    blueprint = Blueprint("engine_audit", __name__, url_prefix="/engine")

    @blueprint.errorhandler(BadParameter)
    async def bad(exc: BadParameter) -> Response:
        return management_error(400, str(exc), parameter=exc.name)

    @blueprint.get("/audit")
    @requires_role(Role.Administrator)
    async def audit_trail() -> Response:
        query = audit_query(decode_query(request.scope.get("query_string", b"")))
        entries = await runtime.audit.query(query)
        return json_response(
            {
                "entries": [entry_json(entry) for entry in entries],
                "count": len(entries),
                "timestamp": iso_now(),
            }
        )

    return blueprint
