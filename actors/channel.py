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
This side's evidence goes out before the peer's is verified: it is no secret
(it only says what this node runs), and sending first is what lets both sides
exchange in one round trip. The first payload is held to
:data:`~actors.attestation.MAX_EVIDENCE_MESSAGE_BYTES`, and the handshake
deadline covers the exchange.

Serving
-------
:func:`serve_secure` runs at most ``max_concurrent_handshakes`` handshakes
(with their exchange) at once. When a connection arrives at the cap, the
*oldest* handshake in progress is cut (:class:`HandshakeEvicted`) and the
newcomer admitted. Refusing the newcomer instead, or queueing it, would let a
flood of stalled connections lock honest peers out for as long as the flood
lasts; evicting the oldest bounds memory and tasks and means an attacker must
open ``max_concurrent_handshakes`` connections while one honest handshake is
in flight (a few milliseconds) to displace it, and even then the honest peer
just redials. Limits per source address are not used: the adversary owns the
network, and addresses are cheap for it. Every handshake is also cut at its
deadline (``handshake_timeout``, :class:`HandshakeTimeout`).

Every failure is a typed :class:`protocol.framing.SessionError` (plus
:class:`HandshakeTimeout`, :class:`HandshakeEvicted`,
:class:`LocalAttestationFailed` and :class:`TransportBroken` from here), after
which the channel and its stream are closed. A clean end of the peer's stream
(its CLOSE) surfaces as :class:`anyio.EndOfStream` from
:meth:`SecureChannel.receive`, which also ends ``async for`` over the channel.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
import inspect
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Final, TypeAlias

import anyio
import anyio.abc
from anyio.abc import TaskStatus
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
#: Handshakes serve_secure runs at once (see "Serving" above).
DEFAULT_MAX_CONCURRENT_HANDSHAKES: Final = 64
#: How long aclose() waits to hand the CLOSE frame to a peer that is not reading.
DEFAULT_CLOSE_TIMEOUT: Final = 5.0

# One read takes at most one maximal frame; the decoder never buffers more
# than one incomplete frame on top of it.
_READ_SIZE: Final = FRAME_HEADER_LEN + MAX_FRAME_LEN

_PROTOCOL: Final = NoiseProtocol.from_name(NODE_LINK_PROTOCOL)

VerifyPeer: TypeAlias = Callable[[bytes, bytes], Awaitable[None] | None]
Entropy: TypeAlias = Callable[[int], bytes]

_log = get_logger("channel")


class HandshakeTimeout(SessionError):
    """The handshake did not complete within the handshake timeout."""


class TransportBroken(SessionError):
    """The underlying stream failed while writing (reset, closed, cancelled mid-write)."""


