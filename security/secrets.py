"""Secrets at rest: AES-256-GCM sealing bound to where the value lives, key rotation, masking.

A sealed value is ``version (1 byte) || nonce (12 random bytes) || ciphertext+tag``. The caller
passes a *context* (for instance :func:`secret_context` of the script URI and the key name) that
is authenticated with the value but not stored: a ciphertext copied to another row, script or
user no longer opens. Keys are 32 random bytes, configured as base64url or hex text.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Iterable, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12  # the GCM standard nonce; random nonces are safe for far more than 2**32 seals
_VERSION = b"\x01"
_TAG_BYTES = 16
MASK = "********"


class SecretError(Exception):
    """A sealed value that cannot be opened: tampered, truncated, wrong key or wrong context.

    The message never says which, and never contains key or value material.
    """


class SecretKeyError(ValueError):
    """Configured key text that is not a usable key."""


def generate_key_text() -> str:
    """A fresh key as unpadded base64url text, ready for the configuration."""
    return base64.urlsafe_b64encode(os.urandom(KEY_BYTES)).rstrip(b"=").decode("ascii")


_HEX = re.compile(r"[0-9A-Fa-f]{64}")
_BASE64 = re.compile(r"[A-Za-z0-9+/_-]+={0,2}")


def key_from_text(text: str) -> bytes:
    """Decode a configured key: 64 hex digits or base64/base64url (padding optional)."""
    text = text.strip()
    key: bytes | None = None
    if _HEX.fullmatch(text):
        key = bytes.fromhex(text)
    elif _BASE64.fullmatch(text):
        unpadded = text.rstrip("=")
        try:
            key = base64.urlsafe_b64decode(
                unpadded.replace("+", "-").replace("/", "_") + "=" * (-len(unpadded) % 4)
            )
        except (binascii.Error, ValueError):
            key = None
    if key is None or len(key) != KEY_BYTES:
        raise SecretKeyError(
            f"the secret encryption key must be {KEY_BYTES} bytes written as base64url "
            f"(43 characters) or hex (64 digits); generate one with "
            f"`python -c 'from security.secrets import generate_key_text; "
            f"print(generate_key_text())'`"
        )
    if key == bytes(KEY_BYTES):
        raise SecretKeyError("the secret encryption key is all zeros; generate a random one")
    return key


def secret_context(*parts: str) -> bytes:
    """An unambiguous context from several names (``("script", uri, key)``...).

    Each part is length-prefixed, so ``("a:b", "c")`` and ``("a", "b:c")`` differ.
    """
    out = bytearray()
    for part in parts:
        data = part.encode("utf-8")
        out += len(data).to_bytes(4, "big") + data
    return bytes(out)


class SecretBox:
    """Seals with the current key; opens with the current or any of ``old_keys``."""

    def __init__(self, key: bytes, *, old_keys: Sequence[bytes] = ()) -> None:
        for candidate in (key, *old_keys):
            if len(candidate) != KEY_BYTES:
                raise SecretKeyError(f"a secret encryption key must be {KEY_BYTES} bytes")
        self._current = AESGCM(key)
        self._all = [self._current, *(AESGCM(old) for old in old_keys)]

    def seal(self, plaintext: bytes, *, context: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        # The version byte is authenticated too, so it cannot be edited to reinterpret a value.
        return _VERSION + nonce + self._current.encrypt(nonce, plaintext, _VERSION + context)

    def open(self, sealed: bytes, *, context: bytes) -> bytes:
        return self._open(sealed, context)[0]

    def reseal(self, sealed: bytes, *, context: bytes) -> bytes | None:
        """The value sealed with the current key, or ``None`` if it already is (for rotation)."""
        plaintext, cipher = self._open(sealed, context)
        return None if cipher is self._current else self.seal(plaintext, context=context)

    def _open(self, sealed: bytes, context: bytes) -> tuple[bytes, AESGCM]:
        if len(sealed) < 1 + NONCE_BYTES + _TAG_BYTES or sealed[:1] != _VERSION:
            raise SecretError("sealed secret is malformed")
        nonce, body = sealed[1 : 1 + NONCE_BYTES], sealed[1 + NONCE_BYTES :]
        for cipher in self._all:
            try:
                return cipher.decrypt(nonce, body, _VERSION + context), cipher
            except InvalidTag:
                continue
        raise SecretError("sealed secret does not open with the configured keys and context")


def redact(text: str, secrets: Iterable[str], mask: str = MASK) -> str:
    """``text`` with every occurrence of every (non-empty) secret replaced by ``mask``.

    Longer secrets are matched first, so a secret that contains another is masked whole. Only
    literal occurrences are found, not encodings of a secret (base64, URL-escaped...).
    """
    needles = sorted({secret for secret in secrets if secret}, key=len, reverse=True)
    if not needles:
        return text
    pattern = re.compile("|".join(map(re.escape, needles)))
    return pattern.sub(mask, text)
