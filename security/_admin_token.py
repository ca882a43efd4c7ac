"""The admin bearer token that guards ``/engine`` until user login exists.

Pure functions of their arguments: the token and the header are passed in; nothing here knows
about requests or configuration objects.
"""

from __future__ import annotations

import enum
import hmac


class TokenVerdict(enum.Enum):
    ALLOWED = "allowed"  # token valid, or no token needed
    MISSING = "missing"  # a token is required and none was sent
    INVALID = "invalid"  # a token was sent and it is wrong or malformed


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else ``None``."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    return token or None


def check_admin_token(
    authorization: str | None, *, expected: str | None, required: bool
) -> TokenVerdict:
    """Judge a request's ``Authorization`` header against the configured admin token.

    With ``required`` false (development profile) every caller is allowed, but a token that is
    sent anyway must still be right, so a misconfigured client finds out before production.
    """
    presented = bearer_token(authorization)
    if presented is None:
        if authorization and required:
            return TokenVerdict.INVALID
        return TokenVerdict.MISSING if required else TokenVerdict.ALLOWED
    if expected is None:
        return TokenVerdict.INVALID if required else TokenVerdict.ALLOWED
    # Compare digests of equal length so neither content nor length leaks through timing.
    if hmac.compare_digest(presented.encode(), expected.encode()):
        return TokenVerdict.ALLOWED
    return TokenVerdict.INVALID
