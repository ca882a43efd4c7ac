"""Security headers for the engine's responses, and how a script's own headers combine with them.

Engine pages get a strict Content-Security-Policy: scripts only from the engine itself (plus the
page's nonce), nothing may frame them. Other responses -- the JSON APIs and the responses of
solution scripts -- get the headers that cannot break a page (``nosniff``, a referrer policy,
no framing) and a CSP that only forbids framing, because a solution's own HTML may need inline
script; a script that sets any of these headers itself wins.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Sequence

Headers = list[tuple[str, str]]

# One year, without includeSubDomains: the engine may live on one host of a larger domain whose
# other hosts it has no business forcing onto HTTPS.
HSTS_VALUE = "max-age=31536000"
_NONCE = re.compile(r"[A-Za-z0-9+/_-]+={0,2}")  # CSP's base64-value grammar


def new_csp_nonce() -> str:
    """A fresh per-response nonce for an engine page's ``<script nonce=...>``."""
    return secrets.token_urlsafe(16)


def _engine_page_csp(nonce: str | None) -> str:
    script_src = "'self'" if nonce is None else f"'self' 'nonce-{nonce}'"
    return "; ".join(
        [
            "default-src 'self'",
            f"script-src {script_src}",
            # Engine pages carry their styles in a <style> block; injected CSS is a far smaller
            # risk than injected script, so styles stay inline-capable while script does not.
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data:",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


def security_headers(*, engine_page: bool, hsts: bool, csp_nonce: str | None = None) -> Headers:
    """The default security headers for a response.

    ``hsts`` only when the engine is served over TLS (or behind a TLS proxy): over plain HTTP
    the header is ignored at best. ``csp_nonce`` must be base64 text (see :func:`new_csp_nonce`).
    """
    if csp_nonce is not None and not _NONCE.fullmatch(csp_nonce):
        raise ValueError("a CSP nonce must be base64 text")
    csp = _engine_page_csp(csp_nonce) if engine_page else "frame-ancestors 'none'"
    headers: Headers = [
        ("Content-Security-Policy", csp),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "strict-origin-when-cross-origin"),
        ("X-Frame-Options", "DENY"),  # for browsers that predate frame-ancestors
    ]
    if hsts:
        headers.append(("Strict-Transport-Security", HSTS_VALUE))
    return headers


def merge_headers(
    script_headers: Iterable[tuple[str, str]], defaults: Sequence[tuple[str, str]]
) -> Headers:
    """The script's headers, then every default the script did not set (names compared
    case-insensitively). A script's header, including a repeated one, is never dropped."""
    script = list(script_headers)
    taken = {name.lower() for name, _ in script}
    return script + [(name, value) for name, value in defaults if name.lower() not in taken]
