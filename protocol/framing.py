"""Framing and the secure session over Noise, sans-IO (docs/architecture.md §7).

Nothing here touches a socket or a clock: bytes go in through
:meth:`SecureSession.receive_data`, events come out of
:meth:`SecureSession.next_event`, and every method that produces output
returns the bytes to write. :mod:`actors.channel` drives it over anyio streams;
the benchmark and the tests drive it directly.

Wire format
-----------

**Frames.** Each frame is a 2-byte big-endian length followed by exactly one
Noise message of that many bytes (at most 65535, the Noise maximum)::

    +--------+--------+---------------------- ... ---+
    | len hi | len lo |  Noise message (len bytes)   |
    +--------+--------+---------------------- ... ---+

:class:`FrameDecoder` reads the length first and refuses a frame longer than
its maximum *before* buffering any of its body; it never holds more than one
incomplete frame.

**Handshake.** The first frames carry the Noise handshake messages, in the
order the pattern prescribes (XX: initiator ``e``; responder ``e, ee, s, es``;
initiator ``s, se``). The initiator's first message carries an empty payload,
since it travels before any key is agreed; every later handshake message a
side writes carries that side's *handshake payload* (in a node link, its
attestation document). A handshake message read before the peer's static key
is known must have an empty payload.

As soon as a read reveals the peer's static key, the session stops in
``HANDSHAKE_VERIFY`` and reports :class:`PeerIdentity`. It writes nothing and
delivers no transport data until :meth:`SecureSession.accept_peer` is called;
:meth:`SecureSession.reject_peer` ends it instead.

**Transport.** After the handshake every frame is one Noise transport
message (``ChaChaPoly`` with the implicit 64-bit nonce, so a replayed,
reordered, dropped or altered frame fails authentication). Its plaintext is a
1-byte chunk flag followed by chunk data::

    MORE  (0x00)  data continues in the next chunk
    FINAL (0x01)  last (or only) chunk of a payload; 0..65518 bytes
    CLOSE (0x02)  no data; the sender will send nothing more

A payload of ``n`` bytes travels as ``k = ceil(n / 65518)`` chunks (one when
``n`` is 0), ``k - 1`` MORE and one FINAL, and the sender splits it *evenly*
(sizes differ by at most one byte, longer ones first): measured, two
half-size AEAD calls for a 64 KiB payload cost about 10% less than a full
65519-byte call plus a tiny one. The receiver requires every MORE chunk to
carry at least MIN_MORE_CHUNK_DATA (32759) bytes, which any even split
satisfies and which bounds how many pieces it holds. The reassembled size is
bounded (``max_payload``) chunk by chunk, before a chunk is kept.

The stream ends with CLOSE; a transport that ends without one is reported as
:class:`TruncatedStream`, so an attacker who cuts a connection cannot make a
partial stream look complete.

After any error the session is ``FAILED``: its keys are dropped and every
further call raises :class:`SessionFailed`. The one exception is
:meth:`SecureSession.send` refusing a payload above ``max_payload``, which is
checked before anything is encrypted and leaves the session as it was.

Errors
------

Every failure is a :class:`SessionError`; its ``check``, a
:class:`SessionCheck`, names the rule that failed. The whole tree, with the
checks each class carries (``actors.channel``, which drives a session over a
stream, adds the last five)::

    SessionError                 nonce.exhausted
    ├── FrameTooLarge            frame.length
    ├── TruncatedStream          stream.truncated
    ├── PayloadTooLarge          payload.size
    ├── DecryptFailed            frame.authentication, frame.decrypt
    ├── HandshakeFailed          handshake.write, handshake.read,
    │                            handshake.unexpected_payload, handshake.no_peer_identity,
    │                            handshake.transport (actors.channel)
    ├── PeerRejected             handshake.peer_rejected, attestation.missing,
    │                            attestation.malformed, attestation.refused (actors.channel)
    ├── ProtocolViolation        session.unexpected, session.data_after_close,
    │                            chunk.empty, chunk.flag, chunk.short_more,
    │                            chunk.close_with_data, chunk.close_mid_payload
    ├── SessionStateError        session.state, session.fresh_handshake,
    │                            session.handshake_hash, session.data_after_eof,
    │                            session.max_payload
    ├── SessionFailed            session.failed, frame.failed
    ├── HandshakeTimeout         handshake.timeout (actors.channel)
    ├── HandshakeEvicted         handshake.evicted (actors.channel)
    ├── ChannelLimitReached      channel.limit (actors.channel)
    ├── LocalAttestationFailed   attestation.unavailable (actors.channel)
    └── TransportBroken          transport.write, transport.write_timeout (actors.channel)
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import struct
from typing import Final, NoReturn, TypeAlias

from protocol.noise import (
    MAX_MESSAGE_LEN,
    MAX_TRANSPORT_PAYLOAD_LEN,
    CipherState,
    HandshakeState,
    NoiseDecryptError,
    NoiseError,
    NoiseNonceExhausted,
)

FRAME_HEADER_LEN: Final = 2
#: The largest frame body: one Noise message.
MAX_FRAME_LEN: Final = MAX_MESSAGE_LEN
#: The most payload bytes one transport message carries (one byte is the flag).
MAX_CHUNK_DATA: Final = MAX_TRANSPORT_PAYLOAD_LEN - 1
#: The least data a MORE chunk may carry (half the maximum, rounded down).
MIN_MORE_CHUNK_DATA: Final = MAX_CHUNK_DATA // 2
#: Default bound on a reassembled payload; large enough for any envelope.
DEFAULT_MAX_PAYLOAD: Final = 8 * 1024 * 1024

CHUNK_MORE: Final = 0x00
CHUNK_FINAL: Final = 0x01
CHUNK_CLOSE: Final = 0x02

_HEADER: Final = struct.Struct(">H")
_MORE_FLAG: Final = bytes([CHUNK_MORE])
_FINAL_FLAG: Final = bytes([CHUNK_FINAL])
_CLOSE_FLAG: Final = bytes([CHUNK_CLOSE])


# -- errors ---------------------------------------------------------------------------


class SessionCheck(enum.StrEnum):
    """The rule a :class:`SessionError` reports as failed (its ``check``)."""

    # Frames.
    #: A frame's length prefix exceeds the maximum.
    FRAME_LENGTH = "frame.length"
    #: The frame decoder was used again after it failed.
    FRAME_FAILED = "frame.failed"
    #: A transport frame failed authentication (tampered, replayed, reordered, dropped).
    FRAME_AUTHENTICATION = "frame.authentication"
    #: A transport frame could not be decrypted for another reason.
    FRAME_DECRYPT = "frame.decrypt"
    #: The stream ended before the peer's CLOSE.
    STREAM_TRUNCATED = "stream.truncated"
    #: A payload exceeds ``max_payload``.
    PAYLOAD_SIZE = "payload.size"
    #: The 64-bit nonce of a direction is used up; nothing more may be encrypted.
    NONCE_EXHAUSTED = "nonce.exhausted"
    # Chunks (the plaintext of a transport frame).
    #: A transport frame carried no chunk flag.
    CHUNK_EMPTY = "chunk.empty"
    #: The chunk flag is none of MORE, FINAL, CLOSE.
    CHUNK_FLAG = "chunk.flag"
    #: A MORE chunk carried less than MIN_MORE_CHUNK_DATA bytes.
    CHUNK_SHORT_MORE = "chunk.short_more"
    #: A CLOSE chunk carried data.
    CHUNK_CLOSE_WITH_DATA = "chunk.close_with_data"
    #: CLOSE arrived in the middle of a chunked payload.
    CHUNK_CLOSE_MID_PAYLOAD = "chunk.close_mid_payload"
    # The handshake.
    #: Writing a handshake message failed.
    HANDSHAKE_WRITE = "handshake.write"
    #: A handshake message was malformed or failed authentication.
    HANDSHAKE_READ = "handshake.read"
    #: A handshake message carried a payload where none may travel.
    HANDSHAKE_UNEXPECTED_PAYLOAD = "handshake.unexpected_payload"
    #: The handshake completed without revealing the peer's static key.
    HANDSHAKE_NO_PEER_IDENTITY = "handshake.no_peer_identity"
    #: The peer's identity was refused by the verifier.
    HANDSHAKE_PEER_REJECTED = "handshake.peer_rejected"
    #: The handshake did not complete in time (raised by ``actors.channel``).
    HANDSHAKE_TIMEOUT = "handshake.timeout"
    #: The stream ended during the handshake (raised by ``actors.channel``).
    HANDSHAKE_TRANSPORT = "handshake.transport"
    # The session's state machine.
    #: The peer sent a message its state does not allow.
    SESSION_UNEXPECTED = "session.unexpected"
    #: The peer sent data after its own CLOSE.
    SESSION_DATA_AFTER_CLOSE = "session.data_after_close"
    #: A method was called in a state that does not allow it (a local bug).
    SESSION_STATE = "session.state"
    #: A session was built on a handshake that had already started.
    SESSION_FRESH_HANDSHAKE = "session.fresh_handshake"
    #: The handshake hash was read before the handshake completed.
    SESSION_HANDSHAKE_HASH = "session.handshake_hash"
    #: Bytes were fed after the end of the stream.
    SESSION_DATA_AFTER_EOF = "session.data_after_eof"
    #: The session was used again after it failed.
    SESSION_FAILED = "session.failed"
    #: The payload bound was changed while a payload was being reassembled (a local bug).
    SESSION_MAX_PAYLOAD = "session.max_payload"
    # The attestation exchange that opens a channel (raised by ``actors.channel``).
    #: The peer closed, or sent no evidence, where its attestation was due.
    ATTESTATION_MISSING = "attestation.missing"
    #: The peer's first message is not an evidence message.
    ATTESTATION_MALFORMED = "attestation.malformed"
    #: The peer's evidence did not verify (the verifier's error is the cause).
    ATTESTATION_REFUSED = "attestation.refused"
    #: This node could not produce its own evidence (its TPM refused or failed).
    ATTESTATION_UNAVAILABLE = "attestation.unavailable"
    #: A stalled handshake was dropped to admit a newer one (the handshake cap).
    HANDSHAKE_EVICTED = "handshake.evicted"
    #: A server already held its maximum of established channels (raised by ``actors.channel``).
    CHANNEL_LIMIT = "channel.limit"
    # The stream under a channel.
    #: Writing to the underlying stream failed (raised by ``actors.channel``).
    TRANSPORT_WRITE = "transport.write"
    #: A write did not complete within the write deadline: the peer stopped
    #: reading (raised by ``actors.channel``).
    TRANSPORT_WRITE_TIMEOUT = "transport.write_timeout"


class SessionError(Exception):
    """Base class of framing and secure-session errors; ``check`` names the rule.

    Messages are fixed text plus sizes: never payload bytes, keys or ciphertext.
    """

    def __init__(self, check: SessionCheck, detail: str = "") -> None:
        self.check = check
        super().__init__(f"check={check.value}" + (f" ({detail})" if detail else ""))


class FrameTooLarge(SessionError):
    """A frame's length prefix exceeds the maximum (refused before buffering)."""


