"""btoa/atob and the validation helpers of the prelude (UPSTREAM_API §1.8, §2.13)."""

from __future__ import annotations

import base64
import json
from importlib import resources
from typing import Any

import pytest
import quickjs
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import Engine


def prelude_context() -> Any:
    """A bare QuickJS context with the prelude, host bridges stubbed: pure JS under test."""
    context = quickjs.Context()
    context.add_callable("__aiwe_host", lambda name, args: '{"ok":true,"value":null}')
    context.add_callable("__aiwe_log", lambda level, message: None)
    context.eval(resources.files("engine.sandbox").joinpath("prelude.js").read_text("utf-8"))
    return context


JS = prelude_context()
ATOB = JS.get("atob")


def js(expression: str) -> Any:
    return JS.eval(expression)


@given(st.text(alphabet=st.characters(exclude_categories=("Cs",))))
def test_btoa_is_base64_of_the_utf8_bytes_and_atob_reverses_it(text: str) -> None:
    # Through a JSON literal: the binding would cut a Python string argument at a NUL.
    encoded = js(f"btoa({json.dumps(text)})")
    assert encoded == base64.b64encode(text.encode()).decode()
    assert js(f"atob({json.dumps(encoded)}) === {json.dumps(text)}") is True


def test_btoa_encodes_a_lone_surrogate_as_the_replacement_character() -> None:
    assert js('btoa("a\\ud800")') == base64.b64encode("a\ufffd".encode()).decode()


@given(st.binary(max_size=64))
def test_atob_accepts_exactly_the_valid_utf8(data: bytes) -> None:
    try:
        expected: str | None = data.decode("utf-8")
    except UnicodeDecodeError:
        expected = None
    encoded = base64.b64encode(data).decode()
    if expected is None:
        with pytest.raises(quickjs.JSException, match="not valid UTF-8"):
            ATOB(encoded)
    else:
        # Compared inside JavaScript: the binding would cut a returned string at a NUL.
        assert js(f"atob({json.dumps(encoded)}) === {json.dumps(expected)}") is True


@pytest.mark.parametrize("bad", ["@@@", "a", "=abc", "ab=c"])
def test_atob_refuses_what_is_not_base64(bad: str) -> None:
    with pytest.raises(quickjs.JSException, match="not valid base64"):
        ATOB(bad)


HELPERS = """
function check(ctx) {
  var out = {};
  function attempt(name, fn) {
    try { out[name] = fn(); } catch (e) { out[name] = "threw: " + e.message; }
  }
  attempt("btoa", function () { return btoa("héllo"); });
  attempt("convertAtob", function () { return convert.atob(convert.btoa("✓")); });
  attempt("btoaNumber", function () { return btoa(5); });
  attempt("requireQuery", function () { return requireQueryParam("name"); });
  attempt("requireMissing", function () { return requireQueryParam("nope"); });
  attempt("requirePath", function () { return validate.requirePathParam(ctx, "id"); });
  attempt("requirePathMissing", function () { return validate.requirePathParam(ctx, "x"); });
  attempt("optional", function () { return optionalQueryParam("nope", "fallback"); });
  attempt("optionalNull", function () { return optionalQueryParam("nope"); });
  attempt("string", function () { return validateString("abc", 1, 5); });
  attempt("stringShort", function () { return validateString("", 1, 5); });
  attempt("stringPattern", function () {
    return validate.validateString("abc", { pattern: "^[0-9]+$" });
  });
  attempt("number", function () { return validateNumber("12", 0, 20); });
  attempt("numberHigh", function () { return validate.validateNumber(30, { max: 20 }); });
  attempt("numberNaN", function () { return validateNumber("x"); });
  return ResponseBuilder.json(out);
}
function init() { register("/check/:id", "check"); }
"""


async def test_helpers_as_a_script_sees_them(engine: Engine) -> None:
    await engine.deploy("helpers", HELPERS)
    response = await engine.client.get("/check/7", params={"name": "ann"})
    assert response.status_code == 200, response.text
    assert response.json() == {
        "btoa": "aMOpbGxv",
        "convertAtob": "✓",
        "btoaNumber": "threw: btoa() expects a string parameter",
        "requireQuery": "ann",
        "requireMissing": "threw: Required query parameter 'nope' is missing or empty",
        "requirePath": "7",
        "requirePathMissing": "threw: Required path parameter 'x' is missing or empty",
        "optional": "fallback",
        "optionalNull": None,
        "string": "abc",
        "stringShort": "threw: Value must be at least 1 characters long",
        "stringPattern": "threw: Value does not match the required pattern",
        "number": 12,
        "numberHigh": "threw: Value must be at most 20",
        "numberNaN": "threw: Value must be a number",
    }
