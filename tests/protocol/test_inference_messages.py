"""The generation request's stop sequences and the answer's prompt usage on the
wire, and the stop-sequence cut every engine applies (``StopScanner``)."""

from __future__ import annotations

import itertools

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.customer_data import CustomerData
from protocol.inference import (
    ChatTurn,
    FinishReason,
    GenerateDone,
    GenerateRequest,
    Role,
    StopScanner,
)
from protocol.messages import (
    Envelope,
    MessageCheck,
    MessageDecodeError,
    decode_envelope,
    encode_envelope,
)

CANARY = "CANARY-stop-77c1"


def _request(stop: tuple[CustomerData, ...]) -> GenerateRequest:
    return GenerateRequest("m", (ChatTurn(Role.USER, CustomerData("hi")),), 16, 0.0, 1.0, 0, stop)


def test_stop_sequences_and_prompt_tokens_round_trip() -> None:
    request = _request((CustomerData(CANARY), CustomerData("\n\n")))
    encoded = encode_envelope(Envelope.wrap(request, request_id=3))
    decoded = decode_envelope(encoded).body
    assert decoded == request
    assert all(isinstance(s, CustomerData) for s in decoded.stop)  # type: ignore[attr-defined]
    done = GenerateDone(FinishReason.STOP, 7, 41)
    assert decode_envelope(encode_envelope(Envelope.wrap(done))).body == done


@pytest.mark.parametrize(
    "stop",
    [
        (CustomerData(""),),
        (CustomerData("x" * 257),),
        tuple(CustomerData(str(i)) for i in range(5)),
        (CustomerData(b"\xff\xfe"),),
    ],
    ids=["empty", "too-long", "five", "not-text"],
)
def test_bad_stop_sequences_are_refused_in_process(stop: tuple[CustomerData, ...]) -> None:
    with pytest.raises(ValueError) as refused:
        _request(stop)
    assert CANARY not in str(refused.value)


def _wire(stop: list[object], *, fields: int = 7) -> bytes:
    body: list[object] = ["m", [["user", "hi"]], 16, 0.0, 1.0, 0, stop][:fields]
    return msgpack.packb([1, "inference.generate", 0, body], use_bin_type=True)


@pytest.mark.parametrize(
    ("data", "check"),
    [
        (_wire([CANARY * 20]), MessageCheck.FIELD_LENGTH),
        (_wire(["a", "b", "c", "d", "e"]), MessageCheck.FIELD_LENGTH),
        (_wire([""]), MessageCheck.RECORD_INVARIANT),
        (_wire([7]), MessageCheck.FIELD_TYPE),
        # A request of the earlier six-field form: strict, no field is implied.
        (_wire([], fields=6), MessageCheck.FIELD_MISSING),
    ],
    ids=["long", "five", "empty", "not-a-string", "six-fields"],
)
def test_bad_stop_sequences_on_the_wire_are_typed_errors(data: bytes, check: MessageCheck) -> None:
    with pytest.raises(MessageDecodeError) as refused:
        decode_envelope(data)
    assert refused.value.check is check
    assert CANARY not in str(refused.value)
    assert refused.value.__context__ is None


def _scan(pieces: list[str], stops: list[str]) -> tuple[str, int, bool]:
    scanner = StopScanner(stops)
    out, tokens = "", 0
    for piece in pieces:
        text, count = scanner.feed(piece, 1)
        out, tokens = out + text, tokens + count
        if scanner.stopped:
            return out, tokens, True
    text, count = scanner.flush()
    return out + text, tokens + count, False


def test_a_stop_sequence_split_across_pieces_is_cut_whole() -> None:
    out, tokens, stopped = _scan(["Hello wo", "rl", "d, and more"], ["world"])
    assert (out, tokens, stopped) == ("Hello ", 3, True)


def test_a_near_miss_is_held_back_then_let_go_with_its_tokens() -> None:
    scanner = StopScanner(["world"])
    assert scanner.feed("Hello wor", 1) == ("Hello ", 1)
    assert scanner.feed("l", 1) == ("", 0)
    # Not "world" after all: the held-back text goes out with the tokens it took.
    assert scanner.feed("m!", 1) == ("worlm!", 2)
    assert not scanner.stopped
    assert scanner.flush() == ("", 0)


def _first_cut(text: str, stops: list[str]) -> int:
    """Where ``text`` first contains a stop sequence (the longest of those
    completing first), or -1."""
    ends = [(at + len(s), at) for s in stops if (at := text.find(s)) >= 0]
    return min(ends)[1] if ends else -1


def _pieces(text: str, cuts: list[int]) -> list[str]:
    bounds = sorted({0, len(text), *(min(c, len(text)) for c in cuts)})
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


@given(
    text=st.text(alphabet="abc ", max_size=40),
    cuts=st.lists(st.integers(0, 40), max_size=10),
    stops=st.lists(st.text(alphabet="abc ", min_size=1, max_size=4), max_size=4),
)
def test_the_output_is_the_text_before_the_first_stop_sequence(
    text: str, cuts: list[int], stops: list[str]
) -> None:
    pieces = _pieces(text, cuts)
    out, tokens, stopped = _scan(pieces, stops)
    first = _first_cut(text, stops)
    if first >= 0:
        assert stopped and out == text[:first]
    else:
        assert not stopped and out == text
        assert tokens == len(pieces)


@given(
    text=st.text(alphabet="ab\u00e9\U0001f600", max_size=30),
    cuts=st.lists(st.integers(0, 30), max_size=8),
    other_cuts=st.lists(st.integers(0, 30), max_size=8),
    stops=st.lists(st.text(alphabet="ab\u00e9\U0001f600", min_size=1, max_size=5), max_size=4),
)
def test_the_cut_does_not_depend_on_how_the_text_was_split(
    text: str, cuts: list[int], other_cuts: list[int], stops: list[str]
) -> None:
    one, other = _pieces(text, cuts), _pieces(text, other_cuts)
    out, _, stopped = _scan(one, stops)
    assert (out, stopped) == _scan(other, stops)[::2]
    # Nothing of a stop sequence that completed is ever emitted, and every
    # token fed is counted exactly once.
    if stopped:
        assert not any(stop in out for stop in stops)
    scanner = StopScanner(stops)
    fed = returned = 0
    for piece in one:
        _, count = scanner.feed(piece, 2)
        fed, returned = fed + 2, returned + count
        if scanner.stopped:
            break
    else:
        returned += scanner.flush()[1]
    assert returned == fed


def test_the_stop_that_completes_first_wins_whatever_the_split() -> None:
    # "b" completes before "abc" could: the text ends at "b" either way.
    assert _scan(["ab", "c"], ["abc", "b"]) == ("a", 1, True)
    assert _scan(["abc"], ["abc", "b"]) == ("a", 1, True)
    # Two completing at the same character: the longer is cut.
    assert _scan(["xab"], ["b", "ab"]) == ("x", 1, True)
