"""The Transport seam over TCP, every node link an attested Noise XX secure channel.

Each configured peer has one *link*: an outbound queue, a writer task, a
dialler that (re)connects with :class:`Backoff`, and at most one live
:class:`~actors.channel.SecureChannel`. A peer is identified by the Noise
static key it proves in the handshake, which must be the key configured for
the node name its :class:`NodeHello` claims; a connection from anyone else is
refused before any frame is read.

Attestation, on every link, with no way to leave it out: a transport is built
with this node's attestation source (``attest``, normally
``AttestationService.attest``, the service's priority path) and a verifier
for its peers (``verify_attestation``), which must be a
:class:`~actors.attestation.PeerAttestationVerifier`: any other callable,
``lambda *a: None`` included, is refused with :class:`TypeError`, so a
fail-open check is not one argument away. After the handshake each side
proves itself with a document whose nonce is derived from the channel's
handshake hash, and the other side verifies it against that nonce and the
peer's static key before the link is adopted (``actors.channel``). While
the link is up, each side re-attests its peer every ``reattest_interval``
(Clock seam) with a fresh challenge
(:class:`~actors.attestation.Reattestation`); a refused or late answer, or a
peer that breaks the exchange, closes the link: ``peer_down`` fires and the
redial has to pass attestation again. A peer that stops reading cannot hold
a link open either: every write on it has a deadline (``write_timeout``,
kept by the channel's watchdog, ``actors.channel``), and a challenge that
cannot be sent in time lapses.

Payloads on a link after the exchange carry one leading byte: ``0x00`` a
runtime frame (handed to ``frame_received``), ``0x01`` a control message of
re-attestation (``attest.challenge`` or ``attest.evidence``); anything else
closes the link.

Both ends of a link may dial at once. When two channels to the same peer
exist, the one dialled by the node whose name sorts first is kept and the
other closed; both ends apply the same rule, so they converge on one channel.

Events to the runtime: ``peer_up`` when a channel to the peer is adopted,
``peer_down`` when it is lost, fails re-attestation, or a dial fails (queued
frames are dropped, since the runtime fails the asks waiting on them), then
redialling continues with backoff. ``send`` refuses frames while the link is
known to be down.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import hmac
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import anyio
import trio

from actors.attestation import (
    DEFAULT_MIN_ANSWER_INTERVAL_S,
    DEFAULT_REATTEST_INTERVAL_S,
    DEFAULT_REATTEST_TIMEOUT_S,
    Attest,
    PeerAttestationVerifier,
    Reattestation,
    ReattestationFailed,
)
from actors.channel import (
    DEFAULT_MAX_CONCURRENT_HANDSHAKES,
    DEFAULT_WRITE_TIMEOUT,
    ChannelAttestation,
    SecureChannel,
    connect_secure,
)
from actors.log import get_logger
from actors.lowlevel import Backoff, NodeHello
from actors.seams.clock import Clock
from actors.seams.random import Random
from actors.seams.transport import TransportEvents
from nodes.clock import TrioClock
from nodes.tcp import serve_secure
from protocol.framing import DEFAULT_MAX_PAYLOAD, SessionError
from protocol.messages import REGISTRY, Envelope, MessageDecodeError
from protocol.noise import KeyPair

#: The leading byte of every payload on a link after the attestation exchange.
_RUNTIME_FRAME: Final = b"\x00"
_CONTROL: Final = b"\x01"
#: A runtime frame may be as large as any channel payload, plus its leading byte.
_LINK_MAX_PAYLOAD: Final = DEFAULT_MAX_PAYLOAD + 1

_LINK_ERRORS = (
    OSError,
    SessionError,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
)


class PeerCheck(enum.StrEnum):
    """Why a node link refused its peer (:attr:`PeerNotAllowed.check`)."""

    #: The handshake payload is not a decodable envelope.
    HELLO_DECODE = "hello.decode"
    #: The handshake payload is not a :class:`NodeHello`.
    HELLO_TYPE = "hello.type"
    #: The claimed node is not a configured peer (or is this node itself).
    PEER_UNKNOWN = "peer.unknown"
    #: A dialled peer answered as another configured node.
    PEER_UNEXPECTED = "peer.unexpected"
    #: The Noise static key is not the one configured for the claimed node.
    PEER_STATIC_KEY = "peer.static_key"


class PeerNotAllowed(Exception):
    """A handshake named a node that is not configured, or proved another key."""

    def __init__(self, check: PeerCheck) -> None:
        super().__init__(f"peer refused: {check.value}")
        self.check = check


@dataclass(frozen=True, slots=True)
class PeerAddress:
    host: str
    port: int
    static_public: bytes


class _Link:
    __slots__ = ("channel", "dialer", "down", "lost", "peer", "queue", "ready", "started")

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.channel: SecureChannel | None = None
        self.dialer: str | None = None
        self.queue: deque[bytes] = deque()
        self.ready = trio.Event()
        self.lost = trio.Event()
        self.down = False
        self.started = False


class TcpNoiseTransport:
    def __init__(
        self,
        node: str,
        *,
        static: KeyPair,
        random: Random,
        peers: Mapping[str, PeerAddress],
        attest: Attest,
        verify_attestation: PeerAttestationVerifier,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        backoff: Backoff | None = None,
        clock: Clock | None = None,
        queue_limit: int = 4096,
        handshake_timeout: float = 10.0,
        write_timeout: float = DEFAULT_WRITE_TIMEOUT,
        max_concurrent_handshakes: int = DEFAULT_MAX_CONCURRENT_HANDSHAKES,
        reattest_interval: float = DEFAULT_REATTEST_INTERVAL_S,
        reattest_timeout: float = DEFAULT_REATTEST_TIMEOUT_S,
        min_answer_interval: float = DEFAULT_MIN_ANSWER_INTERVAL_S,
    ) -> None:
        # No default and no way around: a node link is always mutually attested.
        if not callable(attest):
            raise TypeError("a node link needs this node's attestation source")
        if not isinstance(verify_attestation, PeerAttestationVerifier):
            # Not any callable: a stand-in that accepts everything would link
            # up with nodes running anything (see the module docstring).
            raise TypeError("a node link verifies its peers with a PeerAttestationVerifier")
        self._node = node
        self._static = static
        self._random = random
        self._peers = dict(peers)
        self._listen_host = listen_host
        self._listen_port = listen_port
        self._hello = REGISTRY.encode(Envelope.wrap(NodeHello(node)))
        self._attest = attest
        self._verify_attestation = verify_attestation
        self._attestation = ChannelAttestation(prove=attest, require=verify_attestation)
        self._backoff = backoff if backoff is not None else Backoff()
        self._clock = clock if clock is not None else TrioClock()
        self._queue_limit = queue_limit
        self._handshake_timeout = handshake_timeout
        self._write_timeout = write_timeout
        self._max_concurrent_handshakes = max_concurrent_handshakes
        self._reattest_interval = reattest_interval
        self._reattest_timeout = reattest_timeout
        self._min_answer_interval = min_answer_interval
        self._events: TransportEvents | None = None
        self._links: dict[str, _Link] = {}
        self._nursery: trio.Nursery | None = None
        self.port: int | None = None
        #: Links closed because the peer's re-attestation failed or lapsed.
        self.reattestation_failures = 0

    # ------------------------------------------------------------ the seam

    @property
    def local_node(self) -> str:
        return self._node

    def bind(self, events: TransportEvents) -> None:
        self._events = events

    def add_peer(self, node: str, address: PeerAddress) -> None:
        self._peers[node] = address

    def send(self, peer: str, frame: bytes) -> bool:
        if peer not in self._peers or peer == self._node:
            return False
        if len(frame) > DEFAULT_MAX_PAYLOAD:
            # The channel would refuse it in the writer task, after this call
            # had reported success; refuse it here instead.
            return False
        link = self._link(peer)
        if link.down or len(link.queue) >= self._queue_limit:
            return False
        link.queue.append(frame)
        link.ready.set()
        return True

    # ------------------------------------------------------------ running

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen for peers and keep links up until cancelled; reports the port."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                port: int = await nursery.start(
                    functools.partial(
                        serve_secure,
                        self._listen_host,
                        self._listen_port,
                        self._accepted,
                        static=self._static,
                        entropy=self._random.token_bytes,
                        verify_peer=functools.partial(self._verify, None),
                        attestation=self._attestation,
                        handshake_payload=self._hello,
                        handshake_timeout=self._handshake_timeout,
                        write_timeout=self._write_timeout,
                        max_concurrent_handshakes=self._max_concurrent_handshakes,
                        max_payload=_LINK_MAX_PAYLOAD,
                    )
                )
                self.port = port
                for link in self._links.values():
                    self._start(link)
                task_status.started(port)
        finally:
            # The nursery is closed: nothing may be started in it any more.
            self._nursery = None

    def _link(self, peer: str) -> _Link:
        link = self._links.get(peer)
        if link is None:
            link = self._links[peer] = _Link(peer)
            if self._nursery is not None:
                self._start(link)
        return link

    def _start(self, link: _Link) -> None:
        if link.started or self._nursery is None:
            return
        link.started = True
        self._nursery.start_soon(self._maintain, link)
        self._nursery.start_soon(self._write, link)

    # ------------------------------------------------------------ identity

    def _verify(self, expected: str | None, remote_static: bytes, payload: bytes) -> None:
        envelope = None
        with contextlib.suppress(MessageDecodeError):
            envelope = REGISTRY.decode(payload)
        if envelope is None:
            # Outside the handler: no __context__ rides along with the refusal.
            raise PeerNotAllowed(PeerCheck.HELLO_DECODE)
        hello = envelope.body
        if not isinstance(hello, NodeHello):
            raise PeerNotAllowed(PeerCheck.HELLO_TYPE)
        address = self._peers.get(hello.node)
        if address is None or hello.node == self._node:
            raise PeerNotAllowed(PeerCheck.PEER_UNKNOWN)
        if expected is not None and hello.node != expected:
            raise PeerNotAllowed(PeerCheck.PEER_UNEXPECTED)
        if not hmac.compare_digest(address.static_public, remote_static):
            raise PeerNotAllowed(PeerCheck.PEER_STATIC_KEY)

    @staticmethod
    def _peer_of(channel: SecureChannel) -> str:
        hello = REGISTRY.decode(channel.peer_handshake_payload).body
        assert isinstance(hello, NodeHello)  # checked by _verify during the handshake
        return hello.node

    # --------------------------------------------------------- connections

    async def _dial(self, peer: str) -> SecureChannel:
        address = self._peers[peer]
        # Bounded like the handshake: an address that drops SYNs must not hold
        # the link (and its queued frames) for the kernel's connect timeout.
        # TimeoutError is an OSError, so _maintain treats it as a failed dial.
        with anyio.fail_after(self._handshake_timeout):
            stream = await anyio.connect_tcp(address.host, address.port)
        return await connect_secure(
            stream,
            static=self._static,
            entropy=self._random.token_bytes,
            verify_peer=functools.partial(self._verify, peer),
            attestation=self._attestation,
            handshake_payload=self._hello,
            handshake_timeout=self._handshake_timeout,
            write_timeout=self._write_timeout,
            max_payload=_LINK_MAX_PAYLOAD,
        )

    async def _maintain(self, link: _Link) -> None:
        """Keep a channel to the peer: dial, wait for loss, redial with backoff."""
        attempt = 0
        while True:
            if link.channel is None:
                try:
                    channel = await self._dial(link.peer)
                except _LINK_ERRORS as error:
                    get_logger("actors.remote").info(
                        "node_link_dial_failed",
                        peer=link.peer,
                        attempt=attempt,
                        error_type=type(error).__name__,
                    )
                    if link.channel is None:  # not rescued by an inbound connection
                        self._mark_down(link)
                    await self._clock.sleep(self._backoff.delay(attempt, self._random))
                    attempt += 1
                    continue
                attempt = 0
                if self._adopt(link, channel, self._node):
                    assert self._nursery is not None
                    self._nursery.start_soon(self._run_link, link, channel)
                else:
                    await channel.aclose()
            if link.channel is not None:
                link.lost = trio.Event()
                await link.lost.wait()
            # Lost: redial after a pause, so two ends do not spin.
            await self._clock.sleep(self._backoff.delay(attempt, self._random))
            attempt += 1

    async def _accepted(self, channel: SecureChannel) -> None:
        peer = self._peer_of(channel)
        link = self._link(peer)
        if self._adopt(link, channel, peer):
            await self._run_link(link, channel)

    def _adopt(self, link: _Link, channel: SecureChannel, dialer: str) -> bool:
        preferred = min(self._node, link.peer)
        current = link.channel
        if current is not None:
            if link.dialer == preferred or dialer != preferred:
                return False
            link.channel = None
            assert self._nursery is not None
            self._nursery.start_soon(current.aclose)
        link.channel = channel
        link.dialer = dialer
        if current is None:
            link.down = False
            if self._events is not None:
                self._events.peer_up(link.peer)
        link.ready.set()
        return True

    async def _run_link(self, link: _Link, channel: SecureChannel) -> None:
        """Deliver the channel's frames and keep its peer attested, until
        either ends; then the link is lost and the channel closed."""
        reattestation = Reattestation(
            channel,
            prove=self._attest,
            verify=self._verify_attestation,
            send=functools.partial(self._send_control, channel),
            clock=self._clock,
            random=self._random,
            interval_s=self._reattest_interval,
            timeout_s=self._reattest_timeout,
            min_answer_interval_s=self._min_answer_interval,
        )
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._keep_attested, link, reattestation, nursery.cancel_scope)
                nursery.start_soon(channel.enforce_write_deadline)
                await self._read(link, channel, reattestation)
                nursery.cancel_scope.cancel()
        finally:
            self._lost(link, channel)
            with trio.CancelScope(shield=True):
                await channel.aclose()

    async def _keep_attested(
        self, link: _Link, reattestation: Reattestation, link_scope: trio.CancelScope
    ) -> None:
        try:
            await reattestation.run()
        except ReattestationFailed as failure:
            self._reattestation_failed(link, failure)
        link_scope.cancel()

    def _reattestation_failed(self, link: _Link, failure: ReattestationFailed) -> None:
        self.reattestation_failures += 1
        get_logger("actors.remote").warning(
            "node_link_reattestation_failed",
            peer=link.peer,
            check=failure.check,
            reason=failure.attestation_check,
        )

    async def _read(
        self, link: _Link, channel: SecureChannel, reattestation: Reattestation
    ) -> None:
        try:
            async for payload in channel:
                if link.channel is not channel:
                    break
                kind = payload[:1]
                if kind == _RUNTIME_FRAME:
                    if self._events is not None:
                        self._events.frame_received(link.peer, payload[1:])
                elif kind == _CONTROL:
                    reattestation.control_received(memoryview(payload)[1:])
                else:
                    get_logger("actors.remote").warning(
                        "node_link_payload_refused", peer=link.peer, check="link.payload_kind"
                    )
                    break
        except _LINK_ERRORS:
            pass
        except ReattestationFailed as failure:
            self._reattestation_failed(link, failure)

    @staticmethod
    async def _send_control(channel: SecureChannel, message: bytes) -> None:
        await channel.send(_CONTROL + message)

    def _lost(self, link: _Link, channel: SecureChannel) -> None:
        if link.channel is not channel:
            return  # a replaced channel; the link is still up on the other one
        link.channel = None
        self._mark_down(link)
        link.lost.set()

    def _mark_down(self, link: _Link) -> None:
        link.queue.clear()
        if not link.down:
            link.down = True
            if self._events is not None:
                self._events.peer_down(link.peer)

    async def _write(self, link: _Link) -> None:
        """Drain the link's queue into its current channel, in order. Frames
        queued before the first connection wait for it (or are dropped by
        ``_mark_down`` when the dial fails)."""
        while True:
            await link.ready.wait()
            channel = link.channel
            if channel is None or not link.queue:
                link.ready = trio.Event()
                continue
            frame = link.queue.popleft()
            try:
                await channel.send(_RUNTIME_FRAME + frame)
            except _LINK_ERRORS as error:
                failed: BaseException | None = error
            else:
                failed = None
            if failed is not None:
                # Logged by type and check: a write deadline here means the
                # peer stopped reading (actors.channel).
                get_logger("actors.remote").info(
                    "node_link_write_failed",
                    peer=link.peer,
                    error_type=type(failed).__name__,
                    check=getattr(failed, "check", None),
                )
                self._lost(link, channel)
