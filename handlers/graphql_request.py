"""Reading a GraphQL request from HTTP, and the shape of a refusal (protocol without I/O).

Both ``/graphql`` and ``/graphql/sse`` take the same inputs: the query string (``query``,
``variables`` as JSON text, ``operationName``) or a POST body, JSON ``{query, variables,
operationName}`` or an ``application/graphql`` query text.  Anything else is a
:class:`BadGraphQLRequest` naming the problem, with the status it deserves.
"""

from __future__ import annotations

import json
from typing import Any, Final

import attrs

from engine.graphql import operation_of
from engine.graphql_service import GraphQLRequestError, QueryRejected
from engine.http_contract import decode_query, error_envelope

_JSON_TYPES: Final = ("application/json",)
_GRAPHQL_TYPE: Final = "application/graphql"


@attrs.frozen
class GraphQLParams:
    query: str
    variables: dict[str, Any] | None
    operation_name: str | None


class BadGraphQLRequest(Exception):
    """A request that carries no runnable GraphQL request; ``status`` is 400 or 415."""

    def __init__(self, message: str, *, code: str = "BAD_REQUEST", status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


def _decode_json(text: str | bytes, what: str) -> Any:
    try:
        return json.loads(text)
    except UnicodeDecodeError:
        raise BadGraphQLRequest(f"Invalid JSON: {what} is not UTF-8", code="INVALID_JSON") from None
    except json.JSONDecodeError as exc:
        raise BadGraphQLRequest(f"Invalid JSON: {exc}", code="INVALID_JSON") from None
    except (ValueError, RecursionError):
        raise BadGraphQLRequest(
            f"Invalid JSON: {what} cannot be decoded", code="INVALID_JSON"
        ) from None


def _variables(value: Any) -> dict[str, Any] | None:
    if isinstance(value, str):
        # Some clients send the variables as JSON text even inside a JSON body.
        value = _decode_json(value, "variables") if value.strip() else None
    if value is not None and not isinstance(value, dict):
        raise BadGraphQLRequest("'variables' must be a JSON object")
    return value


def _operation_name(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise BadGraphQLRequest("'operationName' must be a string")
    return value or None


def _query(value: Any) -> str:
    if value is None or value == "":
        raise BadGraphQLRequest("Missing query parameter", code="MISSING_QUERY")
    if not isinstance(value, str):
        raise BadGraphQLRequest("'query' must be a string")
    return value


def params_from_query_string(raw_query: bytes) -> GraphQLParams:
    """``?query=&variables=&operationName=`` (``variables`` as JSON text)."""
    params = decode_query(raw_query)
    return GraphQLParams(
        query=_query(params.get("query")),
        variables=_variables(params.get("variables")),
        operation_name=_operation_name(params.get("operationName")),
    )


def params_from_body(content_type: str, body: bytes, raw_query: bytes = b"") -> GraphQLParams:
    """A POST body: JSON ``{query, variables, operationName}``, or an ``application/graphql``
    query text with ``variables`` and ``operationName`` in the query string."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == _GRAPHQL_TYPE:
        try:
            query = body.decode("utf-8")
        except UnicodeDecodeError:
            raise BadGraphQLRequest("The query is not UTF-8") from None
        params = decode_query(raw_query)
        return GraphQLParams(
            query=_query(query),
            variables=_variables(params.get("variables")),
            operation_name=_operation_name(params.get("operationName")),
        )
    if media_type not in _JSON_TYPES and not media_type.endswith("+json"):
        shown = media_type or "no content type"
        raise BadGraphQLRequest(
            "Send GraphQL requests as application/json ({query, variables, operationName}) "
            f"or as application/graphql (the query text), not {shown}",
            code="UNSUPPORTED_MEDIA_TYPE",
            status=415,
        )
    if not body.strip():
        raise BadGraphQLRequest("Missing query parameter", code="MISSING_QUERY")
    decoded = _decode_json(body, "the body")
    if isinstance(decoded, list):
        raise BadGraphQLRequest("Batched requests (a JSON array) are not supported")
    if not isinstance(decoded, dict):
        raise BadGraphQLRequest("The body must be a JSON object {query, variables, operationName}")
    return GraphQLParams(
        query=_query(decoded.get("query")),
        variables=_variables(decoded.get("variables")),
        operation_name=_operation_name(decoded.get("operationName")),
    )


def error_body(
    *,
    status: int,
    code: str,
    message: str,
    request_id: str,
    path: str,
    method: str,
    errors: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The engine's error envelope with the GraphQL ``errors`` list beside it."""
    body = error_envelope(
        status=status,
        code=code,
        message=message,
        request_id=request_id,
        path=path,
        method=method,
    )
    body["errors"] = (
        errors if errors is not None else [{"message": message, "extensions": {"code": code}}]
    )
    return body


def refusal_of(exc: Exception) -> tuple[str, str, list[dict[str, Any]] | None]:
    """``(code, message, errors)`` for an operation the service refused to start."""
    if isinstance(exc, QueryRejected):
        return "QUERY_REJECTED", str(exc), None
    if isinstance(exc, GraphQLRequestError):
        errors = list(exc.errors)
        first = str(errors[0].get("message", "")) if errors else ""
        return "GRAPHQL_REQUEST_ERROR", first or "The operation cannot run", errors
    raise TypeError(f"not a refusal: {exc!r}")


SUBSCRIPTION_OVER_HTTP: Final = (
    "Subscriptions are served on /graphql/sse (server-sent events) and /graphql/ws "
    "(graphql-transport-ws), not on /graphql"
)


MUTATION_OVER_GET: Final = "Mutations are sent with POST, not GET"


def is_mutation(params: GraphQLParams) -> bool:
    try:
        return operation_of(params.query, params.operation_name) == "mutation"
    except QueryRejected:
        return False  # execution reports what is wrong with the query


def wants_page(accept: str, raw_query: bytes) -> bool:
    """A browser navigating to ``/graphql``: ``text/html`` named with a non-zero quality (not
    merely ``*/*``, which every HTTP client sends) and no ``query`` parameter."""
    if "query" in decode_query(raw_query):
        return False
    for part in accept.split(","):
        media_type, *parameters = part.split(";")
        if media_type.strip().lower() != "text/html":
            continue
        quality = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value.strip())
                except ValueError:
                    quality = 0.0
        return quality > 0
    return False
