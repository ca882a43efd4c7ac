"""The parent <-> worker frame codec, driven with plain bytes (no processes, no pipes).

The wire format: a 4-byte big-endian length, then that many bytes of UTF-8 JSON -- an object whose
``"t"`` member names the frame class.  Anything else is a :class:`FrameError`, because after one
bad frame the peer cannot be trusted any further.
"""

from __future__ import annotations

import itertools
import json
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.sandbox import _frames
from engine.sandbox._frames import (
    MAX_FRAME_BYTES,
    Failure,
    Frame,
    FrameDecoder,
    FrameError,
    HostCall,
    HostReply,
    Invoke,
    Log,
    NeedSource,
    Ready,
    Result,
    decode_payload,
    encode_frame,
)

FRAME_CLASSES = (Invoke, HostReply, Ready, NeedSource, HostCall, Log, Result)


def wire(body: bytes) -> bytes:
    """One frame on the wire with an arbitrary body, as a misbehaving peer could send it."""
    return struct.pack(">I", len(body)) + body


def wire_json(payload: Any) -> bytes:
    return wire(json.dumps(payload).encode())


def decode_all(data: bytes, **decoder_args: Any) -> list[Frame]:
    decoder = FrameDecoder(**decoder_args)
    frames = decoder.feed(data)
    assert decoder.pending_bytes == 0
    return frames


# ---------------------------------------------------------------------------------------------
# Strategies (shared with fuzz/fuzz_frames.py)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=5)
_ids = st.text(max_size=24)
_ints = st.integers(min_value=-(2**63), max_value=2**63)

frames_st: st.SearchStrategy[Frame] = st.one_of(
    st.builds(
        Invoke,
        invocation_id=_ids,
        script_key=_ids,
        script_uri=_ids,
        handler=_ids,
        phase=st.sampled_from(["init", "handler"]),
        context=json_objects,
        source=st.none() | st.text(max_size=200),
    ),
    st.builds(
        HostReply,
        call_id=_ints,
        ok=st.booleans(),
        value=json_values,
        error=st.none() | st.text(max_size=40),
    ),
    st.builds(Ready, pid=_ints),
    st.builds(NeedSource, invocation_id=_ids),
    st.builds(
        HostCall,
        invocation_id=_ids,
        call_id=_ints,
        name=st.text(max_size=30),
        args=st.lists(json_values, max_size=4),
    ),
    st.builds(
        Log, invocation_id=_ids, level=st.text(max_size=8), message=st.text(), timestamp_ms=_ints
    ),
    st.builds(
        Result,
        invocation_id=_ids,
        value=st.none() | json_objects,
        failure=st.none()
        | st.builds(
            Failure,
            kind=st.sampled_from(
                ["exception", "out_of_memory", "stack_overflow", "eval", "no_handler"]
            ),
            message=st.text(max_size=60),
        ),
        duration_ms=st.floats(min_value=0, max_value=1e9, allow_nan=False),
    ),
)

# Frame bodies that are almost right: a known or unknown tag and fields of any JSON type, so the
# structuring step meets missing, extra and wrongly typed members.
_FIELD_NAMES = sorted(
    {name for cls in FRAME_CLASSES for name in cls.__annotations__} | {"kind", "message", "x"}
)
near_frame_bodies = st.builds(
    lambda tag, fields: json.dumps({"t": tag, **fields}).encode(),
    st.sampled_from([cls.__name__ for cls in FRAME_CLASSES] + ["Failure", "ready", ""]),
    st.dictionaries(st.sampled_from(_FIELD_NAMES), json_values | json_objects, max_size=8),
)

_PIECES = [b"{", b"}", b"[", b"]", b'"t"', b":", b",", b'"Ready"', b'"pid"', b"1", b"null", b"\xff"]
hostile_streams = st.lists(
    st.one_of(
        frames_st.map(encode_frame),
        near_frame_bodies.map(wire),
        st.lists(st.sampled_from(_PIECES), max_size=12).map(b"".join).map(wire),
        st.binary(max_size=40).map(wire),
        st.binary(max_size=12),
        # A header announcing a length the rest of the stream may or may not honour.
        st.integers(min_value=0, max_value=2**32 - 1).map(struct.Struct(">I").pack),
    ),
    max_size=8,
).map(b"".join)


