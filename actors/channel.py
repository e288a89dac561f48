"""Secure channels over anyio byte streams (docs/architecture.md §7).

A :class:`SecureChannel` is a :class:`protocol.framing.SecureSession` driven
over any :class:`anyio.abc.ByteStream`: TCP between nodes, an in-memory pair
(:func:`memory_byte_stream_pair`) in tests and benchmarks, the simulator's
network in simulation.

Node links use ``Noise_XX_25519_ChaChaPoly_BLAKE2s`` with the prologue
:data:`NODE_LINK_PROLOGUE`, which names the protocol and its version so that
peers speaking anything else fail the handshake. Each side's handshake
payload says who it claims to be (a node link's ``NodeHello``);
``verify_peer(remote_static, payload)`` checks that claim against the static
key the handshake authenticated. The session writes nothing further, and
delivers no data, until ``verify_peer`` returned; if it raises, the handshake
fails with :class:`PeerRejected` and the stream is closed.

Attestation exchange
--------------------
Right after the handshake, before :func:`connect_secure` or
:func:`accept_secure` returns (so before anything is delivered to the caller
or sent by it), each side sends one ``attest.evidence`` message as its first
transport payload: its attestation document over the nonce
``channel_attestation_nonce(handshake_hash, its role)``
(:mod:`protocol.attestation.binding`), or an empty message where it proves
nothing. What a side proves and requires is stated in a
:class:`ChannelAttestation`, with no default: a node proves with its
attestation service; a customer's client proves nothing
(:data:`NOT_ATTESTED`); a side that requires attestation verifies the peer's
document against that nonce and the peer's handshake key, and refuses an
empty one (:class:`PeerRejected`, ``attestation.missing``). Because the nonce
comes from this session's handshake hash, a document captured from any other
session is refused, and freshness needs no timestamp (so TPM 2.0 quotes pass).

The TPM is asked only after ``verify_peer`` accepted the peer's static key,
so on a node link an unauthenticated connection never costs a TPM command.
Between two nodes each side sends its evidence before the peer's is verified:
it is no secret (it only says what this node runs), and sending first is what
lets both sides exchange in one round trip. The exception is a node known by
no key (``verify_peer`` returns :attr:`Admission.ON_ATTESTATION`): anyone can
make a key, so the accepting side first verifies that peer's evidence and
proves only after it passed (two round trips; the dialling side always
proves first, so the two never both wait). Where the peer proves nothing (a
customer's client: ``require`` is :data:`NOT_ATTESTED`), this side waits for
the peer's (empty) evidence message *before* it proves: a connection that
completes the handshake and then stays silent costs no TPM command, and each
proof answers a client that spoke. (Were both ends to wait, neither would
send; that needs both to take the other for a customer, and ends at the
handshake deadline.) Such client-channel proofs should come from
``AttestationService.attest_client_channel``, which bounds how many run at
once and yields to node links and re-attestation answers. The first payload
is held to :data:`~actors.attestation.MAX_EVIDENCE_MESSAGE_BYTES`, and the
handshake deadline covers the exchange.

Writing
-------
A write to the stream has a deadline (``write_timeout``): a peer that stops
reading fills the socket buffers, and a write that does not complete in time
aborts the channel (:class:`TransportBroken`, ``transport.write_timeout``)
instead of holding the sender, and whatever waits behind it, for good. The
deadline is kept by a watchdog, :meth:`SecureChannel.enforce_write_deadline`,
which :class:`SecureServer` runs for every channel it serves and a node link
(``nodes.tcp_transport``) for its channel; a caller of :func:`connect_secure`
or :func:`accept_secure` runs it itself where a stalled peer could hold it.
Each write only notes when it began. A cancel scope around every write would
keep the deadline without a watchdog, but costs every write a deadline
registration (10-20 us on trio, several percent of a remote ask).

Serving
-------
:class:`SecureServer` serves the connections a listener accepts; the
listener is the transport's (``nodes.tcp.serve_secure`` listens on TCP and
runs an accept loop that waits out a shortage of descriptors instead of
ending).

At most ``max_channels`` established channels are served at once. A
connection arriving when they are all taken is closed at once, before its
handshake (no Noise or TPM work), and one whose exchange completes while
they are all taken is closed then (:class:`ChannelLimitReached`). Refusing
the newest, rather than closing an older channel, is deliberate: the older
ones carry answers in progress, a newcomer has lost nothing yet and can
redial, and the handlers' own deadlines (the demo's first-request deadline,
every write's deadline) decide when an idle or stalled channel gives its
place up. Together with the handshake cap this bounds the descriptors a
server holds to ``max_channels + max_concurrent_handshakes``.

At most ``max_concurrent_handshakes`` handshakes (with their exchange) run at
once. When a connection arrives at the cap, one handshake in progress is cut
(:class:`HandshakeEvicted`) and the newcomer admitted. Which one is cut
follows how far each got, the least advanced first and the oldest among
equals:

1. connections whose Noise handshake is not complete (nothing authenticated:
   a flood of silent or trickling connections only ever displaces its own);
2. customers' connections whose handshake completed but whose evidence
   message has not arrived;
3. customers' connections waiting for this side's proof;
4. nodes known by no key (``verify_peer`` returned
   :attr:`Admission.ON_ATTESTATION`: anyone can make a key and claim a
   name) whose evidence has not arrived or not passed. This side verifies
   their evidence before it proves, so such a connection costs no TPM
   command until it showed a passing document bound to its handshake key;
5. never: a node whose key ``verify_peer`` knew (a configured node's, which
   no attacker holds), or one known by no key whose evidence passed (its
   slot is left only for this side's proof). If every slot is held by one
   of these, the newcomer is refused instead.

Refusing newcomers instead, or queueing them, would let a flood of stalled
connections lock honest peers out for as long as the flood lasts; evicting
by stage bounds memory and tasks, and a flood of connections that never
finish the Noise handshake displaces only its own kind: an honest peer is
exposed to it only during its own Noise handshake (one round trip), no longer
while this side's TPM proves (100-350 ms on real hardware), and an attacker
must open as many connections as there are handshakes in stage 1 within that
round trip. Limits per source address are not used: the adversary owns the
network, and addresses are cheap for it. Every handshake is also cut at its
deadline (``handshake_timeout``, :class:`HandshakeTimeout`).

Every failure is a typed :class:`protocol.framing.SessionError` (plus
:class:`HandshakeTimeout`, :class:`HandshakeEvicted`,
:class:`ChannelLimitReached`, :class:`LocalAttestationFailed` and
:class:`TransportBroken` from here), after
which the channel and its stream are closed. A clean end of the peer's stream
(its CLOSE) surfaces as :class:`anyio.EndOfStream` from
:meth:`SecureChannel.receive`, which also ends ``async for`` over the channel.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import inspect
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Final, TypeAlias

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from actors.attestation import (
    MAX_EVIDENCE_MESSAGE_BYTES,
    Attest,
    AttestationUnavailable,
    Evidence,
    EvidenceMessage,
    VerifyAttestation,
    decode_control,
    encode_control,
)
from actors.log import get_logger
from protocol.attestation import channel_attestation_nonce
from protocol.framing import (
    DEFAULT_MAX_PAYLOAD,
    FRAME_HEADER_LEN,
    MAX_FRAME_LEN,
    NEED_DATA,
    PEER_CLOSED,
    HandshakeFailed,
    PayloadReceived,
    PayloadTooLarge,
    PeerIdentity,
    PeerRejected,
    SecureSession,
    SessionCheck,
    SessionError,
    SessionState,
)
from protocol.messages import Envelope, MessageDecodeError, decode_envelope, encode_envelope
from protocol.noise import HandshakeState, KeyPair, NoiseProtocol

NODE_LINK_PROTOCOL: Final = "Noise_XX_25519_ChaChaPoly_BLAKE2s"
NODE_LINK_PROLOGUE: Final = b"mantle/1 node-link"
DEFAULT_HANDSHAKE_TIMEOUT: Final = 10.0
#: Handshakes a SecureServer runs at once (see "Serving" above).
DEFAULT_MAX_CONCURRENT_HANDSHAKES: Final = 64
#: Established channels a SecureServer serves at once (see "Serving" above).
DEFAULT_MAX_CHANNELS: Final = 256
#: How long one write to the stream may take before the channel is aborted
#: (see "Writing" above): a peer that reads keeps up far faster than this.
DEFAULT_WRITE_TIMEOUT: Final = 10.0
#: How long aclose() waits to hand the CLOSE frame to a peer that is not reading.
DEFAULT_CLOSE_TIMEOUT: Final = 5.0

# One read takes at most one maximal frame; the decoder never buffers more
# than one incomplete frame on top of it.
_READ_SIZE: Final = FRAME_HEADER_LEN + MAX_FRAME_LEN

_PROTOCOL: Final = NoiseProtocol.from_name(NODE_LINK_PROTOCOL)


class Admission(enum.Enum):
    """What ``verify_peer`` says of a peer it lets past the handshake
    (returning ``None`` is :attr:`KNOWN`); see "Serving" in the module docstring."""

    #: The peer proved a key this side knows in advance (a configured node's).
    KNOWN = "known"
    #: The peer is known by no key, only by the attestation it is about to
    #: present (a node that joins, or one whose key is not configured). An
    #: accepting side verifies that peer's evidence before it proves itself,
    #: and its handshake stays evictable until the evidence passed.
    ON_ATTESTATION = "on_attestation"


VerifyPeer: TypeAlias = Callable[[bytes, bytes], Awaitable[Admission | None] | Admission | None]
Entropy: TypeAlias = Callable[[int], bytes]

_log = get_logger("channel")


class HandshakeTimeout(SessionError):
    """The handshake did not complete within the handshake timeout."""


class TransportBroken(SessionError):
    """The underlying stream failed while writing (reset, closed, cancelled mid-write)."""


class HandshakeEvicted(SessionError):
    """Cut to admit a newer connection, or refused at once: the server was at
    its handshake cap (see "Serving" in the module docstring)."""


class ChannelLimitReached(SessionError):
    """Refused: the server already serves its maximum of established channels."""


class LocalAttestationFailed(SessionError):
    """This side could not produce its own evidence (its TPM failed)."""


class NotAttested(enum.Enum):
    """The explicit statement that one side of a channel proves nothing about
    itself: a customer's client, which is no attested node. There is no
    default that means this; a caller writes :data:`NOT_ATTESTED`."""

    NOT_ATTESTED = "not-attested"


NOT_ATTESTED: Final = NotAttested.NOT_ATTESTED


@dataclasses.dataclass(frozen=True, slots=True)
class ChannelAttestation:
    """What this side proves after the handshake, and what it requires of the peer.

    ``prove``: this node's attestation (``AttestationService.attest``), or
    :data:`NOT_ATTESTED` on a customer's client. ``require``: how the peer's
    evidence is verified (``PeerAttestationVerifier``), or :data:`NOT_ATTESTED`
    where the peer is a customer (a node serving clients). One of the two
    ends is always an attested node: both ``NOT_ATTESTED`` is refused.
    """

    prove: Attest | NotAttested
    require: VerifyAttestation | NotAttested

    def __post_init__(self) -> None:
        for name in ("prove", "require"):
            value = getattr(self, name)
            if value is not NOT_ATTESTED and not callable(value):
                raise TypeError(f"{name} must be callable or NOT_ATTESTED, never left out")
        if self.prove is NOT_ATTESTED and self.require is NOT_ATTESTED:
            # Data goes only to attested peers: a channel with no attested end
            # would carry it between two parties nobody verified.
            raise ValueError("at least one side of a channel is an attested node")


class SecureChannel:
    """An established, mutually authenticated, encrypted message channel.

    Obtain one from :func:`connect_secure` or :func:`accept_secure`. Sending
    and receiving may happen concurrently from two tasks; concurrent sends
    (or receives) are serialised.
    """

    def __init__(
        self,
        stream: anyio.abc.ByteStream,
        session: SecureSession,
        *,
        initiator: bool,
        write_timeout: float = DEFAULT_WRITE_TIMEOUT,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    ) -> None:
        if session.state is not SessionState.OPEN or session.remote_static is None:
            raise ValueError("a SecureChannel needs a session whose handshake is complete")
        if not write_timeout > 0:
            raise ValueError("the write deadline must be positive")
        self._stream = stream
        self._session = session
        self._initiator = initiator
        self._peer_evidence: Evidence | None = None
        self._remote_static: bytes = session.remote_static
        self._handshake_hash = session.handshake_hash
        self._peer_payload = session.peer_handshake_payload or b""
        self._send_lock = anyio.Lock()
        self._receive_lock = anyio.Lock()
        self._write_timeout = write_timeout
        self._close_timeout = close_timeout
        self._closed = False
        # Set when a write may have been cut short: the byte stream is then
        # misaligned and nothing more may be written, not even CLOSE.
        self._write_broken = False
        # When the write in progress began (None: none is), for the watchdog
        # (enforce_write_deadline), and whether it cut one.
        self._write_began: float | None = None
        self._write_timed_out = False
        # Set once the channel is closed, so that the watchdog ends with it.
        self._closed_event = anyio.Event()

    # -- identity ---------------------------------------------------------------------

    @property
    def remote_static(self) -> bytes:
        """The peer's Noise static public key (verified by ``verify_peer``)."""
        return self._remote_static

    @property
    def handshake_hash(self) -> bytes:
        """Identifies this session; both ends hold the same value (channel binding)."""
        return self._handshake_hash

    @property
    def peer_handshake_payload(self) -> bytes:
        """What the peer sent in the handshake (who it claims to be)."""
        return self._peer_payload

    @property
    def is_initiator(self) -> bool:
        """Whether this side started the handshake (its role in attestation nonces)."""
        return self._initiator

    @property
    def peer_evidence(self) -> Evidence | None:
        """The peer's evidence, verified in the exchange after the handshake;
        ``None`` where the peer was not required to attest."""
        return self._peer_evidence

    def attestation_nonce(self, *, ours: bool, challenge: bytes | None = None) -> bytes:
        """The nonce a document on this channel carries: this side's (``ours``)
        or the peer's, for the exchange or for a re-attestation ``challenge``."""
        return channel_attestation_nonce(
            self._handshake_hash,
            attester_is_initiator=self._initiator if ours else not self._initiator,
            challenge=challenge,
        )

    @property
    def max_payload(self) -> int:
        return self._session.max_payload

    # -- data ---------------------------------------------------------------------------

    async def send(self, payload: bytes | bytearray | memoryview) -> None:
        """Encrypt and send one payload (chunked into as many frames as needed)."""
        async with self._send_lock:
            self._check_open()
            try:
                data = self._session.send(payload)
            except PayloadTooLarge:
                raise  # refused before anything was encrypted; the channel stays usable
            except SessionError:
                await self._abort()
                raise
            await self._write(data)

    async def receive(self) -> bytes:
        """The next payload; ``anyio.EndOfStream`` once the peer closed cleanly."""
        async with self._receive_lock:
            self._check_open()
            session = self._session
            try:
                while True:
                    event = session.next_event()
                    if type(event) is PayloadReceived:
                        return event.data
                    if event is PEER_CLOSED:
                        raise anyio.EndOfStream
                    assert event is NEED_DATA
                    try:
                        data = await self._stream.receive(_READ_SIZE)
                    except (anyio.EndOfStream, anyio.BrokenResourceError):
                        # The next next_event() reports TruncatedStream unless
                        # the peer's CLOSE already arrived.
                        session.receive_eof()
                    else:
                        session.receive_data(data)
            except SessionError:
                await self._abort()
                raise

    async def send_message(self, envelope: Envelope) -> None:
        """Encode ``envelope`` (see :mod:`protocol.messages`) and send it."""
        await self.send(encode_envelope(envelope, max_size=self.max_payload))

    async def receive_message(self) -> Envelope:
        """Receive one payload and decode it as an envelope (MessageDecodeError if invalid)."""
        return decode_envelope(await self.receive(), max_size=self.max_payload)

    def __aiter__(self) -> SecureChannel:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    # -- closing ------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Send CLOSE (if the channel is healthy) and close the stream."""
        if self._closed:
            return
        self._closed = True
        self._closed_event.set()
        try:
            if not self._write_broken and self._session.state in (
                SessionState.OPEN,
                SessionState.RECV_CLOSED,
            ):
                with anyio.move_on_after(self._close_timeout):
                    async with self._send_lock:
                        await self._stream.send(self._session.close())
        except (SessionError, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass  # the peer is gone or the session failed: nothing left to tell it
        finally:
            await anyio.aclose_forcefully(self._stream)

    async def __aenter__(self) -> SecureChannel:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if exc is None:
            await self.aclose()
        else:
            # The block failed, so the stream did not end where its author
            # meant it to: close without CLOSE, and the peer sees
            # TruncatedStream instead of a clean end of a partial answer.
            await self._abort()

    # -- internals ----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise anyio.ClosedResourceError

    async def _write(self, data: bytes) -> None:
        # A timestamp, not a cancel scope: a scope per write would cost every
        # write (see "Writing" in the module docstring); the watchdog reads it.
        self._write_began = anyio.current_time()
        try:
            await self._stream.send(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            broken = True
        except BaseException:
            # Cancelled mid-write: part of a frame may be on the wire.
            self._write_broken = True
            await self._abort()
            raise
        else:
            broken = False
        finally:
            self._write_began = None
        if broken:
            self._write_broken = True
            await self._abort()
            if self._write_timed_out:
                # The peer stopped reading; whatever it has not read is lost
                # with the channel, which the watchdog closed under this write.
                raise TransportBroken(
                    SessionCheck.TRANSPORT_WRITE_TIMEOUT, f"after {self._write_timeout} s"
                )
            raise TransportBroken(SessionCheck.TRANSPORT_WRITE)

    async def enforce_write_deadline(self) -> None:
        """Abort the channel once a write has been pending ``write_timeout``
        (the peer stopped reading): the blocked write then raises
        :class:`TransportBroken` (``transport.write_timeout``). Run it beside
        the channel's users until the channel is closed, when it returns;
        :class:`SecureServer` does for every channel it serves, and so does a
        node link. It looks four times per ``write_timeout``, so a write is
        cut between one and one and a quarter deadlines after it began."""
        period = self._write_timeout / 4
        while not self._closed:
            with anyio.move_on_after(period):
                await self._closed_event.wait()
            began = self._write_began
            if began is not None and anyio.current_time() - began >= self._write_timeout:
                self._write_timed_out = True
                self._write_broken = True
                await self._abort()

    async def _abort(self) -> None:
        self._closed = True
        self._closed_event.set()
        await anyio.aclose_forcefully(self._stream)


# -- establishing channels ----------------------------------------------------------------


async def connect_secure(
    stream: anyio.abc.ByteStream,
    *,
    static: KeyPair,
    entropy: Entropy,
    verify_peer: VerifyPeer,
    attestation: ChannelAttestation,
    prologue: bytes = NODE_LINK_PROLOGUE,
    handshake_payload: bytes = b"",
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    write_timeout: float = DEFAULT_WRITE_TIMEOUT,
    max_payload: int = DEFAULT_MAX_PAYLOAD,
) -> SecureChannel:
    """Run the initiator side of the handshake and the attestation exchange over ``stream``.

    ``entropy`` supplies the ephemeral key (the Random seam's ``token_bytes``).
    On any failure the stream is closed and a :class:`SessionError` raised:
    :class:`PeerRejected` (``verify_peer`` or the attestation check refused;
    chained to the refusal), :class:`HandshakeTimeout`, :class:`HandshakeFailed`,
    :class:`TruncatedStream`, :class:`LocalAttestationFailed`.
    ``write_timeout`` is the deadline the channel's watchdog
    (:meth:`SecureChannel.enforce_write_deadline`) keeps for each write.
    """
    return await _establish(
        stream,
        initiator=True,
        static=static,
        entropy=entropy,
        verify_peer=verify_peer,
        attestation=attestation,
        prologue=prologue,
        handshake_payload=handshake_payload,
        handshake_timeout=handshake_timeout,
        write_timeout=write_timeout,
        max_payload=max_payload,
    )


async def accept_secure(
    stream: anyio.abc.ByteStream,
    *,
    static: KeyPair,
    entropy: Entropy,
    verify_peer: VerifyPeer,
    attestation: ChannelAttestation,
    prologue: bytes = NODE_LINK_PROLOGUE,
    handshake_payload: bytes = b"",
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    write_timeout: float = DEFAULT_WRITE_TIMEOUT,
    max_payload: int = DEFAULT_MAX_PAYLOAD,
) -> SecureChannel:
    """Run the responder side of the handshake and exchange (see :func:`connect_secure`)."""
    return await _establish(
        stream,
        initiator=False,
        static=static,
        entropy=entropy,
        verify_peer=verify_peer,
        attestation=attestation,
        prologue=prologue,
        handshake_payload=handshake_payload,
        handshake_timeout=handshake_timeout,
        write_timeout=write_timeout,
        max_payload=max_payload,
    )


class _Stage(enum.IntEnum):
    """How far a connection served by :class:`SecureServer` got; the handshake
    cap evicts the lowest stage first ("Serving" in the module docstring)."""

    #: The Noise handshake is not complete: nothing about the peer is known.
    CONNECTED = 0
    #: A customer completed the handshake; its evidence message has not arrived.
    CUSTOMER = 1
    #: The customer's evidence message arrived; this side is proving.
    CUSTOMER_SPOKE = 2
    #: A node known by no key (:attr:`Admission.ON_ATTESTATION`) completed the
    #: handshake; its evidence has not arrived or not yet passed.
    CLAIMED_NODE = 3
    #: A node that must attest and is no stranger: ``verify_peer`` knew its
    #: key, or (known by no key) its evidence passed.
    NODE = 4


_Advance: TypeAlias = Callable[[_Stage], None]


def _stay(stage: _Stage) -> None:
    """The progress report of a channel nobody tracks (connect/accept_secure)."""


async def _establish(
    stream: anyio.abc.ByteStream,
    *,
    initiator: bool,
    static: KeyPair,
    entropy: Entropy,
    verify_peer: VerifyPeer,
    attestation: ChannelAttestation,
    prologue: bytes,
    handshake_payload: bytes,
    handshake_timeout: float,
    write_timeout: float,
    max_payload: int,
    advance: _Advance = _stay,
) -> SecureChannel:
    if not isinstance(attestation, ChannelAttestation):
        # Checked before any byte moves: a channel states what each side proves.
        raise TypeError("a secure channel needs a ChannelAttestation")
    try:
        handshake = HandshakeState(
            _PROTOCOL, initiator=initiator, prologue=prologue, static=static, entropy=entropy
        )
        session = SecureSession(
            handshake, handshake_payload=handshake_payload, max_payload=max_payload
        )
        with anyio.fail_after(handshake_timeout):
            admission = await _handshake(stream, session, verify_peer)
            # Only the accepting side waits for a stranger's evidence: the
            # dialling side chose its peer and proves first, so the two never
            # both wait.
            verify_first = (
                admission is Admission.ON_ATTESTATION
                and not initiator
                and attestation.require is not NOT_ATTESTED
            )
            if attestation.require is NOT_ATTESTED:
                advance(_Stage.CUSTOMER)
            else:
                advance(_Stage.CLAIMED_NODE if verify_first else _Stage.NODE)
            channel = SecureChannel(
                stream, session, initiator=initiator, write_timeout=write_timeout
            )
            await _exchange_attestation(
                channel, session, attestation, advance, verify_first=verify_first
            )
    except TimeoutError:
        await anyio.aclose_forcefully(stream)
        raise HandshakeTimeout(
            SessionCheck.HANDSHAKE_TIMEOUT, f"after {handshake_timeout} s"
        ) from None
    except BaseException:
        await anyio.aclose_forcefully(stream)
        raise
    return channel


async def _handshake(
    stream: anyio.abc.ByteStream, session: SecureSession, verify_peer: VerifyPeer
) -> Admission:
    admission = Admission.KNOWN
    while session.state is not SessionState.OPEN:
        if session.state is SessionState.HANDSHAKE_WRITE:
            try:
                await stream.send(session.write_handshake())
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                raise HandshakeFailed(SessionCheck.HANDSHAKE_TRANSPORT, "peer went away") from None
            continue
        event = session.next_event()
        if event is NEED_DATA:
            try:
                data = await stream.receive(_READ_SIZE)
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                session.receive_eof()
            else:
                session.receive_data(data)
        elif isinstance(event, PeerIdentity):
            try:
                verdict = verify_peer(event.remote_static, event.payload)
                if inspect.isawaitable(verdict):
                    verdict = await verdict
            except Exception as exc:
                raise session.reject_peer() from exc
            if verdict is Admission.ON_ATTESTATION:
                admission = verdict
            elif verdict is not None and verdict is not Admission.KNOWN:
                raise TypeError("verify_peer returns None or an Admission")
            session.accept_peer()
    return admission


async def _exchange_attestation(
    channel: SecureChannel,
    session: SecureSession,
    attestation: ChannelAttestation,
    advance: _Advance,
    *,
    verify_first: bool = False,
) -> None:
    """Exchange evidence and check the peer's (module docstring): where the
    peer proves nothing, receive its message first and prove after it; where
    the peer is known by no key (``verify_first``), receive and verify its
    evidence before proving."""
    configured = session.max_payload
    session.max_payload = MAX_EVIDENCE_MESSAGE_BYTES
    if attestation.require is NOT_ATTESTED:
        # A customer: whatever it sent is not looked at, but it has to have
        # spoken before this side's TPM works for it.
        await _receive_evidence(channel)
        advance(_Stage.CUSTOMER_SPOKE)
        await _send_evidence(channel, attestation.prove)
        session.max_payload = configured
        return
    if not verify_first:
        await _send_evidence(channel, attestation.prove)
    body = await _receive_evidence(channel)
    session.max_payload = configured
    evidence = body.evidence()
    if evidence is None:
        raise PeerRejected(SessionCheck.ATTESTATION_MISSING, "the peer sent no evidence")
    try:
        verdict = attestation.require(
            channel.remote_static, evidence, channel.attestation_nonce(ours=False)
        )
        if inspect.isawaitable(verdict):
            await verdict
    except Exception as exc:
        # Chained, like a verify_peer refusal: the verifier's typed error names
        # its check and holds no peer bytes.
        raise PeerRejected(SessionCheck.ATTESTATION_REFUSED) from exc
    channel._peer_evidence = evidence
    if verify_first:
        advance(_Stage.NODE)
        await _send_evidence(channel, attestation.prove)


async def _send_evidence(channel: SecureChannel, prove: Attest | NotAttested) -> None:
    """This side's evidence message: its document over this channel's nonce,
    or the empty message where it proves nothing."""
    own: Evidence | None = None
    if prove is not NOT_ATTESTED:
        try:
            own = await prove(channel.attestation_nonce(ours=True))
        except AttestationUnavailable as error:
            unavailable: str | None = error.check
        else:
            unavailable = None
        if unavailable is not None:
            raise LocalAttestationFailed(SessionCheck.ATTESTATION_UNAVAILABLE, unavailable)
        if not isinstance(own, Evidence):
            raise TypeError("prove must return Evidence")
    await channel.send(encode_control(EvidenceMessage.of(own)))


async def _receive_evidence(channel: SecureChannel) -> EvidenceMessage:
    """The peer's first payload, which must be an evidence message (empty or not)."""
    try:
        payload: bytes | None = await channel.receive()
    except anyio.EndOfStream:
        payload = None
    if payload is None:
        raise PeerRejected(SessionCheck.ATTESTATION_MISSING, "the peer closed before its evidence")
    try:
        body = decode_control(payload)
    except MessageDecodeError as error:
        malformed: str | None = error.check
    else:
        malformed = None if isinstance(body, EvidenceMessage) else "attest.unexpected_type"
    if malformed is not None:
        raise PeerRejected(SessionCheck.ATTESTATION_MALFORMED, malformed)
    assert isinstance(body, EvidenceMessage)
    return body


# -- serving --------------------------------------------------------------------------------

ConnectionHandler: TypeAlias = Callable[[SecureChannel], Awaitable[None]]


class _HandshakeSlots:
    """At most ``limit`` handshakes at once; a newcomer at the cap evicts the
    least advanced, oldest one, never a configured node's (see "Serving" in
    the module docstring)."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("max_concurrent_handshakes must be at least 1")
        self._limit = limit
        # The evictable handshakes by stage, each in the order it reached that
        # stage; and how many have reached _Stage.NODE, which are never cut.
        self._evictable: dict[_Stage, OrderedDict[object, anyio.CancelScope]] = {
            stage: OrderedDict() for stage in _Stage if stage is not _Stage.NODE
        }
        self._nodes = 0

    def __len__(self) -> int:
        return self._nodes + sum(len(held) for held in self._evictable.values())

    @contextlib.contextmanager
    def admit(self) -> Iterator[tuple[anyio.CancelScope, _Advance]]:
        """A cancel scope to run one handshake in, cancelled if it is evicted
        (at once if no slot can be freed), and the report of its progress."""
        scope = anyio.CancelScope()
        token = object()
        stage = _Stage.CONNECTED
        if len(self) >= self._limit and not self._evict_one():
            # Every slot holds a configured node's handshake: the newcomer is
            # refused (its scope cancelled before it starts) and holds none.
            scope.cancel()
        else:
            self._evictable[stage][token] = scope

        def advance(to: _Stage) -> None:
            nonlocal stage
            if to <= stage or token not in self._evictable[stage]:
                return  # no step back, and an evicted or refused handshake holds no slot
            self._evictable[stage].pop(token, None)
            stage = to
            if to is _Stage.NODE:
                self._nodes += 1
            else:
                self._evictable[to][token] = scope

        try:
            yield scope, advance
        finally:
            if stage is _Stage.NODE:
                self._nodes -= 1
            else:
                self._evictable[stage].pop(token, None)

    def _evict_one(self) -> bool:
        for held in self._evictable.values():  # from the least advanced stage up
            if held:
                _, oldest = held.popitem(last=False)
                oldest.cancel()
                return True
        return False


class _ChannelCount:
    """Established channels of one server, at most ``limit`` of them."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("max_channels must be at least 1")
        self.limit = limit
        self.open = 0

    @property
    def full(self) -> bool:
        return self.open >= self.limit

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        if self.full:
            raise ChannelLimitReached(SessionCheck.CHANNEL_LIMIT, f"{self.limit} channels")
        self.open += 1
        try:
            yield
        finally:
            self.open -= 1


class SecureServer:
    """Serves secure channels on the byte streams a listener accepts.

    The listener and its accept loop are the transport's (``nodes.tcp``
    serves TCP); this holds what every connection shares: the handshake cap,
    the channel cap and the options each handshake runs with. See "Serving"
    in the module docstring for the caps' rules. A connection whose handshake
    or handler fails, or that is refused, is logged (by error type and check,
    never content), reported to ``on_error`` and closed; the other
    connections carry on. The channel ends with CLOSE when the handler
    returns, and without it when the handler raises, so the peer sees a
    truncated stream.
    """

    def __init__(
        self,
        handler: ConnectionHandler,
        *,
        static: KeyPair,
        entropy: Entropy,
        verify_peer: VerifyPeer,
        attestation: ChannelAttestation,
        prologue: bytes = NODE_LINK_PROLOGUE,
        handshake_payload: bytes = b"",
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        max_concurrent_handshakes: int = DEFAULT_MAX_CONCURRENT_HANDSHAKES,
        max_channels: int = DEFAULT_MAX_CHANNELS,
        write_timeout: float = DEFAULT_WRITE_TIMEOUT,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        on_error: Callable[[Exception], None] | None = None,
    ) -> None:
        if not isinstance(attestation, ChannelAttestation):
            raise TypeError("a secure server needs a ChannelAttestation")
        self._handler = handler
        self._on_error = on_error
        self._slots = _HandshakeSlots(max_concurrent_handshakes)
        self._channels = _ChannelCount(max_channels)
        self._options: dict[str, Any] = {
            "initiator": False,
            "static": static,
            "entropy": entropy,
            "verify_peer": verify_peer,
            "attestation": attestation,
            "prologue": prologue,
            "handshake_payload": handshake_payload,
            "handshake_timeout": handshake_timeout,
            "write_timeout": write_timeout,
            "max_payload": max_payload,
        }

    async def serve(self, stream: anyio.abc.ByteStream, group: anyio.abc.TaskGroup) -> None:
        """Serve one accepted connection; ``group`` is the listener's task group
        (the channel's write watchdog runs there). Never raises."""
        await _serve_connection(
            stream,
            handler=self._handler,
            on_error=self._on_error,
            slots=self._slots,
            channels=self._channels,
            group=group,
            options=self._options,
        )


async def _serve_connection(
    stream: anyio.abc.ByteStream,
    *,
    handler: ConnectionHandler,
    on_error: Callable[[Exception], None] | None,
    slots: _HandshakeSlots,
    channels: _ChannelCount,
    group: anyio.abc.TaskGroup,
    options: dict[str, Any],
) -> None:
    stage = "accept"
    try:
        if channels.full:
            # Refused before any handshake work: the newest connection is the
            # one that waits (see "Serving" in the module docstring).
            await anyio.aclose_forcefully(stream)
            raise ChannelLimitReached(SessionCheck.CHANNEL_LIMIT, f"{channels.limit} channels")
        stage = "handshake"
        channel: SecureChannel | None = None
        with slots.admit() as (scope, advance), scope:
            channel = await _establish(stream, advance=advance, **options)
        if channel is None:
            # Evicted: _establish has closed the stream on its way out.
            raise HandshakeEvicted(SessionCheck.HANDSHAKE_EVICTED, "the handshake cap was reached")
        stage = "established"
        async with channel:
            with channels.hold():
                stage = "handler"
                # Ends by itself once the channel is closed.
                group.start_soon(channel.enforce_write_deadline)
                await handler(channel)
    except Exception as exc:
        # Catch-all by design: one connection's failure must never reach the
        # listener's task group, which would take every other connection down.
        _log.warning(
            "secure_channel.connection_failed",
            state=stage,
            error_type=type(exc).__name__,
            check=getattr(exc, "check", None),
        )
        if on_error is not None:
            try:
                on_error(exc)
            except Exception as hook_error:
                # A broken hook must not take the listener down either.
                _log.warning("secure_channel.on_error_failed", error_type=type(hook_error).__name__)


# -- in-memory streams ----------------------------------------------------------------------


class MemoryByteStream(anyio.abc.ByteStream):
    """One end of an in-memory byte stream pair (see :func:`memory_byte_stream_pair`)."""

    def __init__(
        self, send: MemoryObjectSendStream[bytes], receive: MemoryObjectReceiveStream[bytes]
    ) -> None:
        self._send_stream = send
        self._receive_stream = receive
        self._buffer = b""  # the item being handed out ...
        self._offset = 0  # ... from this position

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if self._offset >= len(self._buffer):
            self._buffer = await self._receive_stream.receive()
            self._offset = 0
        start = self._offset
        if start == 0 and len(self._buffer) <= max_bytes:
            self._offset = len(self._buffer)
            return self._buffer  # the common case: a whole item, no copy
        self._offset = min(start + max_bytes, len(self._buffer))
        return self._buffer[start : self._offset]

    async def send(self, item: bytes) -> None:
        if item:
            await self._send_stream.send(bytes(item))

    async def send_eof(self) -> None:
        await self._send_stream.aclose()

    async def aclose(self) -> None:
        await self._send_stream.aclose()
        await self._receive_stream.aclose()


def memory_byte_stream_pair(
    max_buffer_size: float = 16,
) -> tuple[MemoryByteStream, MemoryByteStream]:
    """Two connected in-memory byte streams; each send is one buffered item."""
    a_to_b_send, a_to_b_receive = anyio.create_memory_object_stream[bytes](max_buffer_size)
    b_to_a_send, b_to_a_receive = anyio.create_memory_object_stream[bytes](max_buffer_size)
    return MemoryByteStream(a_to_b_send, b_to_a_receive), MemoryByteStream(
        b_to_a_send, a_to_b_receive
    )
