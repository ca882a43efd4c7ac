"""Secrets scripts use without ever reading them: sealed at rest, injected by ``fetch``.

Two kinds, as in the original engine (UPSTREAM_API §2.5): a script's own secrets, written by
its owners and administrators over ``/engine/secrets``, and secrets a script stores for the
user it runs for (``secretStorage``).  No API returns a value; the only reader is
:meth:`SecretService.resolve`, which ``engine.fetch`` calls to fill ``{{secret:NAME}}`` in an
outgoing header.  A secret may carry an allow-list of hosts and is then injected only into
requests to those hosts.

Values are sealed with AES-256-GCM (``security.SecretBox``) under a context naming their row
-- scope, script, user and key -- so a ciphertext moved to another row no longer opens.  The
key comes from the configuration; development without one uses a key generated once and kept
in the data directory (:func:`load_secret_box`), so secrets survive restarts.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Final

import attrs
import structlog

from engine.config import Config
from engine.errors import HostCallError, StorageUnavailable, ValidationError
from engine.logs import now_ms
from engine.storage import SecretOwner, SecretRepository, StoredSecret
from security import (
    SecretBox,
    SecretError,
    SecretKeyError,
    generate_key_text,
    key_from_text,
    parse_host_literal,
    secret_context,
)

log = structlog.get_logger("aiwebengine.secrets")

DEVELOPMENT_KEY_FILE: Final = "secret_encryption_key"
MAX_VALUE_BYTES: Final = 1_000_000
MAX_KEY_CHARS: Final = 256
MAX_ALLOWED_HOSTS: Final = 64

# secretStorage's answers are the original's strings: scripts compare them.
SET_OK: Final = "Secret set successfully"
CLEARED: Final = "Secrets cleared successfully"
NEEDS_LOGIN: Final = "Error: Secret storage requires authentication. Please log in."
METHODS: Final = frozenset(
    f"secretStorage.{method}" for method in ("exists", "setSecret", "removeSecret", "clear")
)

# What a security event looks like to the audit trail (engine.audit): action, outcome, actor,
# target, request_id and a JSON-able detail.
AuditHook = Callable[[dict[str, Any]], Awaitable[None]]


# --- the key -----------------------------------------------------------------------------


def load_secret_box(config: Config) -> SecretBox:
    """The box sealing this engine's secrets (blocking: it may read or create a file).

    The configured key if there is one.  Production always has one (the configuration refuses
    to load without it); development otherwise uses ``<data_dir>/secret_encryption_key``,
    created on first use with mode 0600.
    """
    configured = config.security.secret_encryption_key
    if configured is not None:
        return SecretBox(key_from_text(configured.reveal()))
    if config.is_production:  # pragma: no cover - load_config refuses this configuration
        raise SecretKeyError("production requires security.secret_encryption_key")
    return SecretBox(development_key(config.server.data_dir))


def development_key(data_dir: Path) -> bytes:
    """The development key kept in ``data_dir``, generated the first time.

    Written to a private temporary file and linked into place, so two engines starting on the
    same directory agree on one key and neither ever reads a half-written file.
    """
    path = data_dir / DEVELOPMENT_KEY_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        descriptor, temporary = tempfile.mkstemp(dir=data_dir, prefix=".secret-key-")
        try:
            with os.fdopen(descriptor, "w", encoding="ascii") as file:  # mkstemp: mode 0600
                file.write(generate_key_text() + "\n")
                file.flush()
                os.fsync(file.fileno())
            try:
                os.link(temporary, path)
                log.warning(
                    "generated a secret encryption key for development; configure "
                    "AIWEBENGINE_SECURITY__SECRET_ENCRYPTION_KEY before secrets matter",
                    path=str(path),
                )
            except FileExistsError:
                pass  # another process won the race; its key is the one
        finally:
            os.unlink(temporary)
    if path.stat().st_mode & 0o077:
        log.warning("the development secret key file is readable by others", path=str(path))
    try:
        return key_from_text(path.read_text(encoding="ascii"))
    except (SecretKeyError, UnicodeDecodeError):
        raise SecretKeyError(
            f"{path} does not hold a usable key; remove it to generate a new one "
            "(secrets sealed with the old key are lost)"
        ) from None


# --- rules on keys, values and host allow-lists (pure) ------------------------------------

_KEY_FORBIDDEN = re.compile(r"[{}\x00-\x1f\x7f]")
_HOST_LABEL = r"(?!-)[a-z0-9_-]{1,63}(?<!-)"
_HOST_NAME = re.compile(rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*")


def key_problem(key: str) -> str | None:
    """Why ``key`` (already trimmed) cannot name a secret, in the original's words where it
    had them; ``None`` if it can."""
    if not key:
        return "Key cannot be empty"
    if len(key) > MAX_KEY_CHARS:
        return f"Key too long (>{MAX_KEY_CHARS} characters)"
    if _KEY_FORBIDDEN.search(key):
        # A name with braces could never be written inside {{secret:...}}.
        return "Key must not contain '{', '}' or control characters"
    return None


def value_problem(value: str) -> str | None:
    if len(value.encode("utf-8", "surrogatepass")) > MAX_VALUE_BYTES:
        return "Value too large (>1MB)"
    return None


def host_pattern(entry: str) -> str:
    """One allow-list entry, normalised: a host name, ``*.`` and a domain (its subdomains), or
    an IP address.  Raises ``ValueError`` naming the entry."""
    text = entry.strip().lower().rstrip(".")
    address = parse_host_literal(text) if text else None
    if address is not None:  # every spelling of an address, as check_url reads it
        return str(address)
    name = text[2:] if text.startswith("*.") else text
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError(f"'{entry}' is not a host name") from None
    if len(name) > 253 or not _HOST_NAME.fullmatch(name):
        raise ValueError(f"'{entry}' is not a host name, '*.' and a domain, or an IP address")
    return f"*.{name}" if text.startswith("*.") else name


def parse_allowed_hosts(value: Any) -> tuple[str, ...] | None:
    """An allow-list from outside: ``None`` (any host), a list of entries or comma-separated
    text.  Raises ``ValueError`` with the rule it breaks."""
    if value is None:
        return None
    if isinstance(value, str):
        entries = [part for part in value.split(",") if part.strip()]
    elif isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        entries = list(value)
    else:
        raise ValueError("must be a list of host names or comma-separated text")
    if not entries:
        raise ValueError("must name at least one host (leave it out to allow any host)")
    if len(entries) > MAX_ALLOWED_HOSTS:
        raise ValueError(f"must name at most {MAX_ALLOWED_HOSTS} hosts")
    return tuple(dict.fromkeys(host_pattern(entry) for entry in entries))


def host_allowed(patterns: Sequence[str] | None, host: str) -> bool:
    """May a secret with this allow-list go to ``host`` (lowercase, as ``check_url`` gives
    it)?  ``*.example.com`` covers every subdomain of example.com, not example.com itself."""
    if patterns is None:
        return True
    for pattern in patterns:
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]):
                return True
        elif host == pattern:
            return True
    return False


# --- the service -------------------------------------------------------------------------


@attrs.frozen
class SecretInfo:
    """What may be known about a secret: everything but its value."""

    key: str
    allowed_hosts: tuple[str, ...] | None
    created_at: int
    updated_at: int

    def to_json(self) -> dict[str, Any]:
        hosts = None if self.allowed_hosts is None else list(self.allowed_hosts)
        return {
            "key": self.key,
            "allowedHosts": hosts,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        }


@attrs.frozen
class ResolvedSecret:
    """A secret opened for injection into one request; only ``engine.fetch`` sees these."""

    name: str
    value: str = attrs.field(repr=False)
    allowed_hosts: tuple[str, ...] | None
    scope: str  # "user" or "script"


class SecretUnreadable(Exception):
    """A stored secret that does not open with the configured key (the key changed)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"Secret '{name}' cannot be opened with the configured key")
        self.name = name


