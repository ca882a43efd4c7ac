"""``fetch(url, options)``: the scripts' HTTP client, run by the engine with httpx.

The contract is the original's (UPSTREAM_API §2.6): options as JSON text (an object is
accepted too), the result as the JSON text ``{status, ok, headers, body}``, failures thrown
as ``Fetch error: ...`` (``Invalid fetch options: ...`` for options that do not parse).

What a script may reach is decided by ``security.net``.  Each hop of a request:

1. ``check_url`` refuses schemes other than http(s), ``localhost`` and every internal address
   literal, however it is spelt;
2. ``resolve_checked`` resolves the host and refuses it if *any* address is internal;
3. the connection goes to an address checked in step 2 -- the URL handed to httpx names that
   address, while the ``Host`` header and TLS (SNI and certificate verification) keep the
   original host name -- so a second DNS answer cannot swap in another address (rebinding);
4. redirects are followed here, never by httpx: at most five, each hop checked again from
   step 1, credentials and headers carrying secrets dropped when the origin changes, and
   301-303 turning other methods into a body-less GET.

Refused destinations are recorded in the audit trail.  The whole fetch, redirects included,
has one deadline: the configured timeout, the script's ``timeout_ms``, and what is left of the
invocation's own deadline (the host call runs inside the pool's cancel scope) minus a little,
so the script still has time to handle the error.  The response body is read under a size
limit, after decompression.

``{{secret:NAME}}`` anywhere in a header value is replaced by the secret (the calling user's,
else the script's; ``engine.secrets``), never in the URL or the body.  Secrets with an
allow-list of hosts go only to those hosts.  The secret values a request used are masked in
what the script gets back, and returned to the caller so it can mask the script's log.
"""

from __future__ import annotations

import codecs
import contextlib
import ipaddress
import json
import math
import re
import ssl
from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs
import httpx
import structlog
import trio

from engine import __version__
from engine.errors import HostCallError
from engine.secrets import (
    AuditHook,
    ResolvedSecret,
    SecretService,
    SecretUnreadable,
    host_allowed,
)
from security import (
    BlockedDestination,
    ParsedTarget,
    check_url,
    redact,
    redirect_method,
    redirect_target,
    resolve_checked,
    strip_credentials_on_cross_host,
)
from security.net import MAX_REDIRECTS, REDIRECT_STATUSES, IPAddress, IPNetwork, Resolver

log = structlog.get_logger("aiwebengine.fetch")

FETCH: Final = "fetch"
MiB: Final = 1024 * 1024
# Left of the invocation's deadline for the script to handle a fetch that ran out of time.
DEADLINE_MARGIN_S: Final = 0.25
MAX_URL_CHARS: Final = 8192

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_HEADER_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
SECRET_TEMPLATE: Final = re.compile(r"\{\{\s*secret:\s*([^{}]*?)\s*\}\}")
_REFUSED_METHODS = frozenset({"CONNECT", "TRACE", "TRACK"})
# Framing and connection headers belong to the engine's HTTP client, not to the script.
_ENGINE_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "trailer",
        "proxy-connection",
    }
)
_BODY_HEADERS = frozenset({"content-type", "content-encoding", "content-language"})


class FetchError(HostCallError):
    """A fetch that failed; the message is what the script's ``Error`` says."""


def _fetch_error(reason: str) -> FetchError:
    return FetchError(f"Fetch error: {reason}")


# --- options (pure) ------------------------------------------------------------------------


@attrs.frozen
class FetchOptions:
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    body: str | None = None
    timeout_ms: float | None = None


def _options_error(reason: str) -> FetchError:
    return FetchError(f"Invalid fetch options: {reason}")


def _header_text(name: str, value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float) and math.isfinite(value):
        return str(value)
    raise _options_error(f"header '{name}' must be a string")


def parse_options(raw: Any) -> FetchOptions:
    """Options from a script: JSON text, an object, or nothing.  Unknown keys are ignored.

    Raises :class:`FetchError` -- ``Invalid fetch options: ...`` for a shape that is wrong,
    ``Fetch error: ...`` for a method or header that cannot be sent.
    """
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return FetchOptions()
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise _options_error(f"not valid JSON ({exc})") from None
    if not isinstance(raw, Mapping):
        raise _options_error("must be a JSON object")
    method = raw.get("method")
    if method is None:
        method = "GET"
    if not isinstance(method, str):
        raise _options_error("method must be a string")
    method = method.strip().upper()
    if not _TOKEN.fullmatch(method) or method in _REFUSED_METHODS:
        raise _fetch_error(f"Invalid method '{method[:32]}'")
    headers: list[tuple[str, str]] = []
    raw_headers = raw.get("headers")
    if raw_headers is not None:
        if not isinstance(raw_headers, Mapping):
            raise _options_error("headers must be an object of names and values")
        for name, value in raw_headers.items():
            if value is None:
                continue
            if not isinstance(name, str) or not _TOKEN.fullmatch(name):
                raise _fetch_error(f"Invalid header name '{str(name)[:64]}'")
            text = _header_text(name, value)
            if _BAD_HEADER_VALUE.search(text):
                raise _fetch_error(f"Invalid value for header '{name}'")
            if name.lower() not in _ENGINE_HEADERS:
                headers.append((name, text))
    body = raw.get("body")
    if body is not None and not isinstance(body, str):
        body = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    timeout = raw.get("timeout_ms")
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise _options_error("timeout_ms must be a number of milliseconds")
        if not (timeout > 0 and math.isfinite(timeout)):
            raise _options_error("timeout_ms must be greater than 0")
        timeout = float(timeout)
    return FetchOptions(method, tuple(headers), body, timeout)