class HandshakeEvicted(SessionError):
    """Cut to admit a newer connection: the server was at its handshake cap."""


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
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    ) -> None:
        if session.state is not SessionState.OPEN or session.remote_static is None:
            raise ValueError("a SecureChannel needs a session whose handshake is complete")
        self._stream = stream
        self._session = session
        self._initiator = initiator
        self._peer_evidence: Evidence | None = None
        self._remote_static: bytes = session.remote_static
        self._handshake_hash = session.handshake_hash
        self._peer_payload = session.peer_handshake_payload or b""
        self._send_lock = anyio.Lock()
        self._receive_lock = anyio.Lock()
        self._close_timeout = close_timeout
        self._closed = False
        # Set when a write may have been cut short: the byte stream is then
        # misaligned and nothing more may be written, not even CLOSE.
        self._write_broken = False

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
        try:
            await self._stream.send(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            self._write_broken = True
            await self._abort()
            raise TransportBroken(SessionCheck.TRANSPORT_WRITE) from None
        except BaseException:
            # Cancelled mid-write: part of a frame may be on the wire.
            self._write_broken = True
            await self._abort()
            raise

    async def _abort(self) -> None:
        self._closed = True
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
    max_payload: int = DEFAULT_MAX_PAYLOAD,
) -> SecureChannel:
    """Run the initiator side of the handshake and the attestation exchange over ``stream``.

    ``entropy`` supplies the ephemeral key (the Random seam's ``token_bytes``).
    On any failure the stream is closed and a :class:`SessionError` raised:
    :class:`PeerRejected` (``verify_peer`` or the attestation check refused;
    chained to the refusal), :class:`HandshakeTimeout`, :class:`HandshakeFailed`,
    :class:`TruncatedStream`, :class:`LocalAttestationFailed`.
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
        max_payload=max_payload,
    )


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
    max_payload: int,
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
            await _handshake(stream, session, verify_peer)
            channel = SecureChannel(stream, session, initiator=initiator)
            await _exchange_attestation(channel, session, attestation)
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
) -> None:
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
                    await verdict
            except Exception as exc:
                raise session.reject_peer() from exc
            session.accept_peer()


async def _exchange_attestation(
    channel: SecureChannel, session: SecureSession, attestation: ChannelAttestation
) -> None:
    """Send this side's evidence, then receive and check the peer's (module docstring)."""
    configured = session.max_payload
    session.max_payload = MAX_EVIDENCE_MESSAGE_BYTES
    own: Evidence | None = None
    if attestation.prove is not NOT_ATTESTED:
        try:
            own = await attestation.prove(channel.attestation_nonce(ours=True))
        except AttestationUnavailable as error:
            unavailable: str | None = error.check
        else:
            unavailable = None
        if unavailable is not None:
            raise LocalAttestationFailed(SessionCheck.ATTESTATION_UNAVAILABLE, unavailable)
        if not isinstance(own, Evidence):
            raise TypeError("prove must return Evidence")
    await channel.send(encode_control(EvidenceMessage.of(own)))

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
    session.max_payload = configured

    if attestation.require is NOT_ATTESTED:
        return  # a customer: whatever it sent is not looked at
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


# -- serving --------------------------------------------------------------------------------

ConnectionHandler: TypeAlias = Callable[[SecureChannel], Awaitable[None]]


class _HandshakeSlots:
    """At most ``limit`` handshakes at once; a newcomer at the cap evicts the
    oldest (see "Serving" in the module docstring)."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("max_concurrent_handshakes must be at least 1")
        self._limit = limit
        self._active: OrderedDict[object, anyio.CancelScope] = OrderedDict()

    @contextlib.contextmanager
    def admit(self) -> Iterator[anyio.CancelScope]:
        """A cancel scope to run one handshake in; cancelled if it is evicted."""
        while len(self._active) >= self._limit:
            _, oldest = self._active.popitem(last=False)
            oldest.cancel()
        token = object()
        scope = self._active[token] = anyio.CancelScope()
        try:
            yield scope
        finally:
            self._active.pop(token, None)


async def serve_secure(
    host: str,
    port: int,
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
    max_payload: int = DEFAULT_MAX_PAYLOAD,
    on_error: Callable[[Exception], None] | None = None,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Accept TCP connections on ``host:port`` and run ``handler`` on each secure channel.

    Connections are served concurrently; at most ``max_concurrent_handshakes``
    of them are in their handshake at once, the oldest evicted to admit a
    newcomer, and each handshake is cut after ``handshake_timeout``. A
    connection whose handshake or handler fails is logged (by error type and
    check, never content), reported to ``on_error`` and closed; the server
    and the other connections carry on. The channel ends with CLOSE when the
    handler returns, and without it when the handler raises, so the peer sees
    a truncated stream. ``task_status.started`` receives the bound port
    (useful with ``port=0``).
    """
    if not isinstance(attestation, ChannelAttestation):
        raise TypeError("a secure server needs a ChannelAttestation")
    slots = _HandshakeSlots(max_concurrent_handshakes)
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    async with listener:
        bound_port: int = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610 - anyio, not Django
        task_status.started(bound_port)
        await listener.serve(
            functools.partial(
                _serve_connection,
                handler=handler,
                on_error=on_error,
                slots=slots,
                options={
                    "static": static,
                    "entropy": entropy,
                    "verify_peer": verify_peer,
                    "attestation": attestation,
                    "prologue": prologue,
                    "handshake_payload": handshake_payload,
                    "handshake_timeout": handshake_timeout,
                    "max_payload": max_payload,
                },
            )
        )


async def _serve_connection(
    stream: anyio.abc.ByteStream,
    *,
    handler: ConnectionHandler,
    on_error: Callable[[Exception], None] | None,
    slots: _HandshakeSlots,
    options: dict[str, Any],
) -> None:
    stage = "handshake"
    try:
        channel: SecureChannel | None = None
        with slots.admit() as scope, scope:
            channel = await accept_secure(stream, **options)
        if channel is None:
            # Evicted: accept_secure has closed the stream on its way out.
            raise HandshakeEvicted(SessionCheck.HANDSHAKE_EVICTED, "the handshake cap was reached")
        stage = "handler"
        async with channel:
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
