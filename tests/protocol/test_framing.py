"""Frames and the sans-IO secure session: chunking, close, tamper/replay, gating."""

from __future__ import annotations

import array
import itertools
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.framing import (
    MAX_CHUNK_DATA,
    MAX_FRAME_LEN,
    MIN_MORE_CHUNK_DATA,
    NEED_DATA,
    PEER_CLOSED,
    DecryptFailed,
    FrameDecoder,
    FrameTooLarge,
    HandshakeFailed,
    HandshakeProgress,
    PayloadReceived,
    PayloadTooLarge,
    PeerClosed,
    PeerIdentity,
    PeerRejected,
    ProtocolViolation,
    SecureSession,
    SessionError,
    SessionFailed,
    SessionState,
    SessionStateError,
    TruncatedStream,
    encode_frame,
)
from protocol.noise import CipherState, HandshakeState, KeyPair, NoiseProtocol

PROTOCOL = NoiseProtocol.from_name("Noise_XX_25519_ChaChaPoly_BLAKE2s")
PROLOGUE = b"mantle/1 test"


def entropy_from(seed: int) -> Any:
    rng = random.Random(seed)
    return rng.randbytes


def key_pair(seed: int) -> KeyPair:
    return KeyPair.generate(PROTOCOL.dh, entropy_from(seed))


def handshake(initiator: bool, seed: int) -> HandshakeState:
    return HandshakeState(
        PROTOCOL,
        initiator=initiator,
        prologue=PROLOGUE,
        static=key_pair(seed),
        entropy=entropy_from(seed + 1000),
    )


def split_frames(data: bytes) -> list[bytes]:
    frames = FrameDecoder().feed(data)
    return [bytes(f) for f in frames]


def drain(session: SecureSession) -> list[Any]:
    """Every event available now, up to NEED_DATA, PEER_CLOSED or a handshake step."""
    events: list[Any] = []
    while True:
        event = session.next_event()
        if event is NEED_DATA:
            return events
        events.append(event)
        if isinstance(event, (PeerClosed, HandshakeProgress, PeerIdentity)):
            return events


def connected_pair(
    *, max_payload: int = 1 << 22, initiator_payload: bytes = b"I", responder_payload: bytes = b"R"
) -> tuple[SecureSession, SecureSession]:
    initiator = SecureSession(
        handshake(True, 1), handshake_payload=initiator_payload, max_payload=max_payload
    )
    responder = SecureSession(
        handshake(False, 2), handshake_payload=responder_payload, max_payload=max_payload
    )
    responder.receive_data(initiator.write_handshake())
    assert responder.next_event() == HandshakeProgress()
    initiator.receive_data(responder.write_handshake())
    identity = initiator.next_event()
    assert isinstance(identity, PeerIdentity) and identity.payload == responder_payload
    initiator.accept_peer()
    responder.receive_data(initiator.write_handshake())
    identity = responder.next_event()
    assert isinstance(identity, PeerIdentity) and identity.payload == initiator_payload
    responder.accept_peer()
    assert initiator.state is responder.state is SessionState.OPEN
    return initiator, responder


class RawPeer:
    """The far end of a session driven by hand, to send what a correct peer never would."""

    def __init__(self, initiator: bool) -> None:
        self.handshake = handshake(initiator, 7 if initiator else 8)
        self.send: CipherState | None = None
        self.recv: CipherState | None = None

    def write(self, payload: bytes = b"") -> bytes:
        data = encode_frame(self.handshake.write_message(payload))
        self._maybe_split()
        return data

    def read(self, data: bytes) -> bytes:
        (frame,) = split_frames(data)
        payload = self.handshake.read_message(frame)
        self._maybe_split()
        return payload

    def _maybe_split(self) -> None:
        if self.handshake.is_complete:
            self.send, self.recv = self.handshake.split()

    def transport(self, plaintext: bytes) -> bytes:
        assert self.send is not None
        return encode_frame(self.send.encrypt_with_ad(b"", plaintext))


def raw_initiator_and_session(max_payload: int = 1 << 20) -> tuple[RawPeer, SecureSession]:
    peer = RawPeer(initiator=True)
    session = SecureSession(handshake(False, 2), handshake_payload=b"R", max_payload=max_payload)
    session.receive_data(peer.write())
    drain(session)
    assert peer.read(session.write_handshake()) == b"R"
    session.receive_data(peer.write(b"I"))
    assert isinstance(session.next_event(), PeerIdentity)
    session.accept_peer()
    return peer, session