def secret_names(headers: Sequence[tuple[str, str]]) -> list[str]:
    """The names of the secrets ``headers`` refer to, each once, in order."""
    names = (match.group(1) for _, value in headers for match in SECRET_TEMPLATE.finditer(value))
    return list(dict.fromkeys(names))


def fill_secrets(
    headers: Sequence[tuple[str, str]], values: Mapping[str, str]
) -> tuple[tuple[str, str], ...]:
    """``headers`` with every ``{{secret:NAME}}`` replaced by ``values[NAME]``."""
    return tuple(
        (name, SECRET_TEMPLATE.sub(lambda match: values[match.group(1)], value))
        for name, value in headers
    )


def _well_formed(text: str) -> str:
    """Lone surrogates (possible in text that came through JSON) become U+FFFD."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


# --- the service ---------------------------------------------------------------------------


@attrs.frozen
class FetchSettings:
    timeout_s: float = 30.0
    max_response_bytes: int = 10 * MiB
    allow_networks: tuple[IPNetwork, ...] = ()
    user_agent: str = f"aiwebengine/{__version__}"


@attrs.frozen
class FetchOutcome:
    """The JSON text the script gets, and the secret values the request carried."""

    text: str
    secrets: tuple[str, ...] = attrs.field(default=(), repr=False)


@attrs.frozen
class _Caller:
    script_uri: str
    user_id: str | None
    request_id: str | None


@attrs.frozen
class _Reply:
    status: int
    headers: dict[str, str]
    location: str | None
    body: bytes
    charset: str | None


class FetchService:
    """Runs scripts' fetches.  ``resolver`` and ``ssl_context`` are for tests."""

    def __init__(
        self,
        settings: FetchSettings,
        *,
        secrets: SecretService | None = None,
        audit: AuditHook | None = None,
        resolver: Resolver | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.settings = settings
        self._secrets = secrets
        self._audit = audit
        self._resolver = resolver
        # One context for every fetch: building one reads the CA bundle (milliseconds).
        self._ssl = ssl_context if ssl_context is not None else httpx.create_ssl_context()

    async def call(
        self,
        args: list[Any],
        *,
        script_uri: str,
        user_id: str | None = None,
        request_id: str | None = None,
    ) -> FetchOutcome:
        """The host call ``fetch(url, options)``; raises :class:`FetchError`."""
        url = args[0] if args else None
        options = parse_options(args[1] if len(args) > 1 else None)
        if not isinstance(url, str) or not url.strip():
            raise _fetch_error("Invalid URL: the URL must be a non-empty string")
        if len(url) > MAX_URL_CHARS:
            raise _fetch_error(f"Invalid URL: longer than {MAX_URL_CHARS} characters")
        caller = _Caller(script_uri, user_id, request_id)
        timeout_s = self._timeout_s(options)
        if timeout_s <= 0:
            raise _fetch_error("Request failed: no time left before the handler's deadline")
        with trio.move_on_after(timeout_s) as scope:
            return await self._fetch(url.strip(), options, caller)
        assert scope.cancelled_caught
        raise _fetch_error(f"Request failed: timed out after {round(timeout_s * 1000)} ms")

    def _timeout_s(self, options: FetchOptions) -> float:
        timeout = self.settings.timeout_s
        if options.timeout_ms is not None:
            timeout = min(timeout, options.timeout_ms / 1000)
        # -inf when the invocation is already cancelled: nothing left.
        remaining = trio.current_effective_deadline() - trio.current_time()
        if remaining <= 0:
            return 0.0
        return min(timeout, remaining - min(DEADLINE_MARGIN_S, remaining * 0.1))

    async def _fetch(self, url: str, options: FetchOptions, caller: _Caller) -> FetchOutcome:
        method, body, templates = options.method, options.body, options.headers
        resolved: dict[str, ResolvedSecret] = {}
        used: dict[str, str] = {}
        previous: str | None = None
        for hop in range(MAX_REDIRECTS + 1):
            target = await self._check(url, caller, previous)
            addresses = await self._resolve(target, caller, previous)
            headers = await self._headers(templates, target, caller, resolved, used)
            reply = await self._send(target, addresses, method, headers, body)
            if reply.location is None:
                values = tuple(used.values())
                return FetchOutcome(self._result(reply, values), values)
            if hop == MAX_REDIRECTS:
                break
            try:
                following = redirect_target(target.url, reply.location)
            except BlockedDestination as exc:
                raise _fetch_error(f"Invalid redirect: {exc.reason}") from None
            next_method = redirect_method(reply.status, method)
            if next_method != method:
                body = None
                templates = tuple(h for h in templates if h[0].lower() not in _BODY_HEADERS)
            templates = _next_hop_headers(templates, target.url, following)
            method, previous, url = next_method, target.url, following
        raise _fetch_error(f"Too many redirects (more than {MAX_REDIRECTS})")

    async def _check(self, url: str, caller: _Caller, previous: str | None) -> ParsedTarget:
        try:
            return check_url(url, allow=self.settings.allow_networks)
        except BlockedDestination as exc:
            if exc.reason.startswith("invalid URL"):
                raise _fetch_error(f"Invalid URL: {exc.reason.partition(': ')[2]}") from None
            await self._blocked(url, exc.reason, caller, previous)
            raise _blocked_error(exc.reason, previous) from None

    async def _resolve(
        self, target: ParsedTarget, caller: _Caller, previous: str | None
    ) -> list[IPAddress]:
        options: dict[str, Any] = {"allow": self.settings.allow_networks}
        if self._resolver is not None:
            options["resolver"] = self._resolver
        try:
            return await resolve_checked(target.host, target.port, **options)
        except BlockedDestination as exc:
            await self._blocked(target.url, exc.reason, caller, previous)
            raise _blocked_error(exc.reason, previous) from None
        except OSError:
            raise _fetch_error(f"Request failed: cannot resolve host '{target.host}'") from None

    async def _headers(
        self,
        templates: tuple[tuple[str, str], ...],
        target: ParsedTarget,
        caller: _Caller,
        resolved: dict[str, ResolvedSecret],
        used: dict[str, str],
    ) -> tuple[tuple[str, str], ...]:
        names = secret_names(templates)
        if not names:
            return templates
        values: dict[str, str] = {}
        for name in names:
            secret = resolved.get(name)
            if secret is None:
                secret = await self._open(name, caller)
                resolved[name] = secret
            if not host_allowed(secret.allowed_hosts, target.host):
                raise _fetch_error(
                    f"Secret '{name}' may not be sent to host '{target.host}' (it is allowed "
                    f"for: {', '.join(secret.allowed_hosts or ())})"
                )
            if _BAD_HEADER_VALUE.search(secret.value):
                raise _fetch_error(
                    f"Secret '{name}' cannot be sent in a header: it contains line breaks "
                    "or control characters"
                )
            values[name] = used[name] = secret.value
        return fill_secrets(templates, values)

    async def _open(self, name: str, caller: _Caller) -> ResolvedSecret:
        secret: ResolvedSecret | None = None
        if self._secrets is not None and name:
            try:
                secret = await self._secrets.resolve(caller.script_uri, caller.user_id, name)
            except SecretUnreadable as exc:
                raise _fetch_error(str(exc)) from None
        if secret is None:
            raise _fetch_error(f"Secret not found: {name}")
        return secret

    async def _send(
        self,
        target: ParsedTarget,
        addresses: Sequence[IPAddress],
        method: str,
        headers: tuple[tuple[str, str], ...],
        body: str | None,
    ) -> _Reply:
        """One request to one of the checked addresses (the next one if connecting fails)."""
        content = None if body is None else _well_formed(body).encode("utf-8")
        wire_headers = [("Host", target.host_header)]
        wire_headers += [(name, _well_formed(value)) for name, value in headers]
        encoded = [(name.encode("ascii"), value.encode("utf-8")) for name, value in wire_headers]
        # SNI and certificate verification for the name, while connecting to the address.
        extensions = {"sni_hostname": target.host} if target.ip is None else {}
        failure: Exception | None = None
        for address in addresses:
            # A client per hop: a pooled connection verified for one name must not carry a
            # request for another name that happens to share the address.
            async with httpx.AsyncClient(
                verify=self._ssl,
                trust_env=False,  # a proxy from the environment would bypass the checks above
                follow_redirects=False,
                # Per operation; the whole fetch also runs under one deadline (call()).
                timeout=self.settings.timeout_s,
                headers={"User-Agent": self.settings.user_agent},
            ) as client:
                request = client.build_request(
                    method,
                    _address_url(target, address),
                    headers=encoded,
                    content=content,
                    extensions=extensions,
                )
                try:
                    response = await client.send(request, stream=True)
                except httpx.ConnectError as exc:
                    failure = exc
                    continue
                except httpx.HTTPError as exc:
                    raise _request_failed(exc) from None
                try:
                    return await self._read(response)
                except httpx.HTTPError as exc:
                    raise _request_failed(exc) from None
                finally:
                    await response.aclose()
        assert failure is not None
        raise _request_failed(failure)

    async def _read(self, response: httpx.Response) -> _Reply:
        headers = {name.lower(): value for name, value in response.headers.items()}
        location = response.headers.get("location")
        if response.status_code in REDIRECT_STATUSES and location is not None:
            return _Reply(response.status_code, headers, location, b"", None)
        limit = self.settings.max_response_bytes
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > limit:
                raise _fetch_error(f"Response too large (more than {limit} bytes)")
        return _Reply(response.status_code, headers, None, bytes(body), response.charset_encoding)

    def _result(self, reply: _Reply, secrets: Sequence[str]) -> str:
        encoding = "utf-8"
        if reply.charset is not None:
            # An unknown charset is read as UTF-8, as the original did.
            with contextlib.suppress(LookupError):
                encoding = codecs.lookup(reply.charset).name
        try:
            text = reply.body.decode(encoding)
        except UnicodeDecodeError:
            raise _fetch_error(
                f"Response encoding error: the body is not valid {encoding} text"
            ) from None
        # A server that echoes a request back must not reveal the secrets the request carried.
        result = {
            "status": reply.status,
            "headers": {name: redact(value, secrets) for name, value in reply.headers.items()},
            "body": redact(text, secrets),
            "ok": 200 <= reply.status < 300,
        }
        return json.dumps(result, ensure_ascii=False, separators=(",", ":"))

    async def _blocked(self, url: str, reason: str, caller: _Caller, previous: str | None) -> None:
        log.info("fetch refused", script=caller.script_uri, reason=reason)
        if self._audit is None:
            return
        detail: dict[str, Any] = {"script": caller.script_uri, "reason": reason}
        if previous is not None:
            detail["redirected_from"] = previous[:2048]
        event = {
            "action": "fetch.blocked",
            "outcome": "denied",
            "actor": caller.user_id or "anonymous",
            "target": url[:2048],
            "request_id": caller.request_id,
            "detail": detail,
        }
        try:
            with trio.CancelScope(shield=True):
                await self._audit(event)
        except Exception:  # the refusal stands even if it cannot be recorded
            log.exception("audit of a refused fetch failed", script=caller.script_uri)


def _blocked_error(reason: str, previous: str | None) -> FetchError:
    where = " (reached by a redirect)" if previous is not None else ""
    return _fetch_error(f"Blocked URL{where}: {reason}")


def _request_failed(exc: Exception) -> FetchError:
    if isinstance(exc, httpx.TimeoutException):
        return _fetch_error("Request failed: timed out")
    return _fetch_error(f"Request failed: {_describe(exc)}")


def _describe(exc: BaseException) -> str:
    """The first cause with something to say (httpx wraps TLS and socket errors silently)."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            break
        if isinstance(seen, ssl.SSLCertVerificationError):
            return f"TLS certificate verification failed ({seen.verify_message})"
        text = str(seen)
        if text:
            return text
        seen = seen.__cause__ or seen.__context__
    return type(exc).__name__


def _address_url(target: ParsedTarget, address: IPAddress) -> str:
    host = f"[{address}]" if isinstance(address, ipaddress.IPv6Address) else str(address)
    return f"{target.scheme}://{host}:{target.port}{target.target}"


def _same_origin(from_url: str, to_url: str) -> bool:
    """Whether credentials may follow a redirect, by the rule of
    ``strip_credentials_on_cross_host`` (same origin, or an upgrade from http to https)."""
    probe = {"authorization": ""}
    return "authorization" in strip_credentials_on_cross_host(probe, from_url, to_url)


def _next_hop_headers(
    templates: tuple[tuple[str, str], ...], from_url: str, to_url: str
) -> tuple[tuple[str, str], ...]:
    """The headers of the next hop: on another origin, no credentials and no header that
    carries a secret, whatever its name."""
    if _same_origin(from_url, to_url):
        return templates
    kept = strip_credentials_on_cross_host(dict(templates), from_url, to_url)
    return tuple((name, value) for name, value in kept.items() if not SECRET_TEMPLATE.search(value))


__all__ = [
    "FETCH",
    "FetchError",
    "FetchOptions",
    "FetchOutcome",
    "FetchService",
    "FetchSettings",
    "fill_secrets",
    "parse_options",
    "secret_names",
]
