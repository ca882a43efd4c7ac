"""Sealed secrets: AES-256-GCM bound to a context, key text, rotation, and masking in logs."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from security import (
    SecretBox,
    SecretError,
    SecretKeyError,
    generate_key_text,
    key_from_text,
    redact,
    secret_context,
)
from security.secrets import KEY_BYTES, MASK, NONCE_BYTES

KEY = bytes(range(1, 33))
OTHER_KEY = bytes(range(101, 133))
CONTEXT = secret_context("script", "https://example.com/app", "API_TOKEN")


def test_a_sealed_value_opens_to_itself() -> None:
    box = SecretBox(KEY)
    sealed = box.seal(b"hunter2", context=CONTEXT)
    assert box.open(sealed, context=CONTEXT) == b"hunter2"
    assert b"hunter2" not in sealed


def test_the_layout_is_version_nonce_ciphertext_and_tag() -> None:
    sealed = SecretBox(KEY).seal(b"abc", context=CONTEXT)
    assert sealed[0] == 1
    assert len(sealed) == 1 + NONCE_BYTES + 3 + 16


def test_every_seal_uses_a_fresh_nonce() -> None:
    box = SecretBox(KEY)
    sealed = {box.seal(b"same", context=CONTEXT) for _ in range(20)}
    assert len(sealed) == 20
    assert len({value[1 : 1 + NONCE_BYTES] for value in sealed}) == 20


def test_a_value_moved_to_another_row_does_not_open() -> None:
    box = SecretBox(KEY)
    sealed = box.seal(b"v", context=secret_context("script", "a", "K"))
    for other in (
        secret_context("script", "b", "K"),
        secret_context("script", "a", "K2"),
        secret_context("user", "a", "K"),
        b"",
    ):
        with pytest.raises(SecretError):
            box.open(sealed, context=other)


def test_another_key_does_not_open() -> None:
    sealed = SecretBox(KEY).seal(b"v", context=CONTEXT)
    with pytest.raises(SecretError, match="does not open"):
        SecretBox(OTHER_KEY).open(sealed, context=CONTEXT)


@pytest.mark.parametrize(
    "sealed",
    [b"", b"\x01", b"\x01" + bytes(NONCE_BYTES + 15), b"\x02" + bytes(NONCE_BYTES + 16)],
)
def test_malformed_values_are_refused(sealed: bytes) -> None:
    with pytest.raises(SecretError, match="malformed"):
        SecretBox(KEY).open(sealed, context=CONTEXT)


def test_the_version_byte_is_authenticated() -> None:
    sealed = SecretBox(KEY).seal(b"v", context=CONTEXT)
    # A future version number over the same bytes must not open as version 1 would.
    box = SecretBox(KEY)
    with pytest.raises(SecretError):
        box.open(b"\x02" + sealed[1:], context=CONTEXT)


@given(plaintext=st.binary(max_size=200), position=st.data())
def test_flipping_any_bit_is_detected(plaintext: bytes, position: st.DataObject) -> None:
    box = SecretBox(KEY)
    sealed = bytearray(box.seal(plaintext, context=CONTEXT))
    index = position.draw(st.integers(0, len(sealed) - 1))
    bit = position.draw(st.integers(0, 7))
    sealed[index] ^= 1 << bit
    with pytest.raises(SecretError):
        box.open(bytes(sealed), context=CONTEXT)


@given(st.binary(max_size=300), st.binary(max_size=40))
def test_any_value_round_trips_in_any_context(plaintext: bytes, context: bytes) -> None:
    box = SecretBox(KEY)
    assert box.open(box.seal(plaintext, context=context), context=context) == plaintext


@given(st.binary(max_size=80))
def test_random_bytes_never_open_and_never_raise_anything_else(data: bytes) -> None:
    with pytest.raises(SecretError):
        SecretBox(KEY).open(data, context=CONTEXT)


# --- rotation --------------------------------------------------------------------------------


def test_old_keys_still_open_and_new_seals_use_the_current_key() -> None:
    old = SecretBox(OTHER_KEY).seal(b"old", context=CONTEXT)
    rotated = SecretBox(KEY, old_keys=[OTHER_KEY])
    assert rotated.open(old, context=CONTEXT) == b"old"
    fresh = rotated.seal(b"new", context=CONTEXT)
    assert SecretBox(KEY).open(fresh, context=CONTEXT) == b"new"
    with pytest.raises(SecretError):
        SecretBox(OTHER_KEY).open(fresh, context=CONTEXT)


def test_reseal_moves_a_value_to_the_current_key_once() -> None:
    rotated = SecretBox(KEY, old_keys=[OTHER_KEY])
    old = SecretBox(OTHER_KEY).seal(b"v", context=CONTEXT)
    resealed = rotated.reseal(old, context=CONTEXT)
    assert resealed is not None
    assert SecretBox(KEY).open(resealed, context=CONTEXT) == b"v"
    assert rotated.reseal(resealed, context=CONTEXT) is None
    with pytest.raises(SecretError):
        rotated.reseal(old, context=b"elsewhere")


@pytest.mark.parametrize("keys", [(b"short", ()), (KEY, (b"x" * 31,)), (b"x" * 33, ())])
def test_a_box_needs_32_byte_keys(keys: tuple[bytes, tuple[bytes, ...]]) -> None:
    key, old = keys
    with pytest.raises(SecretKeyError, match="32 bytes"):
        SecretBox(key, old_keys=old)


# --- key text --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        KEY.hex(),
        KEY.hex().upper(),
        base64.urlsafe_b64encode(KEY).decode(),
        base64.urlsafe_b64encode(KEY).decode().rstrip("="),
        base64.b64encode(KEY).decode(),
        f"  {KEY.hex()}\n",
    ],
)
def test_key_text_in_hex_or_base64(text: str) -> None:
    assert key_from_text(text) == KEY


def test_standard_and_url_alphabets_decode_alike() -> None:
    key = bytes([0xFB, 0xFF] * 16)
    assert "+" in base64.b64encode(key).decode() and "/" in base64.b64encode(key).decode()
    assert key_from_text(base64.b64encode(key).decode()) == key
    assert key_from_text(base64.urlsafe_b64encode(key).decode()) == key


@pytest.mark.parametrize(
    "text",
    [
        "",
        "short",
        KEY.hex()[:-2],
        KEY.hex() + "00",
        base64.urlsafe_b64encode(KEY + b"x").decode(),
        base64.urlsafe_b64encode(KEY).decode()[:-2],
        "!" * 43,
        "a",  # a length base64 cannot have
        "=" * 44,
    ],
)
def test_bad_key_text_says_what_a_key_looks_like(text: str) -> None:
    with pytest.raises(SecretKeyError, match="32 bytes written as base64url"):
        key_from_text(text)


def test_an_all_zero_key_is_refused() -> None:
    with pytest.raises(SecretKeyError, match="all zeros"):
        key_from_text("00" * 32)


def test_generated_keys_are_random_and_decode() -> None:
    texts = {generate_key_text() for _ in range(10)}
    assert len(texts) == 10
    for text in texts:
        assert len(text) == 43
        assert len(key_from_text(text)) == KEY_BYTES


@given(st.text(max_size=80))
def test_any_key_text_is_a_key_or_a_key_error(text: str) -> None:
    try:
        key = key_from_text(text)
    except SecretKeyError:
        return
    assert len(key) == KEY_BYTES


# --- contexts --------------------------------------------------------------------------------


@given(st.lists(st.text(max_size=6), max_size=4), st.lists(st.text(max_size=6), max_size=4))
def test_contexts_of_different_parts_differ(a: list[str], b: list[str]) -> None:
    assert (secret_context(*a) == secret_context(*b)) is (a == b)


# --- masking ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "secrets", "masked"),
    [
        ("token=abc123 again abc123", ["abc123"], f"token={MASK} again {MASK}"),
        ("key sk-long-secret", ["sk-long", "sk-long-secret"], f"key {MASK}"),
        ("nothing here", ["absent"], "nothing here"),
        ("dots a.b and axb", ["a.b"], f"dots {MASK} and axb"),  # literal, not a pattern
        ("empty secrets are ignored", ["", ""], "empty secrets are ignored"),
        ("no secrets", [], "no secrets"),
    ],
)
def test_redact(text: str, secrets: list[str], masked: str) -> None:
    assert redact(text, secrets) == masked


def test_redact_takes_any_mask() -> None:
    assert redact("a secret b", ["secret"], mask="[hidden]") == "a [hidden] b"


@given(
    text=st.text(alphabet="abc xyz", max_size=60),
    secrets=st.lists(st.text(alphabet="abcx", min_size=1, max_size=4), max_size=4),
)
def test_no_secret_survives_redaction(text: str, secrets: list[str]) -> None:
    redacted = redact(text, secrets)
    for secret in secrets:
        assert secret not in redacted
    if not any(secret in text for secret in secrets):
        assert redacted == text
