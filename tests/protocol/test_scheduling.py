"""The ``sched.*`` wire messages: each round-trips through the strict codec,
and what breaks their rules (id sizes, slots, intervals) is refused on
decoding with the field named, never a value."""

from __future__ import annotations

import dataclasses

import msgpack
import pytest

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

CANARY = "CANARY-wire-sched-4410"
ID = bytes(range(ID_SIZE))
REQUEST = GenerateRequest("m", (ChatTurn(Role.USER, CustomerData(CANARY)),), 8, 0.5, 1.0, 1)

MESSAGES = [
    JoinScheduler(ID, "smollm2-135m-instruct", 4),
    JoinAccepted(ID, 1.5),
    Heartbeat(ID, 2, (ID, bytes(ID_SIZE))),
    Rejoin(ID),
    LeaveScheduler(ID),
    PlaceAttempt(ID, REQUEST),
    CancelAttempt(ID),
    AttemptChunk(ID, 3, GenerateChunk(CustomerData(CANARY), 1)),
    AttemptDone(ID, 4, GenerateDone(FinishReason.STOP, 4)),
    AttemptFailed(ID, ErrorReply(ErrorCode.OVERLOADED, True)),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_each_message_round_trips(message: object) -> None:
    decoded = decode_envelope(encode_envelope(Envelope.wrap(message))).body
    if isinstance(message, PlaceAttempt):
        # Customer data compares by identity only (it is unhashable and
        # redacting); its text must survive the trip unchanged.
        assert isinstance(decoded, PlaceAttempt) and decoded.attempt == message.attempt
        assert decoded.request.turns[0].content.reveal_text() == CANARY
    elif isinstance(message, AttemptChunk):
        assert isinstance(decoded, AttemptChunk) and decoded.index == message.index
        assert decoded.chunk.text.reveal_text() == CANARY
    else:
        assert decoded == message


@pytest.mark.parametrize(
    "build",
    [
        lambda: JoinScheduler(b"short", "m", 1),
        lambda: JoinScheduler(ID, "", 1),
        lambda: JoinAccepted(ID, 0.0),
        lambda: JoinAccepted(ID, float("inf")),
        lambda: Heartbeat(ID, 1, (b"x" * (ID_SIZE - 1),)),
        lambda: CancelAttempt(bytes(ID_SIZE + 1)),
    ],
)
def test_messages_that_break_their_rules_cannot_be_built(build: object) -> None:
    with pytest.raises(ValueError):
        build()  # type: ignore[operator]


def _forged(tag: str, body: list[object]) -> bytes:
    return msgpack.packb([1, tag, 0, body], use_bin_type=True)


@pytest.mark.parametrize(
    ("frame", "check"),
    [
        (_forged("sched.cancel", [b"short"]), MessageCheck.RECORD_INVARIANT),
        (_forged("sched.join", [ID, "m", 0]), MessageCheck.FIELD_RANGE),
        (_forged("sched.join", [ID, "m", MAX_SLOTS + 1]), MessageCheck.FIELD_RANGE),
        (_forged("sched.join", [ID * 2, "m", 1]), MessageCheck.FIELD_LENGTH),
        (
            _forged("sched.heartbeat", [ID, 1, [ID] * (MAX_SLOTS + 1)]),
            MessageCheck.FIELD_LENGTH,
        ),
    ],
)
def test_decoding_refuses_broken_frames_naming_the_rule(frame: bytes, check: MessageCheck) -> None:
    with pytest.raises(MessageDecodeError) as refused:
        decode_envelope(frame)
    assert refused.value.check is check
    assert CANARY not in str(refused.value)


def test_messages_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        CancelAttempt(ID).attempt = bytes(ID_SIZE)  # type: ignore[misc]
