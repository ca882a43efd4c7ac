"""Fuzz harnesses for what a client sends to ``/engine/assets``: edit lists, line ranges,
search patterns, base64 content and batches (``engine.asset_text``).

Each harness is a hypothesis test, so the same code runs two ways:

* ``python -m pytest fuzz/fuzz_asset_edits.py -q``: hypothesis generates the inputs, with the
  ``fuzz`` settings profile (``FUZZ_EXAMPLES`` examples per harness, default 2000, no deadline);
* ``python fuzz/fuzz_asset_edits.py [libFuzzer options]``: atheris drives the same harnesses
  through ``fuzz_one_input``, coverage guided; the first input byte picks the harness.

The contract under test: outside input is either accepted, with a result that keeps the
module's promises, or refused with a ``ValidationError`` naming a field -- never anything else.
"""

from __future__ import annotations

import base64
import re
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    # Run as a script: make the repository importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hypothesis import given
from hypothesis import strategies as st

from engine.asset_text import (
    MAX_BATCH_BYTES,
    MAX_EDITS,
    MAX_GREP_LINE_CHARS,
    MAX_GREP_MATCHES,
    apply_edits,
    decode_base64,
    grep,
    name_problem,
    parse_batch,
    parse_edits,
    parse_line_range,
    select_lines,
)
from engine.errors import ValidationError
from fuzz._harness import FUZZ, run_atheris
from tests.test_asset_text import (
    RefusedAt,
    batch_payloads,
    grep_texts,
    json_values,
    patterns,
    reference_apply,
    reference_grep,
)

_TEXT_PIECES = st.sampled_from(["a", "b", "ab", "\n", "\r\n", "\r", " ", "é", "\x00"])
texts = st.one_of(st.lists(_TEXT_PIECES, max_size=30).map("".join), st.text(max_size=60))

# Edit objects as a client would send them, some well formed and some not.
_EDIT_STRINGS = st.one_of(st.lists(_TEXT_PIECES, max_size=3).map("".join), json_values)
edit_objects = st.dictionaries(
    st.sampled_from(["old_string", "new_string", "replace_all", "other"]),
    _EDIT_STRINGS | st.booleans(),
    max_size=4,
)
edit_values = st.one_of(
    st.lists(edit_objects | json_values, max_size=5),
    # Around the limit: one object repeated, which is cheap to generate.
    st.builds(lambda item, n: [item] * n, edit_objects, st.integers(MAX_EDITS - 1, MAX_EDITS + 1)),
    json_values,
)

_RANGE_PIECES = st.sampled_from(["0", "1", "2", "3", "9", "-", " ", "x", "99999999999999999999"])
line_specs = st.one_of(st.lists(_RANGE_PIECES, max_size=6).map("".join), st.text(max_size=12))


def _lines(text: str) -> list[str]:
    return re.findall(r"[^\n]*\n|[^\n]+\Z", text)


@FUZZ
@given(text=texts, value=edit_values)
def test_fuzz_edits(text: str, value: Any) -> None:
    try:
        edits = parse_edits(value)
    except ValidationError as error:
        assert error.field == "edits" or error.field.startswith("edits[")
        return
    assert 1 <= len(edits) <= MAX_EDITS
    try:
        expected = reference_apply(text, edits)
    except RefusedAt as refusal:
        try:
            apply_edits(text, edits)
        except ValidationError as error:
            assert error.field == f"edits[{refusal.index}].old_string"
            return
        raise AssertionError("apply_edits accepted edits the reference refuses") from None
    assert apply_edits(text, edits) == expected


@FUZZ
@given(text=texts, spec=line_specs)
def test_fuzz_line_ranges(text: str, spec: str) -> None:
    try:
        selection = parse_line_range(spec)
        selected = select_lines(text, selection)
    except ValidationError as error:
        assert error.field == "lines"
        return
    lines = _lines(text)
    end = len(lines) if selection.end is None else min(selection.end, len(lines))
    assert selected["content"] == "".join(lines[selection.start - 1 : end])
    assert (selected["start_line"], selected["end_line"]) == (selection.start, end)
    assert selected["total_lines"] == len(lines)


@FUZZ
@given(text=grep_texts | texts, pattern=patterns)
def test_fuzz_grep(text: str, pattern: str) -> None:
    try:
        result = grep(text, pattern, timeout_s=5)
    except ValidationError as error:
        assert error.field == "grep"
        return
    numbers = [match["line"] for match in result["matches"]]
    assert numbers == sorted(set(numbers))
    assert len(numbers) == min(result["match_count"], MAX_GREP_MATCHES)
    assert result["truncated"] == (result["match_count"] > MAX_GREP_MATCHES)
    assert all(len(match["text"]) <= MAX_GREP_LINE_CHARS for match in result["matches"])
    expected = reference_grep(text, pattern)
    assert expected is not None
    assert [(m["line"], m["text"]) for m in result["matches"]] == expected[:MAX_GREP_MATCHES]


@FUZZ
@given(text=st.one_of(st.text(alphabet="AaZz09+/= \n\t-_*é", max_size=24), json_values))
def test_fuzz_decode_base64(text: Any) -> None:
    try:
        data = decode_base64(text, field="content")
    except ValidationError as error:
        assert error.field == "content"
        assert error.rule.startswith("must be valid base64: ")
        return
    # Accepted text is the one canonical encoding of its bytes, give or take whitespace.
    assert base64.b64encode(data).decode("ascii") == "".join(text.split())


@FUZZ
@given(payload=batch_payloads, script=st.none() | st.sampled_from(["app", "other"]))
def test_fuzz_batch(payload: Any, script: str | None) -> None:
    try:
        batch = parse_batch(payload, script=script)
    except ValidationError as error:
        assert error.field and error.rule
        return
    names = [file.name for file in batch.files]
    assert len(set(names)) == len(names)
    assert all(name_problem(name) is None for name in names)
    assert all(file.mimetype and file.mimetype == file.mimetype.strip() for file in batch.files)
    assert sum(len(file.content) for file in batch.files) <= MAX_BATCH_BYTES
    assert batch.script in (script, payload.get("script"))
    assert batch.reinit in ("after", "never")


HARNESSES = (
    test_fuzz_edits,
    test_fuzz_line_ranges,
    test_fuzz_grep,
    test_fuzz_decode_base64,
    test_fuzz_batch,
)


if __name__ == "__main__":
    run_atheris(HARNESSES, __file__)