# -- frames -----------------------------------------------------------------------------


@settings(max_examples=100)
@given(
    bodies=st.lists(st.binary(max_size=300), max_size=8),
    cuts=st.lists(st.integers(0, 3000), max_size=10),
)
def test_frames_survive_any_split(bodies: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(encode_frame(b) for b in bodies)
    points = sorted({c for c in cuts if c < len(stream)} | {0, len(stream)})
    decoder = FrameDecoder()
    got: list[bytes] = []
    for a, b in itertools.pairwise(points):
        got += [bytes(f) for f in decoder.feed(stream[a:b])]
        assert decoder.buffered <= 2 + 300
    assert got == bodies
    assert decoder.buffered == 0


def test_frame_maximum_is_enforced_from_the_length_prefix_alone() -> None:
    decoder = FrameDecoder(max_frame_len=100)
    assert decoder.feed(encode_frame(b"x" * 100)) == [memoryview(b"x" * 100)]
    assert decoder.feed(b"\x00") == []
    with pytest.raises(FrameTooLarge) as info:
        decoder.feed(b"\x65")  # 0x0065 = 101: refused before any body byte arrives
    assert info.value.check == "frame.length"
    assert decoder.buffered == 0
    with pytest.raises(SessionFailed):
        decoder.feed(b"")


def test_frame_prefix_split_across_feeds_is_checked_too() -> None:
    decoder = FrameDecoder(max_frame_len=10)
    assert decoder.feed(encode_frame(b"abc") + b"\x00") == [memoryview(b"abc")]
    with pytest.raises(FrameTooLarge):
        decoder.feed(b"\x0b")


def test_encode_frame_refuses_oversized_messages() -> None:
    assert len(encode_frame(b"\x00" * MAX_FRAME_LEN)) == MAX_FRAME_LEN + 2
    with pytest.raises(FrameTooLarge):
        encode_frame(b"\x00" * (MAX_FRAME_LEN + 1))


def test_decoder_copies_mutable_input() -> None:
    data = bytearray(encode_frame(b"hello"))
    (frame,) = FrameDecoder().feed(data)
    data[2:7] = b"XXXXX"
    assert bytes(frame) == b"hello"


# -- round trips ------------------------------------------------------------------------

BOUNDARY_SIZES = [
    0,
    1,
    MAX_CHUNK_DATA - 1,
    MAX_CHUNK_DATA,
    MAX_CHUNK_DATA + 1,
    2 * MAX_CHUNK_DATA,
    65536,
    200_000,
]


@pytest.mark.parametrize("size", BOUNDARY_SIZES)
def test_payloads_round_trip_both_directions(size: int) -> None:
    initiator, responder = connected_pair()
    payload = random.Random(size).randbytes(size)
    for sender, receiver in [(initiator, responder), (responder, initiator)]:
        wire = sender.send(payload)
        expected_frames = max(1, -(-size // MAX_CHUNK_DATA))
        assert len(split_frames(wire)) == expected_frames
        receiver.receive_data(wire)
        assert drain(receiver) == [PayloadReceived(payload)]


@pytest.mark.parametrize("size", [MAX_CHUNK_DATA + 1, 65536, 2 * MAX_CHUNK_DATA + 7, 500_000])
def test_large_payloads_are_split_evenly(size: int) -> None:
    peer, session = raw_initiator_and_session()
    frames = split_frames(session.send(b"q" * size))
    assert peer.recv is not None
    plaintexts = [peer.recv.decrypt_with_ad(b"", f) for f in frames]
    lengths = [len(p) - 1 for p in plaintexts]
    assert sum(lengths) == size
    assert max(lengths) - min(lengths) <= 1
    assert lengths == sorted(lengths, reverse=True)
    assert [p[0] for p in plaintexts] == [0] * (len(frames) - 1) + [1]
    assert min(lengths) >= MIN_MORE_CHUNK_DATA


def test_minimum_more_chunks_are_accepted() -> None:
    peer, session = raw_initiator_and_session()
    session.receive_data(
        peer.transport(b"\x00" + b"a" * MIN_MORE_CHUNK_DATA) + peer.transport(b"\x01b")
    )
    assert drain(session) == [PayloadReceived(b"a" * MIN_MORE_CHUNK_DATA + b"b")]


@pytest.mark.parametrize(
    "chunks",
    [
        [b"a" * MIN_MORE_CHUNK_DATA, b""],  # an empty FINAL ends the payload
        [b"a" * MIN_MORE_CHUNK_DATA, b"b"],
        [b"a" * MAX_CHUNK_DATA, b"b" * MAX_CHUNK_DATA, b"c" * 5000],
        [b"a" * 40_000, b"b" * 5000],
        [b"x" * 5000],
        [b"x" * MAX_CHUNK_DATA],
    ],
)
def test_reassembly_of_any_valid_chunking(chunks: list[bytes]) -> None:
    flags = [b"\x00"] * (len(chunks) - 1) + [b"\x01"]
    # In one read, and in reads that cut frames anywhere: the same payload.
    for read_size in (None, 997):
        peer, session = raw_initiator_and_session()
        wire = b"".join(peer.transport(f + c) for f, c in zip(flags, chunks, strict=True))
        step = read_size or len(wire)
        events: list[Any] = []
        for start in range(0, len(wire), step):
            session.receive_data(wire[start : start + step])
            events += drain(session)
        assert events == [PayloadReceived(b"".join(chunks))]


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(
        st.sampled_from(
            [0, 1, 4000, 4096, 5000, MAX_CHUNK_DATA, MAX_CHUNK_DATA + 1, 65536, 140_000, 300_000]
        ),
        min_size=1,
        max_size=6,
    ),
    seed=st.integers(0, 2**32),
)
def test_payloads_of_mixed_sizes_follow_each_other_exactly(sizes: list[int], seed: int) -> None:
    # Single and multi-chunk payloads in any order: nothing of an earlier
    # (longer) payload may show in a later one.
    initiator, responder = connected_pair()
    rng = random.Random(seed)
    for size in sizes:
        payload = rng.randbytes(size)
        for sender, receiver in [(initiator, responder), (responder, initiator)]:
            receiver.receive_data(sender.send(payload))
            assert drain(receiver) == [PayloadReceived(payload)]


def test_tampered_later_chunk_fails_and_delivers_nothing() -> None:
    initiator, responder = connected_pair()
    frames = split_frames(initiator.send(b"p" * 100_000))
    assert len(frames) == 2
    second = bytearray(frames[1])
    second[100] ^= 0x40
    responder.receive_data(encode_frame(frames[0]) + encode_frame(bytes(second)))
    with pytest.raises(DecryptFailed) as info:
        drain(responder)
    assert info.value.check == "frame.authentication"
    assert responder.state is SessionState.FAILED
    with pytest.raises(SessionFailed):
        responder.next_event()


def test_handshake_hash_and_identities_agree() -> None:
    initiator, responder = connected_pair()
    assert initiator.handshake_hash == responder.handshake_hash
    assert initiator.remote_static == key_pair(2).public
    assert responder.remote_static == key_pair(1).public
    assert initiator.peer_handshake_payload == b"R"
    assert responder.peer_handshake_payload == b"I"


@settings(max_examples=40, deadline=None)
@given(
    script=st.lists(
        st.tuples(
            st.booleans(), st.sampled_from([0, 1, 100, MAX_CHUNK_DATA, MAX_CHUNK_DATA + 5, 140_000])
        ),
        max_size=8,
    ),
    chunking=st.integers(1, 70_000),
    seed=st.integers(0, 2**32),
)
def test_sessions_deliver_everything_in_order_under_any_read_sizes(
    script: list[tuple[bool, int]], chunking: int, seed: int
) -> None:
    """A model-based check: whatever each side sends arrives intact and in
    order, however the byte stream is cut, and CLOSE ends each direction."""
    initiator, responder = connected_pair()
    rng = random.Random(seed)
    sent: dict[bool, list[bytes]] = {True: [], False: []}
    wires: dict[bool, bytearray] = {True: bytearray(), False: bytearray()}
    for from_initiator, size in script:
        payload = rng.randbytes(size)
        sent[from_initiator].append(payload)
        wires[from_initiator] += (initiator if from_initiator else responder).send(payload)
    wires[True] += initiator.close()
    wires[False] += responder.close()
    for from_initiator, receiver in [(True, responder), (False, initiator)]:
        wire = bytes(wires[from_initiator])
        received: list[bytes] = []
        closed = False
        for start in range(0, len(wire), chunking):
            receiver.receive_data(wire[start : start + chunking])
            for event in drain(receiver):
                if isinstance(event, PayloadReceived):
                    received.append(event.data)
                else:
                    closed = True
        receiver.receive_eof()
        assert receiver.next_event() is PEER_CLOSED
        assert closed
        assert received == sent[from_initiator]
    assert initiator.state is responder.state is SessionState.CLOSED


# -- the verification gate --------------------------------------------------------------


def test_nothing_is_written_or_delivered_before_the_peer_is_accepted() -> None:
    initiator = SecureSession(handshake(True, 1), handshake_payload=b"I")
    responder = SecureSession(handshake(False, 2), handshake_payload=b"R")
    responder.receive_data(initiator.write_handshake())
    drain(responder)
    initiator.receive_data(responder.write_handshake())
    assert isinstance(initiator.next_event(), PeerIdentity)
    assert initiator.state is SessionState.HANDSHAKE_VERIFY
    initiator.accept_peer()
    # The initiator's last handshake message and a payload arrive together.
    responder.receive_data(initiator.write_handshake() + initiator.send(b"early"))
    assert isinstance(responder.next_event(), PeerIdentity)
    assert responder.state is SessionState.HANDSHAKE_VERIFY
    with pytest.raises(SessionStateError):
        responder.next_event()  # no transport data before a verdict; misuse fails the session
    assert responder.state is SessionState.FAILED


def test_accepting_releases_buffered_transport_data() -> None:
    initiator = SecureSession(handshake(True, 1), handshake_payload=b"I")
    responder = SecureSession(handshake(False, 2), handshake_payload=b"R")
    responder.receive_data(initiator.write_handshake())
    drain(responder)
    initiator.receive_data(responder.write_handshake())
    initiator.next_event()
    initiator.accept_peer()
    responder.receive_data(initiator.write_handshake() + initiator.send(b"early"))
    assert isinstance(responder.next_event(), PeerIdentity)
    responder.accept_peer()
    assert drain(responder) == [PayloadReceived(b"early")]


def test_rejecting_the_peer_fails_the_session_and_writes_nothing() -> None:
    initiator = SecureSession(handshake(True, 1), handshake_payload=b"I")
    responder = SecureSession(handshake(False, 2), handshake_payload=b"R")
    responder.receive_data(initiator.write_handshake())
    drain(responder)
    initiator.receive_data(responder.write_handshake())
    assert isinstance(initiator.next_event(), PeerIdentity)
    error = initiator.reject_peer()
    assert isinstance(error, PeerRejected)
    assert initiator.state is SessionState.FAILED
    for call in (initiator.write_handshake, initiator.next_event, lambda: initiator.send(b"x")):
        with pytest.raises(SessionFailed):
            call()


def test_local_misuse_is_a_state_error() -> None:
    initiator = SecureSession(handshake(True, 1))
    with pytest.raises(SessionStateError):
        initiator.send(b"too early")
    responder = SecureSession(handshake(False, 2))
    with pytest.raises(SessionStateError):
        responder.write_handshake()
    with pytest.raises(SessionStateError):
        _ = SecureSession(handshake(False, 3)).handshake_hash


def test_payload_in_the_unauthenticated_first_message_is_refused() -> None:
    peer = RawPeer(initiator=True)
    session = SecureSession(handshake(False, 2))
    session.receive_data(peer.write(b"smuggled"))
    with pytest.raises(HandshakeFailed) as info:
        session.next_event()
    assert info.value.check == "handshake.unexpected_payload"


@pytest.mark.parametrize("garbage", [b"", b"\x00" * 10, b"\xff" * 200])
def test_garbage_handshake_messages_fail_the_handshake(garbage: bytes) -> None:
    initiator = SecureSession(handshake(True, 1))
    initiator.write_handshake()
    initiator.receive_data(encode_frame(garbage))
    with pytest.raises(HandshakeFailed):
        initiator.next_event()
    with pytest.raises(SessionFailed):
        initiator.next_event()


def test_tampered_handshake_message_fails_the_handshake() -> None:
    initiator = SecureSession(handshake(True, 1))
    responder = SecureSession(handshake(False, 2), handshake_payload=b"document")
    responder.receive_data(initiator.write_handshake())
    drain(responder)
    reply = bytearray(responder.write_handshake())
    reply[-1] ^= 1
    initiator.receive_data(bytes(reply))
    with pytest.raises(HandshakeFailed):
        initiator.next_event()


# -- tamper, replay, reorder, drop ------------------------------------------------------


@settings(max_examples=60)
@given(bit=st.integers(0, (2 + 16 + 1 + 40) * 8 - 1))
def test_any_flipped_bit_in_a_transport_frame_is_detected(bit: int) -> None:
    initiator, responder = connected_pair()
    wire = bytearray(initiator.send(b"x" * 40))
    wire[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises((DecryptFailed, TruncatedStream)):
        # A flipped length bit makes the frame shorter (auth fails) or longer
        # (the stream then ends mid-frame).
        responder.receive_data(bytes(wire))
        drain(responder)
        responder.receive_eof()
        drain(responder)
    assert responder.state is SessionState.FAILED
    with pytest.raises(SessionFailed):
        responder.receive_data(b"")


def test_replayed_frame_fails_decryption() -> None:
    initiator, responder = connected_pair()
    frame = initiator.send(b"pay me once")
    responder.receive_data(frame)
    assert drain(responder) == [PayloadReceived(b"pay me once")]
    responder.receive_data(frame)
    with pytest.raises(DecryptFailed) as info:
        drain(responder)
    assert info.value.check == "frame.authentication"


def test_reordered_frames_fail_decryption() -> None:
    initiator, responder = connected_pair()
    first, second = initiator.send(b"first"), initiator.send(b"second")
    responder.receive_data(second + first)
    with pytest.raises(DecryptFailed):
        drain(responder)


def test_dropped_frame_fails_decryption() -> None:
    initiator, responder = connected_pair()
    initiator.send(b"lost")
    responder.receive_data(initiator.send(b"after"))
    with pytest.raises(DecryptFailed):
        drain(responder)


def test_frames_are_not_valid_in_the_other_direction() -> None:
    initiator, _ = connected_pair()
    reflected = initiator.send(b"mirror")
    initiator.receive_data(reflected)
    with pytest.raises(DecryptFailed):
        drain(initiator)


# -- truncation and close ---------------------------------------------------------------


def test_eof_without_close_is_truncation() -> None:
    initiator, responder = connected_pair()
    responder.receive_data(initiator.send(b"complete message"))
    assert drain(responder) == [PayloadReceived(b"complete message")]
    responder.receive_eof()
    with pytest.raises(TruncatedStream) as info:
        responder.next_event()
    assert info.value.check == "stream.truncated"


def test_eof_inside_a_multi_chunk_payload_is_truncation() -> None:
    initiator, responder = connected_pair()
    wire = initiator.send(b"z" * (3 * MAX_CHUNK_DATA))
    frames = split_frames(wire)
    responder.receive_data(encode_frame(frames[0]) + encode_frame(frames[1]))
    assert drain(responder) == []
    responder.receive_eof()
    with pytest.raises(TruncatedStream):
        responder.next_event()


def test_eof_mid_frame_is_truncation() -> None:
    initiator, responder = connected_pair()
    wire = initiator.send(b"cut me") + initiator.close()
    responder.receive_data(wire[:-3])
    assert drain(responder) == [PayloadReceived(b"cut me")]
    responder.receive_eof()
    with pytest.raises(TruncatedStream):
        responder.next_event()


def test_eof_during_the_handshake_is_truncation() -> None:
    initiator = SecureSession(handshake(True, 1))
    initiator.write_handshake()
    initiator.receive_eof()
    with pytest.raises(TruncatedStream):
        initiator.next_event()


def test_close_then_eof_is_clean_and_sending_after_close_is_refused() -> None:
    initiator, responder = connected_pair()
    responder.receive_data(initiator.close())
    assert responder.next_event() is PEER_CLOSED
    assert responder.state is SessionState.RECV_CLOSED
    responder.receive_eof()
    assert responder.next_event() is PEER_CLOSED
    # The other direction stays open until its own CLOSE.
    initiator.receive_data(responder.send(b"still here") + responder.close())
    assert drain(initiator) == [PayloadReceived(b"still here"), PEER_CLOSED]
    assert initiator.state is responder.state is SessionState.CLOSED
    with pytest.raises(SessionStateError):
        responder.send(b"after close")


# -- size limits ------------------------------------------------------------------------


def test_oversized_payload_is_refused_while_reassembling() -> None:
    # The receiver accepts at most 100 KB; the sender's first two chunks already exceed it.
    peer, receiver = raw_initiator_and_session(max_payload=100_000)
    more = b"\x00" + b"m" * MAX_CHUNK_DATA
    receiver.receive_data(peer.transport(more))
    assert drain(receiver) == []
    receiver.receive_data(peer.transport(more))
    with pytest.raises(PayloadTooLarge):
        drain(receiver)
    assert receiver.state is SessionState.FAILED


def test_oversized_final_chunk_is_refused() -> None:
    peer, receiver = raw_initiator_and_session(max_payload=1000)
    receiver.receive_data(peer.transport(b"\x01" + b"f" * 1001))
    with pytest.raises(PayloadTooLarge):
        drain(receiver)


def test_sender_refuses_oversized_payload_and_stays_usable() -> None:
    initiator, responder = connected_pair(max_payload=1000)
    with pytest.raises(PayloadTooLarge):
        initiator.send(b"x" * 1001)
    responder.receive_data(initiator.send(b"x" * 1000))
    assert drain(responder) == [PayloadReceived(b"x" * 1000)]


def test_payload_size_is_counted_in_bytes_for_any_buffer() -> None:
    # len() of a memoryview over 8-byte items counts items; the bound and the
    # chunking must count bytes.
    initiator, responder = connected_pair(max_payload=1000)
    with pytest.raises(PayloadTooLarge):
        initiator.send(memoryview(array.array("Q", range(200))))  # 1600 bytes
    fits = array.array("Q", range(100))
    responder.receive_data(initiator.send(memoryview(fits)))
    assert drain(responder) == [PayloadReceived(fits.tobytes())]
    initiator, responder = connected_pair()
    large = array.array("Q", range(20_000))  # 160 000 bytes: three chunks
    wire = initiator.send(memoryview(large))
    assert len(split_frames(wire)) == 3
    responder.receive_data(wire)
    assert drain(responder) == [PayloadReceived(large.tobytes())]


# -- rule violations by a peer holding the keys ------------------------------------------


@pytest.mark.parametrize(
    ("plaintexts", "error", "check"),
    [
        ([b""], ProtocolViolation, "chunk.empty"),
        ([b"\x07abc"], ProtocolViolation, "chunk.flag"),
        ([b"\x00short"], ProtocolViolation, "chunk.short_more"),
        ([b"\x00" + b"m" * (MIN_MORE_CHUNK_DATA - 1)], ProtocolViolation, "chunk.short_more"),
        ([b"\x00", b"\x01"], ProtocolViolation, "chunk.short_more"),
        ([b"\x02data"], ProtocolViolation, "chunk.close_with_data"),
        ([b"\x00" + b"m" * MAX_CHUNK_DATA, b"\x02"], ProtocolViolation, "chunk.close_mid_payload"),
        ([b"\x02", b"\x01after close"], ProtocolViolation, "session.data_after_close"),
        # The same rules once a payload is being reassembled, and for large chunks.
        ([b"\x00" + b"m" * MIN_MORE_CHUNK_DATA, b""], ProtocolViolation, "chunk.empty"),
        ([b"\x00" + b"m" * MIN_MORE_CHUNK_DATA, b"\x07x"], ProtocolViolation, "chunk.flag"),
        ([b"\x07" + b"x" * 5000], ProtocolViolation, "chunk.flag"),
        ([b"\x00" + b"m" * MIN_MORE_CHUNK_DATA, b"\x00m"], ProtocolViolation, "chunk.short_more"),
        ([b"\x00" + b"m" * 5000], ProtocolViolation, "chunk.short_more"),
        ([b"\x02" + b"d" * 5000], ProtocolViolation, "chunk.close_with_data"),
    ],
)
def test_peer_rule_violations(
    plaintexts: list[bytes], error: type[SessionError], check: str
) -> None:
    peer, session = raw_initiator_and_session()
    session.receive_data(b"".join(peer.transport(p) for p in plaintexts))
    with pytest.raises(error) as info:
        while True:
            event = session.next_event()
            assert event is not NEED_DATA
    assert info.value.check == check
    assert session.state is SessionState.FAILED


def test_raw_peer_and_session_interoperate() -> None:
    peer, session = raw_initiator_and_session()
    session.receive_data(peer.transport(b"\x01hello"))
    assert drain(session) == [PayloadReceived(b"hello")]
    wire = session.send(b"back")
    (frame,) = split_frames(wire)
    assert peer.recv is not None
    assert peer.recv.decrypt_with_ad(b"", frame) == b"\x01back"


def test_errors_carry_no_payload_bytes() -> None:
    canary = b"canary-payload-4242"
    peer, session = raw_initiator_and_session(max_payload=10)
    session.receive_data(peer.transport(b"\x01" + canary))
    with pytest.raises(PayloadTooLarge) as info:
        drain(session)
    assert canary.decode() not in str(info.value)
