"""Fuzz harnesses for the sandbox frame codec: the bytes a worker process sends its parent.

A worker runs untrusted JavaScript, so the parent treats its pipe as outside input.  Each
harness is a hypothesis test, so the same code runs two ways:

* ``python -m pytest fuzz/fuzz_frames.py -q``: hypothesis generates the inputs, with the ``fuzz``
  settings profile (``FUZZ_EXAMPLES`` examples per harness, default 2000, no deadline);
* ``python fuzz/fuzz_frames.py [libFuzzer options]``: atheris drives the same harnesses through
  ``fuzz_one_input``, coverage guided; the first input byte picks the harness.

The invariants: generated frames survive any chunking unchanged; any byte stream yields frames
or a ``FrameError`` and nothing else; whatever is accepted re-encodes to itself.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: make the repository importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hypothesis import given
from hypothesis import strategies as st

from engine.sandbox._frames import MAX_FRAME_BYTES, Frame, FrameError, decode_payload, encode_frame
from fuzz._harness import FUZZ, run_atheris
from tests.test_frames import (
    FRAME_CLASSES,
    check_hostile_stream,
    check_round_trip_in_chunks,
    frames_st,
    hostile_streams,
    near_frame_bodies,
)


@FUZZ
@given(frames=st.lists(frames_st, max_size=16), data=st.data())
def test_fuzz_frames_round_trip_in_any_chunks(frames: list[Frame], data: st.DataObject) -> None:
    check_round_trip_in_chunks(frames, data)


@FUZZ
@given(
    stream=st.one_of(hostile_streams, st.binary(max_size=4096)),
    data=st.data(),
    max_frame_bytes=st.sampled_from([MAX_FRAME_BYTES, 4096, 64, 1]),
)
def test_fuzz_decoder_on_hostile_streams(
    stream: bytes, data: st.DataObject, max_frame_bytes: int
) -> None:
    check_hostile_stream(stream, data, max_frame_bytes)


@FUZZ
@given(body=st.one_of(near_frame_bodies, st.binary(max_size=512)))
def test_fuzz_decode_payload(body: bytes) -> None:
    try:
        frame = decode_payload(body)
    except FrameError as error:
        assert str(error)
        return
    assert isinstance(frame, FRAME_CLASSES)
    encoded = encode_frame(frame)
    assert encode_frame(decode_payload(encoded[4:])) == encoded


HARNESSES = (
    test_fuzz_frames_round_trip_in_any_chunks,
    test_fuzz_decoder_on_hostile_streams,
    test_fuzz_decode_payload,
)


if __name__ == "__main__":
    run_atheris(HARNESSES, __file__)