def _context(owner: SecretOwner, key: str) -> bytes:
    if owner.user_id is None:
        return secret_context("script", owner.script_uri, key)
    return secret_context("user", owner.script_uri, owner.user_id, key)


def secret_target(owner: SecretOwner, key: str | None) -> str:
    """How a secret (or all of an owner's, ``key`` ``None``) is named in the audit trail."""
    who = owner.script_uri if owner.user_id is None else f"{owner.script_uri} user {owner.user_id}"
    return who if key is None else f"{who} secret {key}"


class SecretService:
    """Writes, lists and resolves secrets; never hands a value to anything but ``fetch``."""

    def __init__(self, repository: SecretRepository, box: SecretBox) -> None:
        self._repository = repository
        self._box = box

    async def set(
        self,
        owner: SecretOwner,
        key: str,
        value: str,
        allowed_hosts: tuple[str, ...] | None = None,
    ) -> bool:
        """Seal and store; True when the key is new.  Raises ``ValidationError`` naming the
        field (``key`` or ``value``) with the original's wording of the rule."""
        key = key.strip()
        problem = key_problem(key)
        if problem is not None:
            raise ValidationError("key", problem)
        problem = value_problem(value)
        if problem is not None:
            raise ValidationError("value", problem)
        plaintext = value.encode("utf-8", "surrogatepass")
        sealed = self._box.seal(plaintext, context=_context(owner, key))
        return await self._repository.put(owner, key, sealed, allowed_hosts, now_ms())

    async def delete(self, owner: SecretOwner, key: str) -> bool:
        return await self._repository.remove(owner, key.strip())

    async def clear(self, owner: SecretOwner) -> int:
        return await self._repository.clear(owner)

    async def list(self, owner: SecretOwner) -> list[SecretInfo]:
        return [_info(stored) for stored in await self._repository.list(owner)]

    async def exists(self, owner: SecretOwner, key: str) -> bool:
        return await self._repository.get(owner, key.strip()) is not None

    async def resolve(
        self, script_uri: str, user_id: str | None, name: str
    ) -> ResolvedSecret | None:
        """The secret ``name`` for a request made by ``script_uri`` for ``user_id``: the
        user's own if there is one, else the script's.  Raises :class:`SecretUnreadable`."""
        owners = [SecretOwner(script_uri, user_id)] if user_id is not None else []
        owners.append(SecretOwner(script_uri))
        for owner in owners:
            stored = await self._repository.get(owner, name)
            if stored is None:
                continue
            try:
                value = self._box.open(stored.sealed, context=_context(owner, name))
            except SecretError:
                raise SecretUnreadable(name) from None
            text = value.decode("utf-8", "surrogatepass")
            return ResolvedSecret(name, text, stored.allowed_hosts, owner.scope)
        return None


