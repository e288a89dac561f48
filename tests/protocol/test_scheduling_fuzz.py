"""Property tests of the ``sched.*`` decoders against hostile frames: random
bytes, valid frames with bytes flipped or cut, and msgpack bodies of any
shape under every ``sched.*`` tag. Each decodes to a message that keeps its
own rules or is refused with a :class:`MessageDecodeError` naming the check,
never quoting the frame (a canary rides in each)."""

from __future__ import annotations

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.customer_data import CustomerData
from protocol.inference import (
    ChatTurn,
    FinishReason,
    GenerateChunk,
    GenerateDone,
    GenerateRequest,
    Role,
)
from protocol.messages import (
    Envelope,
    ErrorCode,
    ErrorReply,
    MessageCheck,
    MessageDecodeError,
    decode_envelope,
    encode_envelope,
)
from protocol.scheduling import (
    ID_SIZE,
    MAX_SLOTS,
    AttemptChunk,
    AttemptDone,
    AttemptFailed,
    CancelAttempt,
    Heartbeat,
    JoinAccepted,
    JoinScheduler,
    LeaveScheduler,
    PlaceAttempt,
    Rejoin,
)

CANARY = "CANARY-sched-fuzz-2b9d"
ID = bytes(range(ID_SIZE))
TAGS = [
    "sched.join",
    "sched.joined",
    "sched.heartbeat",
    "sched.rejoin",
    "sched.leave",
    "sched.place",
    "sched.cancel",
    "sched.chunk",
    "sched.done",
    "sched.error",
]
FRAMES = [
    encode_envelope(Envelope.wrap(message))
    for message in (
        JoinScheduler(ID, CANARY, 4),
        JoinAccepted(ID, 1.5),
        Heartbeat(ID, 2, (ID,)),
        Rejoin(ID),
        LeaveScheduler(ID),
        PlaceAttempt(
            ID, GenerateRequest("m", (ChatTurn(Role.USER, CustomerData(CANARY)),), 8, 0.5, 1.0, 1)
        ),
        CancelAttempt(ID),
        AttemptChunk(ID, 3, GenerateChunk(CustomerData(CANARY), 1)),
        AttemptDone(ID, 4, GenerateDone(FinishReason.STOP, 4)),
        AttemptFailed(ID, ErrorReply(ErrorCode.OVERLOADED, True)),
    )
]


def _decode_or_refuse(frame: bytes) -> object | None:
    refusal: MessageDecodeError | None = None
    body: object | None = None
    try:
        body = decode_envelope(frame).body
    except MessageDecodeError as exc:
        refusal = exc
    if refusal is not None:
        assert isinstance(refusal.check, MessageCheck)
        assert CANARY not in str(refusal)
        assert refusal.__context__ is None and refusal.__cause__ is None
        return None
    return body


def _holds_its_rules(body: object) -> None:
    """A decoded sched.* message satisfies what its constructor checks."""
    for field in ("session", "attempt"):
        value = getattr(body, field, None)
        if value is not None:
            assert isinstance(value, bytes) and len(value) == ID_SIZE
    if isinstance(body, JoinScheduler):
        assert body.model and 1 <= body.slots <= MAX_SLOTS
    if isinstance(body, Heartbeat):
        assert 0 <= body.free_slots <= MAX_SLOTS and len(body.running) <= MAX_SLOTS
        assert all(len(attempt) == ID_SIZE for attempt in body.running)


@settings(max_examples=500)
@given(st.binary(max_size=512))
def test_random_bytes_are_refused_with_a_typed_error(data: bytes) -> None:
    body = _decode_or_refuse(data + CANARY.encode())
    if body is not None:
        _holds_its_rules(body)


@settings(max_examples=500)
@given(
    st.sampled_from(FRAMES),
    st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=4),
    st.integers(min_value=0),
)
def test_flipped_or_cut_frames_decode_within_the_rules_or_are_refused(
    frame: bytes, flips: list[tuple[int, int]], cut: int
) -> None:
    mutated = bytearray(frame)
    for at, value in flips:
        mutated[at % len(mutated)] = value
    body = _decode_or_refuse(bytes(mutated[: len(mutated) - cut % 8]))
    if body is not None:
        _holds_its_rules(body)


_msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=8)
    | st.just(CANARY)
    | st.binary(max_size=20)
    | st.just(ID),
    lambda inner: st.lists(inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=500)
@given(st.sampled_from(TAGS), st.lists(_msgpack_values, max_size=5))
def test_any_body_under_a_sched_tag_is_checked(tag: str, body: list[object]) -> None:
    frame = msgpack.packb([1, tag, 0, body], use_bin_type=True)
    decoded = _decode_or_refuse(frame)
    if decoded is not None:
        _holds_its_rules(decoded)