def split_points(draw_data: st.DataObject, length: int) -> list[int]:
    cuts = draw_data.draw(st.lists(st.integers(min_value=0, max_value=length), max_size=12))
    return sorted(set(cuts))


def chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def check_round_trip_in_chunks(frames: list[Frame], data: st.DataObject) -> None:
    stream = b"".join(encode_frame(frame) for frame in frames)
    decoder = FrameDecoder()
    decoded: list[Frame] = []
    for chunk in chunks(stream, split_points(data, len(stream))):
        decoded.extend(decoder.feed(chunk))
    assert decoded == frames
    assert decoder.pending_bytes == 0


def check_hostile_stream(stream: bytes, data: st.DataObject, max_frame_bytes: int) -> None:
    decoder = FrameDecoder(max_frame_bytes=max_frame_bytes)
    for chunk in chunks(stream, split_points(data, len(stream))):
        try:
            frames = decoder.feed(chunk)
        except FrameError as error:
            assert str(error)
            return
        for frame in frames:
            assert isinstance(frame, FRAME_CLASSES)
            # Whatever was accepted is a frame this codec can send again, unchanged.
            encoded = encode_frame(frame)
            assert encode_frame(decode_payload(encoded[4:])) == encoded


# ---------------------------------------------------------------------------------------------
# Round trips and framing

EXAMPLES: list[Frame] = [
    Invoke("i1", "/s#abc", "/s", "get", "handler", {"request": {"path": "/x", "query": {}}}),
    Invoke("i2", "/s#abc", "/s", "init", "init", {}, source="function init(){}\n"),
    HostReply(1, ok=True, value={"a": [1, 2.5, None, True, "é"]}),
    HostReply(2, ok=False, error="routeRegistry.registerRoute: path must be a string"),
    Ready(4242),
    NeedSource("i1"),
    HostCall("i1", 7, "routeRegistry.registerRoute", ["/x", "h", None, {"tags": ["a"]}]),
    Log("i1", "INFO", "line one\nline two \u2603", 1_700_000_000_000),
    Result("i1", value={"type": "string", "value": "ok"}, duration_ms=0.125),
    Result("i1", failure=Failure("out_of_memory", "InternalError: out of memory")),
    Result("i3"),
]


@pytest.mark.parametrize("frame", EXAMPLES, ids=lambda f: type(f).__name__)
def test_every_frame_type_survives_encoding_and_decoding(frame: Frame) -> None:
    assert decode_all(encode_frame(frame)) == [frame]


def test_the_examples_cover_every_frame_type() -> None:
    assert {type(f) for f in EXAMPLES} == set(FRAME_CLASSES)


def test_a_frame_is_a_big_endian_length_and_a_tagged_json_object() -> None:
    data = encode_frame(Ready(12))
    (length,) = struct.unpack(">I", data[:4])
    assert length == len(data) - 4
    assert json.loads(data[4:]) == {"t": "Ready", "pid": 12}


def test_non_ascii_text_is_sent_as_utf8() -> None:
    data = encode_frame(Log("i", "LOG", "caf\u00e9 \u20ac", 1))
    assert "caf\u00e9 \u20ac".encode() in data


def test_frames_fed_one_byte_at_a_time_come_out_once_complete() -> None:
    stream = b"".join(encode_frame(f) for f in EXAMPLES)
    decoder = FrameDecoder()
    out: list[Frame] = []
    boundaries = set()
    position = 0
    for frame in EXAMPLES:
        position += len(encode_frame(frame))
        boundaries.add(position)
    for index in range(len(stream)):
        got = decoder.feed(stream[index : index + 1])
        # A frame appears exactly when its last byte arrives, never earlier.
        assert len(got) == (1 if index + 1 in boundaries else 0)
        out.extend(got)
    assert out == EXAMPLES
    assert decoder.pending_bytes == 0


def test_many_frames_in_one_chunk_all_come_out_in_order() -> None:
    frames = [Log("i", "LOG", str(n), n) for n in range(500)]
    assert decode_all(b"".join(encode_frame(f) for f in frames)) == frames


def test_an_incomplete_frame_waits_for_its_remaining_bytes() -> None:
    data = encode_frame(NeedSource("abc"))
    decoder = FrameDecoder()
    assert decoder.feed(data[:3]) == []
    assert decoder.feed(data[3:-1]) == []
    assert decoder.pending_bytes == len(data) - 1
    assert decoder.feed(data[-1:]) == [NeedSource("abc")]
    assert decoder.pending_bytes == 0