def _info(stored: StoredSecret) -> SecretInfo:
    return SecretInfo(stored.key, stored.allowed_hosts, stored.created_at, stored.updated_at)


# --- secretStorage: the scripts' side ------------------------------------------------------


def _text(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)


class SecretHostApi:
    """``secretStorage``: user-level secrets of the calling user, in the calling script.

    Anonymous callers get the original's refusals; ``exists`` then sees script-level secrets
    only.  Writes and deletes are security events, reported to ``audit``.
    """

    def __init__(self, service: SecretService, *, audit: AuditHook | None = None) -> None:
        self._service = service
        self._audit = audit

    async def call(
        self,
        name: str,
        args: list[Any],
        *,
        script_uri: str,
        user_id: str | None,
        request_id: str | None = None,
    ) -> Any:
        method = name.partition(".")[2]
        try:
            return await self._dispatch(method, args, script_uri, user_id, request_id)
        except StorageUnavailable:
            raise HostCallError(f"{name}: storage is unavailable, try again later") from None

    async def _dispatch(
        self,
        method: str,
        args: list[Any],
        script_uri: str,
        user_id: str | None,
        request_id: str | None,
    ) -> Any:
        service = self._service
        key = _text(args[0] if args else None).strip()
        if method == "exists":
            if not key:
                return False
            if user_id is not None and await service.exists(SecretOwner(script_uri, user_id), key):
                return True
            return await service.exists(SecretOwner(script_uri), key)
        if user_id is None:
            return False if method == "removeSecret" else NEEDS_LOGIN
        owner = SecretOwner(script_uri, user_id)
        if method == "removeSecret":
            removed = bool(key) and await service.delete(owner, key)
            if removed:
                await self._record("secret.delete", owner, key, request_id)
            return removed
        if method == "clear":
            await service.clear(owner)
            await self._record("secret.clear", owner, None, request_id)
            return CLEARED
        if method == "setSecret":
            value = _text(args[1] if len(args) > 1 else None)
            try:
                hosts = parse_allowed_hosts(args[2] if len(args) > 2 else None)
            except ValueError as exc:
                return f"Error: allowedHosts {exc}"
            try:
                await service.set(owner, key, value, hosts)
            except ValidationError as exc:
                return f"Error: {exc.rule}"
            await self._record("secret.set", owner, key, request_id)
            return SET_OK
        raise HostCallError(f"secretStorage.{method} is not a secretStorage method")

    async def _record(
        self, action: str, owner: SecretOwner, key: str | None, request_id: str | None
    ) -> None:
        if self._audit is None:
            return
        event = {
            "action": action,
            "outcome": "allowed",
            "actor": owner.user_id,
            "target": secret_target(owner, key),
            "request_id": request_id,
            "detail": {"via": "secretStorage"},
        }
        try:
            await self._audit(event)
        except Exception:  # the change is made; a failing audit trail must not undo the answer
            log.exception("audit of a secret change failed", action=action)


__all__ = [
    "CLEARED",
    "DEVELOPMENT_KEY_FILE",
    "METHODS",
    "NEEDS_LOGIN",
    "SET_OK",
    "AuditHook",
    "ResolvedSecret",
    "SecretHostApi",
    "SecretInfo",
    "SecretService",
    "SecretUnreadable",
    "development_key",
    "host_allowed",
    "host_pattern",
    "key_problem",
    "load_secret_box",
    "parse_allowed_hosts",
    "secret_target",
    "value_problem",
]