class TruncatedStream(SessionError):
    """The byte stream ended before the peer's CLOSE (mid-frame, mid-payload, or between)."""


class PayloadTooLarge(SessionError):
    """A payload exceeds ``max_payload`` (sending or reassembling)."""


class DecryptFailed(SessionError):
    """A transport frame failed authentication: tampered, replayed, reordered or dropped."""


class HandshakeFailed(SessionError):
    """A handshake message was malformed, failed authentication, or broke a rule."""


class PeerRejected(SessionError):
    """The peer's identity (static key and handshake payload) was not accepted."""


class ProtocolViolation(SessionError):
    """The peer sent something the session rules forbid (bad chunk flag, data after CLOSE)."""


class SessionStateError(SessionError):
    """A method was called in a state that does not allow it (a local bug)."""


class SessionFailed(SessionError):
    """The session failed earlier and cannot be used any more."""


# -- frames ---------------------------------------------------------------------------


def encode_frame(message: bytes) -> bytes:
    """``message`` with its 2-byte length prefix."""
    if len(message) > MAX_FRAME_LEN:
        raise FrameTooLarge(SessionCheck.FRAME_LENGTH, f"{len(message)} > {MAX_FRAME_LEN}")
    return _HEADER.pack(len(message)) + message


class FrameDecoder:
    """Splits a byte stream into frames.

    ``feed`` returns the frames completed by the new bytes. The length prefix
    of every frame is checked against ``max_frame_len`` as soon as its two
    bytes are present, before any of the body is buffered; at most one
    incomplete frame (``2 + max_frame_len`` bytes) is ever held. Frames are
    returned as zero-copy views of the fed bytes where possible.
    """

    __slots__ = ("_body_len", "_buffer", "_failed", "_max")

    def __init__(self, max_frame_len: int = MAX_FRAME_LEN) -> None:
        if not 0 <= max_frame_len <= MAX_FRAME_LEN:
            raise ValueError("max_frame_len must be within [0, 65535]")
        self._max = max_frame_len
        self._buffer = bytearray()  # an incomplete frame: header and part of the body
        self._body_len = -1  # the incomplete frame's body length, once its header is in
        self._failed = False

    @property
    def buffered(self) -> int:
        """Bytes held of an incomplete frame (0 at a frame boundary)."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> list[memoryview]:
        if self._failed:
            raise SessionFailed(SessionCheck.FRAME_FAILED, "decoder failed earlier")
        # Views into the caller's mutable buffer could change under us; bytes cannot.
        view = memoryview(data if type(data) is bytes else bytes(data))
        end = len(view)
        pos = 0
        buffer = self._buffer
        if (
            not buffer
            and end >= FRAME_HEADER_LEN
            and end - FRAME_HEADER_LEN == (view[0] << 8) | view[1]
        ):
            # The common case: exactly one whole frame (one write on the other side).
            if end - FRAME_HEADER_LEN > self._max:
                self._checked_length(view[0], view[1])  # raises
            return [view[FRAME_HEADER_LEN:]]
        frames: list[memoryview] = []

        if buffer:
            if len(buffer) < FRAME_HEADER_LEN:
                take = min(FRAME_HEADER_LEN - len(buffer), end)
                buffer += view[:take]
                pos = take
                if len(buffer) < FRAME_HEADER_LEN:
                    return frames
                self._body_len = self._checked_length(buffer[0], buffer[1])
            missing = FRAME_HEADER_LEN + self._body_len - len(buffer)
            take = min(missing, end - pos)
            buffer += view[pos : pos + take]
            pos += take
            if take < missing:
                return frames
            frames.append(memoryview(bytes(buffer[FRAME_HEADER_LEN:])))
            buffer.clear()
            self._body_len = -1

        while end - pos >= FRAME_HEADER_LEN:
            length = self._checked_length(view[pos], view[pos + 1])
            start = pos + FRAME_HEADER_LEN
            if end - start < length:
                self._body_len = length
                break
            frames.append(view[start : start + length])
            pos = start + length

        if pos < end:
            buffer += view[pos:]
        return frames

    def _checked_length(self, high: int, low: int) -> int:
        length = (high << 8) | low
        if length > self._max:
            self._failed = True
            self._buffer = bytearray()
            raise FrameTooLarge(SessionCheck.FRAME_LENGTH, f"{length} > {self._max}")
        return length


# -- the secure session --------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class NeedData:
    """No complete event yet: feed more bytes (or EOF) and ask again."""


@dataclasses.dataclass(frozen=True, slots=True)
class HandshakeProgress:
    """A handshake message was consumed; consult :attr:`SecureSession.state` for the next step."""


@dataclasses.dataclass(frozen=True, slots=True)
class PeerIdentity:
    """The peer's static public key and handshake payload, to be verified.

    The session is in ``HANDSHAKE_VERIFY`` until accept_peer/reject_peer.
    """

    remote_static: bytes
    payload: bytes = dataclasses.field(repr=False)


@dataclasses.dataclass(frozen=True, slots=True)
class PayloadReceived:
    data: bytes = dataclasses.field(repr=False)


@dataclasses.dataclass(frozen=True, slots=True)
class PeerClosed:
    """The peer sent CLOSE: it will send nothing more."""


NEED_DATA: Final = NeedData()
HANDSHAKE_PROGRESS: Final = HandshakeProgress()
PEER_CLOSED: Final = PeerClosed()

Event: TypeAlias = NeedData | HandshakeProgress | PeerIdentity | PayloadReceived | PeerClosed


class SessionState(enum.Enum):
    # Members are singletons compared by identity; object hashing is C-level,
    # Enum's default __hash__ is a Python call on every table lookup.
    __hash__ = object.__hash__

    HANDSHAKE_WRITE = "handshake_write"  # our turn: call write_handshake()
    HANDSHAKE_READ = "handshake_read"  # the peer's turn: feed bytes, call next_event()
    HANDSHAKE_VERIFY = "handshake_verify"  # peer identity known: accept_peer() or reject_peer()
    OPEN = "open"  # transport in both directions
    SEND_CLOSED = "send_closed"  # we sent CLOSE; the peer may still send
    RECV_CLOSED = "recv_closed"  # the peer sent CLOSE; we may still send
    CLOSED = "closed"  # CLOSE sent and received
    FAILED = "failed"  # an error happened; every call raises SessionFailed


class _Input(enum.Enum):
    """What happened. Handshake steps are split by outcome, so the table is total."""

    __hash__ = object.__hash__

    WROTE_HANDSHAKE = "wrote_handshake"  # we wrote a message; the peer's turn next
    WROTE_LAST_HANDSHAKE = "wrote_last_handshake"  # we wrote the final message
    READ_IDENTITY = "read_identity"  # a read revealed the peer's static key
    READ_HANDSHAKE = "read_handshake"  # a read that revealed nothing new; our turn next
    READ_LAST_HANDSHAKE = "read_last_handshake"  # the final message, identity accepted before
    ACCEPTED_MORE = "accepted_more"  # accept_peer(), handshake continues with our write
    ACCEPTED_LAST = "accepted_last"  # accept_peer() after the final message
    SEND = "send"  # we send a payload
    SEND_CLOSE = "send_close"  # we send CLOSE
    RECV_DATA = "recv_data"  # a payload chunk arrived
    RECV_CLOSE = "recv_close"  # the peer's CLOSE arrived


_S = SessionState
_I = _Input

# The whole state machine. A (state, input) pair that is not here is refused:
# by SessionStateError for a local call, ProtocolViolation for peer input.
# Rules the table encodes:
#  * Nothing is written and no transport data is read between the read that
#    reveals the peer's identity and accept_peer() (HANDSHAKE_VERIFY has only
#    ACCEPTED_* exits; reject_peer() and errors go to FAILED).
#  * The handshake alternates: after a write it is the peer's turn, after a
#    read ours, unless that message was the last.
#  * The two transport directions close independently; CLOSED needs both.
_TRANSITIONS: Final[dict[tuple[SessionState, _Input], SessionState]] = {
    (_S.HANDSHAKE_WRITE, _I.WROTE_HANDSHAKE): _S.HANDSHAKE_READ,
    (_S.HANDSHAKE_WRITE, _I.WROTE_LAST_HANDSHAKE): _S.OPEN,
    (_S.HANDSHAKE_READ, _I.READ_IDENTITY): _S.HANDSHAKE_VERIFY,
    (_S.HANDSHAKE_READ, _I.READ_HANDSHAKE): _S.HANDSHAKE_WRITE,
    (_S.HANDSHAKE_READ, _I.READ_LAST_HANDSHAKE): _S.OPEN,
    (_S.HANDSHAKE_VERIFY, _I.ACCEPTED_MORE): _S.HANDSHAKE_WRITE,
    (_S.HANDSHAKE_VERIFY, _I.ACCEPTED_LAST): _S.OPEN,
    (_S.OPEN, _I.SEND): _S.OPEN,
    (_S.OPEN, _I.SEND_CLOSE): _S.SEND_CLOSED,
    (_S.OPEN, _I.RECV_DATA): _S.OPEN,
    (_S.OPEN, _I.RECV_CLOSE): _S.RECV_CLOSED,
    (_S.SEND_CLOSED, _I.RECV_DATA): _S.SEND_CLOSED,
    (_S.SEND_CLOSED, _I.RECV_CLOSE): _S.CLOSED,
    (_S.RECV_CLOSED, _I.SEND): _S.RECV_CLOSED,
    (_S.RECV_CLOSED, _I.SEND_CLOSE): _S.CLOSED,
}

# The per-payload inputs leave the state unchanged wherever they are allowed,
# so the hot paths only test membership in these sets (derived from the table,
# which stays the single source of truth) instead of a lookup per payload.
_CAN_SEND: Final = frozenset(state for (state, event) in _TRANSITIONS if event is _I.SEND)
_CAN_RECV_DATA: Final = frozenset(state for (state, event) in _TRANSITIONS if event is _I.RECV_DATA)
assert all(_TRANSITIONS[(state, _I.SEND)] is state for state in _CAN_SEND)
assert all(_TRANSITIONS[(state, _I.RECV_DATA)] is state for state in _CAN_RECV_DATA)

# States in which the peer has closed its direction cleanly, so EOF is fine.
_RECV_DONE: Final = frozenset({_S.RECV_CLOSED, _S.CLOSED})
_TRANSPORT: Final = frozenset({_S.OPEN, _S.SEND_CLOSED, _S.RECV_CLOSED, _S.CLOSED})


class SecureSession:
    """One end of a Noise-secured, framed, chunked byte-message session.

    Build it with a fresh :class:`HandshakeState`; ``handshake_payload`` is
    what this side proves about itself (its attestation document).
    ``max_payload`` bounds payloads both sent and received.

    Typical use (see :mod:`actors.channel` for the real loop)::

        while session.state is not SessionState.OPEN:
            if session.state is SessionState.HANDSHAKE_WRITE:
                write(session.write_handshake())
            else:
                event = session.next_event()
                if event is NEED_DATA: session.receive_data(read())
                elif isinstance(event, PeerIdentity):
                    verify(event); session.accept_peer()

    Feed more bytes only after next_event() returned NEED_DATA, so that
    buffered input stays bounded by what one read returns.
    """

    def __init__(
        self,
        handshake: HandshakeState,
        *,
        handshake_payload: bytes = b"",
        max_payload: int = DEFAULT_MAX_PAYLOAD,
    ) -> None:
        if handshake.message_index != 0:
            raise SessionStateError(
                SessionCheck.SESSION_FRESH_HANDSHAKE, "the handshake must not have started"
            )
        if max_payload < 0:
            raise ValueError("max_payload must not be negative")
        self._handshake: HandshakeState | None = handshake
        self._payload = bytes(handshake_payload)
        self._max_payload = max_payload
        self._state = _S.HANDSHAKE_WRITE if handshake.is_our_turn else _S.HANDSHAKE_READ
        self._decoder = FrameDecoder()
        self._frames: collections.deque[memoryview] = collections.deque()
        self._eof = False
        self._send: CipherState | None = None
        self._recv: CipherState | None = None
        self._remote_static: bytes | None = None
        self._peer_payload: bytes | None = None
        self._handshake_hash: bytes | None = None
        self._written = 0  # handshake messages written so far
        self._partial: list[memoryview] = []  # chunks of a payload being reassembled
        self._partial_len = 0
        self._error: SessionError | None = None

    # -- state ----------------------------------------------------------------------------

    @property
    def state(self) -> SessionState:
        return self._state

    @property
    def remote_static(self) -> bytes | None:
        """The peer's static public key, once a handshake message revealed it."""
        return self._remote_static

    @property
    def peer_handshake_payload(self) -> bytes | None:
        return self._peer_payload

    @property
    def handshake_hash(self) -> bytes:
        """The Noise handshake hash: a unique, both-sides-agreed id of this session."""
        if self._handshake_hash is None:
            raise SessionStateError(
                SessionCheck.SESSION_HANDSHAKE_HASH, "the handshake is not complete"
            )
        return self._handshake_hash

    @property
    def error(self) -> SessionError | None:
        """The error that failed the session, if any."""
        return self._error

    @property
    def max_payload(self) -> int:
        return self._max_payload

    @max_payload.setter
    def max_payload(self, value: int) -> None:
        """Change the bound between payloads (``actors.channel`` holds a
        channel's first payload, the attestation exchange, to the size of a
        document before restoring the configured bound)."""
        if value < 0:
            raise ValueError("max_payload must not be negative")
        if self._partial:
            self._fail(
                SessionStateError(
                    SessionCheck.SESSION_MAX_PAYLOAD, "a payload is being reassembled"
                )
            )
        self._max_payload = value

    def _move(self, event: _Input, *, peer: bool = False) -> None:
        state = self._state
        if state is _S.FAILED:
            self._raise_failed()
        target = _TRANSITIONS.get((state, event))
        if target is None:
            if peer:
                self._fail(
                    ProtocolViolation(
                        SessionCheck.SESSION_UNEXPECTED, f"{event.value} in {state.value}"
                    )
                )
            self._fail(
                SessionStateError(SessionCheck.SESSION_STATE, f"{event.value} in {state.value}")
            )
        self._state = target

    def _raise_failed(self) -> NoReturn:
        check = self._error.check.value if self._error is not None else "unknown"
        raise SessionFailed(SessionCheck.SESSION_FAILED, f"failed earlier: {check}")

    def _fail(self, error: SessionError) -> NoReturn:
        """Enter FAILED (see _enter_failed) and raise ``error``."""
        self._enter_failed(error)
        raise error

    def _enter_failed(self, error: SessionError) -> None:
        """Enter FAILED: drop keys and buffers, remember ``error``."""
        self._state = _S.FAILED
        self._error = error
        self._handshake = None
        self._send = None
        self._recv = None
        self._frames.clear()
        self._partial = []

    def _check_alive(self) -> None:
        if self._state is _S.FAILED:
            self._raise_failed()

    # -- input ----------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Bytes read from the transport (any amount, any split)."""
        if self._state is _S.FAILED:
            self._raise_failed()
        if self._eof:
            self._fail(SessionStateError(SessionCheck.SESSION_DATA_AFTER_EOF))
        refusal: FrameTooLarge | None = None
        try:
            self._frames.extend(self._decoder.feed(data))
        except FrameTooLarge as error:
            refusal = error
        if refusal is not None:
            # Outside the handler, like every failure of what was read: the
            # raised error then carries no __context__.
            self._fail(refusal)

    def receive_eof(self) -> None:
        """The transport ended. Reported by next_event() once buffered frames are consumed."""
        self._check_alive()
        self._eof = True

    def next_event(self) -> Event:
        """Process buffered frames until one yields an event (or more data is needed)."""
        frames = self._frames
        while True:
            state = self._state
            if frames and state in _CAN_RECV_DATA:
                event = self._read_transport(frames.popleft())
                if event is not None:
                    return event
                continue
            if state is _S.FAILED:
                self._raise_failed()
            if state is _S.HANDSHAKE_WRITE or state is _S.HANDSHAKE_VERIFY:
                self._fail(
                    SessionStateError(SessionCheck.SESSION_STATE, f"next_event in {state.value}")
                )
            if not self._frames:
                if not self._eof:
                    return NEED_DATA
                if state in _RECV_DONE:
                    return PEER_CLOSED
                where = "mid-frame" if self._decoder.buffered else "before close"
                if state is _S.HANDSHAKE_READ:
                    where = "during the handshake"
                self._fail(TruncatedStream(SessionCheck.STREAM_TRUNCATED, where))
            frame = self._frames.popleft()
            if state is _S.HANDSHAKE_READ:
                return self._read_handshake(frame)
            event = self._read_transport(frame)
            if event is not None:
                return event

    # -- handshake ------------------------------------------------------------------------

    def write_handshake(self) -> bytes:
        """The next handshake frame to send (state HANDSHAKE_WRITE)."""
        self._check_alive()
        if self._state is not _S.HANDSHAKE_WRITE or self._handshake is None:
            self._fail(
                SessionStateError(
                    SessionCheck.SESSION_STATE, f"write_handshake in {self._state.value}"
                )
            )
        handshake = self._handshake
        first_of_initiator = handshake.is_initiator and self._written == 0
        try:
            message = handshake.write_message(b"" if first_of_initiator else self._payload)
        except NoiseError as exc:
            self._fail(HandshakeFailed(SessionCheck.HANDSHAKE_WRITE, type(exc).__name__))
        self._written += 1
        if handshake.is_complete:
            self._finish_handshake()
            self._move(_I.WROTE_LAST_HANDSHAKE)
        else:
            self._move(_I.WROTE_HANDSHAKE)
        return _HEADER.pack(len(message)) + message

    def _read_handshake(self, frame: memoryview) -> Event:
        handshake = self._handshake
        assert handshake is not None
        failure: str | None = None
        try:
            payload = handshake.read_message(bytes(frame))
        except NoiseError as exc:
            failure = type(exc).__name__
        if failure is not None:
            self._fail(HandshakeFailed(SessionCheck.HANDSHAKE_READ, failure))
        if self._remote_static is None and handshake.remote_static is not None:
            self._remote_static = bytes(handshake.remote_static)
            self._peer_payload = payload
            self._move(_I.READ_IDENTITY, peer=True)
            return PeerIdentity(self._remote_static, payload)
        if payload:
            # Before the peer's key is known the payload is unauthenticated (and
            # in XX's first message unencrypted); afterwards it has been given.
            self._fail(HandshakeFailed(SessionCheck.HANDSHAKE_UNEXPECTED_PAYLOAD))
        if handshake.is_complete:
            self._finish_handshake()
            self._move(_I.READ_LAST_HANDSHAKE, peer=True)
        else:
            self._move(_I.READ_HANDSHAKE, peer=True)
        return HANDSHAKE_PROGRESS

    def accept_peer(self) -> None:
        """The peer's identity passed verification: continue the handshake."""
        self._check_alive()
        handshake = self._handshake
        if self._state is not _S.HANDSHAKE_VERIFY or handshake is None:
            self._fail(
                SessionStateError(SessionCheck.SESSION_STATE, f"accept_peer in {self._state.value}")
            )
        if handshake.is_complete:
            self._finish_handshake()
            self._move(_I.ACCEPTED_LAST)
        else:
            self._move(_I.ACCEPTED_MORE)

    def reject_peer(self) -> PeerRejected:
        """The peer's identity failed verification: the session fails.

        Returns the error for the caller to raise (chained to its reason).
        """
        self._check_alive()
        error = PeerRejected(SessionCheck.HANDSHAKE_PEER_REJECTED)
        self._enter_failed(error)
        return error

    def _finish_handshake(self) -> None:
        handshake = self._handshake
        assert handshake is not None
        if self._remote_static is None:
            self._fail(HandshakeFailed(SessionCheck.HANDSHAKE_NO_PEER_IDENTITY))
        self._handshake_hash = handshake.handshake_hash
        self._send, self._recv = handshake.split()
        self._handshake = None

    # -- transport ------------------------------------------------------------------------

    def send(self, payload: bytes | bytearray | memoryview) -> bytes:
        """The frames carrying ``payload``, ready to write in one go."""
        if self._state not in _CAN_SEND:
            self._move(_I.SEND)  # raises: SessionFailed or SessionStateError
        if type(payload) is not bytes:
            # len() of a memoryview counts items, not bytes: view it as bytes
            # so the size bound and the chunk split measure what is sent.
            payload = memoryview(payload).cast("B")
        size = len(payload)
        if size > self._max_payload:
            # Refused before anything is encrypted: the session stays usable.
            raise PayloadTooLarge(SessionCheck.PAYLOAD_SIZE, f"{size} > {self._max_payload}")
        send = self._send
        assert send is not None
        try:
            if size <= MAX_CHUNK_DATA:
                ciphertext = send.encrypt_with_ad(b"", _FINAL_FLAG + payload)
                return _HEADER.pack(len(ciphertext)) + ciphertext
            view = memoryview(payload)
            count = -(-size // MAX_CHUNK_DATA)
            base, longer = divmod(size, count)
            parts: list[bytes] = []
            start = 0
            for index in range(count):
                end = start + base + (1 if index < longer else 0)
                flag = _FINAL_FLAG if index == count - 1 else _MORE_FLAG
                ciphertext = send.encrypt_with_ad(b"", flag + view[start:end])
                parts += (_HEADER.pack(len(ciphertext)), ciphertext)
                start = end
            return b"".join(parts)
        except NoiseNonceExhausted:
            self._fail(SessionError(SessionCheck.NONCE_EXHAUSTED))

    def close(self) -> bytes:
        """The CLOSE frame: this side will send nothing more."""
        self._check_alive()
        self._move(_I.SEND_CLOSE)
        send = self._send
        assert send is not None
        try:
            ciphertext = send.encrypt_with_ad(b"", _CLOSE_FLAG)
        except NoiseNonceExhausted:
            self._fail(SessionError(SessionCheck.NONCE_EXHAUSTED))
        self._send = None  # nothing more may be encrypted under this key
        return _HEADER.pack(len(ciphertext)) + ciphertext

    def _read_transport(self, frame: memoryview) -> Event | None:
        recv = self._recv
        if recv is None:  # the peer closed its direction, then sent more
            self._fail(ProtocolViolation(SessionCheck.SESSION_DATA_AFTER_CLOSE))
        failure: DecryptFailed | None = None
        try:
            # A view of the received bytes, not a copy: the AEAD reads any
            # buffer, and copying 64 KiB per frame would cost more than a
            # tenth of the decryption itself.
            plaintext = recv.decrypt_with_ad(b"", frame)
        except NoiseDecryptError:
            failure = DecryptFailed(SessionCheck.FRAME_AUTHENTICATION)
        except NoiseError as exc:
            failure = DecryptFailed(SessionCheck.FRAME_DECRYPT, type(exc).__name__)
        if failure is not None:
            self._fail(failure)
        if not plaintext:
            self._fail(ProtocolViolation(SessionCheck.CHUNK_EMPTY))
        flag = plaintext[0]
        data_len = len(plaintext) - 1
        if flag == CHUNK_FINAL:
            if self._state not in _CAN_RECV_DATA:
                self._move(_I.RECV_DATA, peer=True)  # raises
            total = self._partial_len + data_len
            if total > self._max_payload:
                self._fail(
                    PayloadTooLarge(SessionCheck.PAYLOAD_SIZE, f"more than {self._max_payload}")
                )
            if not self._partial:
                return PayloadReceived(plaintext[1:])
            self._partial.append(memoryview(plaintext)[1:])
            data = b"".join(self._partial)
            self._partial = []
            self._partial_len = 0
            return PayloadReceived(data)
        if flag == CHUNK_MORE:
            if self._state not in _CAN_RECV_DATA:
                self._move(_I.RECV_DATA, peer=True)  # raises
            if data_len < MIN_MORE_CHUNK_DATA:
                # Bounds the pieces held to max_payload / MIN_MORE_CHUNK_DATA:
                # without it, empty MORE chunks could grow the list forever.
                self._fail(ProtocolViolation(SessionCheck.CHUNK_SHORT_MORE))
            if self._partial_len + data_len > self._max_payload:
                self._fail(
                    PayloadTooLarge(SessionCheck.PAYLOAD_SIZE, f"more than {self._max_payload}")
                )
            self._partial.append(memoryview(plaintext)[1:])
            self._partial_len += data_len
            return None
        if flag == CHUNK_CLOSE:
            if data_len:
                self._fail(ProtocolViolation(SessionCheck.CHUNK_CLOSE_WITH_DATA))
            if self._partial:
                self._fail(ProtocolViolation(SessionCheck.CHUNK_CLOSE_MID_PAYLOAD))
            self._move(_I.RECV_CLOSE, peer=True)
            self._recv = None
            return PEER_CLOSED
        self._fail(ProtocolViolation(SessionCheck.CHUNK_FLAG))