def test_a_chunk_ending_mid_frame_keeps_the_tail_for_the_next_feed() -> None:
    first, second = encode_frame(Ready(1)), encode_frame(Ready(2))
    decoder = FrameDecoder()
    assert decoder.feed(first + second[:5]) == [Ready(1)]
    assert decoder.pending_bytes == 5
    assert decoder.feed(second[5:]) == [Ready(2)]


def test_an_empty_feed_yields_nothing() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(b"") == []
    assert decoder.pending_bytes == 0


# ---------------------------------------------------------------------------------------------
# Size limits


def test_an_announced_length_over_the_limit_fails_before_the_body_arrives() -> None:
    decoder = FrameDecoder()
    with pytest.raises(FrameError, match="exceeds"):
        decoder.feed(struct.pack(">I", MAX_FRAME_BYTES + 1))


def test_the_largest_announcement_fails_too() -> None:
    with pytest.raises(FrameError, match="exceeds"):
        FrameDecoder().feed(b"\xff\xff\xff\xff")


def test_a_frame_exactly_at_a_custom_limit_decodes_and_one_byte_more_does_not() -> None:
    data = encode_frame(Ready(1))
    size = len(data) - 4
    assert decode_all(data, max_frame_bytes=size) == [Ready(1)]
    with pytest.raises(FrameError, match=f"{size - 1}-byte limit"):
        FrameDecoder(max_frame_bytes=size - 1).feed(data)


def test_encoding_a_frame_over_the_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_frames, "MAX_FRAME_BYTES", 128)
    assert decode_all(encode_frame(Log("i", "LOG", "x" * 40, 1))) == [Log("i", "LOG", "x" * 40, 1)]
    with pytest.raises(FrameError, match="128-byte limit"):
        encode_frame(Log("i", "LOG", "x" * 100, 1))


# ---------------------------------------------------------------------------------------------
# Malformed input


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b'{"t": "Ready", "pid": 1',
        b"\xff\xfe\x00",
        b'{"t": "Ready", "pid": 1, "x": "\xc3"}',
        b"[1, 2]",
        b'"Ready"',
        b"42",
        b"null",
    ],
    ids=["empty", "text", "truncated", "binary", "bad-utf8", "array", "string", "number", "null"],
)
def test_a_body_that_is_not_a_json_object_is_a_frame_error(body: bytes) -> None:
    with pytest.raises(FrameError):
        FrameDecoder().feed(wire(body))


@pytest.mark.parametrize(
    "payload",
    [
        {"pid": 1},
        {"t": None, "pid": 1},
        {"t": 7, "pid": 1},
        {"t": ["Ready"], "pid": 1},
        {"t": "ready", "pid": 1},
        {"t": "Hello", "pid": 1},
        {"t": "Failure", "kind": "eval", "message": "m"},
    ],
    ids=["untagged", "null-tag", "int-tag", "list-tag", "wrong-case", "unknown", "not-a-frame"],
)
def test_an_unknown_frame_type_is_a_frame_error(payload: dict[str, Any]) -> None:
    with pytest.raises(FrameError, match="unknown frame type"):
        FrameDecoder().feed(wire_json(payload))


@pytest.mark.parametrize(
    "payload",
    [
        {"t": "Ready"},
        {"t": "NeedSource"},
        {"t": "HostReply", "ok": True},
        {"t": "HostCall", "invocation_id": "i", "call_id": 1, "name": "n"},
        {"t": "Log", "invocation_id": "i", "level": "LOG", "message": "m"},
        {"t": "Result"},
        {"t": "Result", "invocation_id": "i", "failure": {"kind": "eval"}},
        {"t": "Invoke", "invocation_id": "i", "script_key": "k", "script_uri": "u", "handler": "h"},
    ],
    ids=lambda p: p["t"],
)
def test_a_missing_field_is_a_frame_error(payload: dict[str, Any]) -> None:
    with pytest.raises(FrameError, match=f"malformed {payload['t']} frame"):
        FrameDecoder().feed(wire_json(payload))


