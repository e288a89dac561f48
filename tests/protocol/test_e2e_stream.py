"""The answer stream's framing (``protocol.e2e_stream``): frames split however
the bytes arrive, and every malformed stream refused with its check."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.e2e import MAX_RECORD_BYTES
from protocol.e2e_stream import (
    ERROR_FRAME,
    RECORD_FRAME,
    StreamCheck,
    StreamDecoder,
    StreamError,
    error_frame,
    record_frame,
)


@given(
    records=st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=6),
    cuts=st.lists(st.integers(0, 2000), max_size=8),
)
def test_frames_come_back_whatever_the_split(records: list[bytes], cuts: list[int]) -> None:
    body = b"".join(record_frame(r) for r in records) + error_frame(b'{"error":{}}')
    decoder = StreamDecoder()
    frames: list[tuple[int, bytes]] = []
    at = 0
    for cut in [*sorted({min(c, len(body)) for c in cuts}), len(body)]:
        frames += decoder.feed(body[at:cut])
        at = cut
    decoder.close()
    assert frames == [(RECORD_FRAME, r) for r in records] + [(ERROR_FRAME, b'{"error":{}}')]


@pytest.mark.parametrize(
    ("body", "check"),
    [
        (b"\x02\x00\x00\x00\x01x", StreamCheck.FRAME_TYPE),
        (b"\x00\x00\x00\x00\x00", StreamCheck.FRAME_LENGTH),
        (b"\x00" + (MAX_RECORD_BYTES + 1).to_bytes(4, "big"), StreamCheck.FRAME_LENGTH),
        (b"\x01\x00\x01\x00\x00", StreamCheck.FRAME_LENGTH),
        (error_frame(b"{}") + record_frame(b"r"), StreamCheck.AFTER_ERROR),
    ],
)
def test_malformed_streams_are_refused(body: bytes, check: StreamCheck) -> None:
    with pytest.raises(StreamError) as refused:
        StreamDecoder().feed(body)
    assert refused.value.check is check


def test_a_stream_cut_inside_a_frame_is_truncated() -> None:
    decoder = StreamDecoder()
    assert decoder.feed(record_frame(b"abc")[:-1]) == []
    with pytest.raises(StreamError) as refused:
        decoder.close()
    assert refused.value.check is StreamCheck.TRUNCATED