@pytest.mark.parametrize(
    "payload",
    [
        {"t": "Ready", "pid": 1, "extra": 0},
        {"t": "NeedSource", "invocation_id": "i", "source": "x"},
        {"t": "Result", "invocation_id": "i", "failure": {"kind": "eval", "message": "m", "x": 1}},
    ],
    ids=["top-level", "field-of-another-frame", "nested"],
)
def test_an_extra_field_is_a_frame_error(payload: dict[str, Any]) -> None:
    with pytest.raises(FrameError, match="malformed"):
        FrameDecoder().feed(wire_json(payload))


@pytest.mark.parametrize(
    "payload",
    [
        {
            "t": "Invoke",
            "invocation_id": "i",
            "script_key": "k",
            "script_uri": "u",
            "handler": "h",
            "phase": "teardown",
            "context": {},
        },
        {"t": "Result", "invocation_id": "i", "failure": {"kind": "segfault", "message": "m"}},
        {"t": "Result", "invocation_id": "i", "value": [1]},
        {"t": "Log", "invocation_id": "i", "level": "L", "message": "m", "timestamp_ms": "soon"},
        {"t": "Ready", "pid": [1]},
    ],
    ids=["phase", "failure-kind", "value-not-object", "timestamp-text", "pid-list"],
)
def test_a_value_outside_its_type_is_a_frame_error(payload: dict[str, Any]) -> None:
    with pytest.raises(FrameError, match="malformed"):
        FrameDecoder().feed(wire_json(payload))


@pytest.mark.parametrize(
    "payload",
    [
        {"t": "HostReply", "call_id": 1, "ok": "no"},
        {"t": "Ready", "pid": "12"},
        {"t": "Ready", "pid": 1.5},
        {"t": "HostCall", "invocation_id": "i", "call_id": 1, "name": "n", "args": "abc"},
        {"t": "NeedSource", "invocation_id": {"a": 1}},
    ],
    ids=["bool-from-text", "int-from-text", "int-from-float", "list-from-text", "str-from-object"],
)
def test_a_wrongly_typed_field_is_a_frame_error_not_coerced(payload: dict[str, Any]) -> None:
    with pytest.raises(FrameError):
        FrameDecoder().feed(wire_json(payload))


def test_a_malformed_frame_error_names_the_field() -> None:
    with pytest.raises(FrameError, match="pid"):
        FrameDecoder().feed(wire_json({"t": "Ready"}))


def test_deeply_nested_json_is_a_frame_error() -> None:
    with pytest.raises(FrameError):
        FrameDecoder().feed(wire(b"[" * 100_000))


def test_an_overlong_integer_is_a_frame_error() -> None:
    with pytest.raises(FrameError):
        FrameDecoder().feed(wire(b'{"t":"Ready","pid":' + b"7" * 5000 + b"}"))


def test_a_lone_surrogate_becomes_the_replacement_character() -> None:
    # JavaScript strings may hold lone surrogates; UTF-8 cannot, so they arrive as U+FFFD.
    data = encode_frame(Result("i", value={"type": "string", "value": "a\ud800b"}))
    assert decode_all(data) == [Result("i", value={"type": "string", "value": "a\ufffdb"})]


def test_a_good_frame_before_garbage_is_not_mistaken_for_a_stream_in_sync() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(encode_frame(Ready(1))) == [Ready(1)]
    with pytest.raises(FrameError):
        decoder.feed(wire(b"garbage"))


# ---------------------------------------------------------------------------------------------
# Properties


@settings(max_examples=300, deadline=None)
@given(frames=st.lists(frames_st, max_size=8), data=st.data())
def test_any_frame_sequence_decodes_to_itself_whatever_the_chunking(
    frames: list[Frame], data: st.DataObject
) -> None:
    check_round_trip_in_chunks(frames, data)


@settings(max_examples=300, deadline=None)
@given(
    stream=hostile_streams,
    data=st.data(),
    max_frame_bytes=st.sampled_from([MAX_FRAME_BYTES, 64, 1]),
)
def test_arbitrary_bytes_yield_frames_or_a_frame_error_and_nothing_else(
    stream: bytes, data: st.DataObject, max_frame_bytes: int
) -> None:
    check_hostile_stream(stream, data, max_frame_bytes)


@settings(max_examples=200, deadline=None)
@given(body=near_frame_bodies)
def test_a_nearly_valid_body_decodes_to_a_frame_or_is_a_frame_error(body: bytes) -> None:
    try:
        frame = decode_payload(body)
    except FrameError:
        return
    assert isinstance(frame, FRAME_CLASSES)
