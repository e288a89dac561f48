"""The Transport seam over TCP, every node link an attested Noise XX secure channel.

Each configured peer has one *link*: an outbound queue, a writer task, a
dialler that (re)connects with :class:`Backoff`, and at most one live
:class:`~actors.channel.SecureChannel`. A peer claims a node name in its
:class:`NodeHello` (a dialled peer must claim the name dialled) and is
identified by its attestation: its document binds the Noise static key of
this very handshake and meets the cluster's PCR policy, so the key is that
of a node running released code. Where a peer's key is configured
(:attr:`PeerAddress.static_public`) it is enforced as well, before any
frame is read; but a node's static key is born in memory at boot, so
normally nobody knows it in advance (``static_public=None``). Such a peer
is admitted on its attestation alone; as the accepting side, this node
verifies its evidence before proving itself, so an unauthenticated
connection costs no TPM command, and its handshake stays evictable until
then (:class:`~actors.channel.Admission`, "Serving" in ``actors.channel``).
Attestation says what code a node runs, not which node it is: without a
configured key a name is what an attested node claims (the address dialled
proves nothing either, the network being the adversary's). While a link is
up its key is pinned: another key claiming that name is refused
(:attr:`PeerCheck.PEER_IN_USE`) until the link is lost.

Joining: with ``accept_joining=True`` (the ingress node, which does not
know its inference nodes in advance) a node whose name is not configured is
admitted once its attestation passes, and is a *joined peer*: reachable
over its inbound link only (there is no address to dial back), ``send``
works while that link is up, and when it is lost ``peer_down`` fires and
the peer is forgotten until it dials in again (a restarted node comes with
a new key). A joiner cannot claim this node's name
(:attr:`PeerCheck.PEER_SELF`) nor a configured peer's without that peer's
configured key (:attr:`PeerCheck.PEER_STATIC_KEY`; a configured peer known
by no key is taken as that peer, as above), nor a joined peer's name with
another key while its link is up (:attr:`PeerCheck.PEER_IN_USE`); at most
``max_joined_peers`` are linked at once (:attr:`PeerCheck.PEER_JOINED_LIMIT`).
Without ``accept_joining`` an unconfigured name is refused
(:attr:`PeerCheck.PEER_UNKNOWN`). ``add_peer`` for a joined name drops its
joined link: the configured one takes over.

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
redial has to pass attestation again (a joined peer's link is closed the
same way, and the peer forgotten). A peer that stops reading cannot hold
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
redialling continues with backoff (a joined peer is forgotten instead).
``send`` refuses frames while the link is known to be down, and to names
neither configured nor joined.
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
    DEFAULT_MAX_CHANNELS,
    DEFAULT_MAX_CONCURRENT_HANDSHAKES,
    DEFAULT_WRITE_TIMEOUT,
    Admission,
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

#: Joined peers (see the module docstring) a transport holds links to at once.
DEFAULT_MAX_JOINED_PEERS: Final = 1024

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
    #: The claimed node is not a configured peer, and this node admits no joiners.
    PEER_UNKNOWN = "peer.unknown"
    #: The peer claims this node's own name.
    PEER_SELF = "peer.self"
    #: A dialled peer answered as another configured node.
    PEER_UNEXPECTED = "peer.unexpected"
    #: The Noise static key is not the one configured for the claimed node.
    PEER_STATIC_KEY = "peer.static_key"
    #: A link to the claimed node is up with another key (a name being squatted).
    PEER_IN_USE = "peer.in_use"
    #: As many joined peers as allowed are linked already.
    PEER_JOINED_LIMIT = "peer.joined_limit"


class PeerNotAllowed(Exception):
    """A handshake named a node this transport does not admit, or proved
    another key than the one configured or in use for that name."""

    def __init__(self, check: PeerCheck) -> None:
        super().__init__(f"peer refused: {check.value}")
        self.check = check


@dataclass(frozen=True, slots=True)
class PeerAddress:
    """Where a configured peer listens, and its Noise static key if known in
    advance (then enforced); ``None``: the peer is known by its attestation
    (see the module docstring)."""

    host: str
    port: int
    static_public: bytes | None = None


class _Link:
    __slots__ = (
        "channel",
        "dialer",
        "down",
        "joined",
        "lost",
        "peer",
        "queue",
        "ready",
        "scope",
        "started",
    )

    def __init__(self, peer: str, *, joined: bool = False) -> None:
        self.peer = peer
        #: A joined peer's link: inbound only, forgotten once lost.
        self.joined = joined
        #: A joined link's scope, cancelled to drop it.
        self.scope: trio.CancelScope | None = None
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
        accept_joining: bool = False,
        max_joined_peers: int = DEFAULT_MAX_JOINED_PEERS,
    ) -> None:
        # No default and no way around: a node link is always mutually attested.
        if not callable(attest):
            raise TypeError("a node link needs this node's attestation source")
        if not isinstance(verify_attestation, PeerAttestationVerifier):
            # Not any callable: a stand-in that accepts everything would link
            # up with nodes running anything (see the module docstring).
            raise TypeError("a node link verifies its peers with a PeerAttestationVerifier")
        if max_joined_peers < 1:
            raise ValueError("max_joined_peers must be at least 1")
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
        self._accept_joining = accept_joining
        self._max_joined = max_joined_peers
        #: Joined peers' links, by node name, while each is up.
        self._joined: dict[str, _Link] = {}
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
        joined = self._joined.get(node)
        if joined is not None and joined.scope is not None:
            # The name is configured from now on: its joined link is dropped
            # and the configured link (dialled) takes over.
            joined.scope.cancel()

    def peer_static(self, peer: str) -> bytes | None:
        """The Noise static key of the link to ``peer`` while it is up: the
        key its handshake proved and its attestation bound (a link keeps its
        key while up), or ``None``. What the scheduler places sealed requests
        by (:class:`actors.scheduler.PeerKeys`)."""
        link = self._joined.get(peer) or self._links.get(peer)
        if link is None or link.down or link.channel is None:
            return None
        return link.channel.remote_static

    @property
    def joined_peers(self) -> frozenset[str]:
        """The joined peers whose links are up (see the module docstring)."""
        return frozenset(self._joined)

    def send(self, peer: str, frame: bytes) -> bool:
        if peer == self._node:
            return False
        if len(frame) > DEFAULT_MAX_PAYLOAD:
            # The channel would refuse it in the writer task, after this call
            # had reported success; refuse it here instead.
            return False
        if peer in self._peers:
            link = self._link(peer)
        else:
            joined = self._joined.get(peer)
            if joined is None:
                return False  # not configured, and not (or no longer) joined
            link = joined
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
                        # Each joined peer holds one inbound channel.
                        max_channels=DEFAULT_MAX_CHANNELS
                        + (self._max_joined if self._accept_joining else 0),
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

    def _verify(self, expected: str | None, remote_static: bytes, payload: bytes) -> Admission:
        """The handshake's check of who the peer claims to be (``verify_peer``):
        refused with :class:`PeerNotAllowed`, admitted as known by its key, or
        admitted on the attestation it is about to present."""
        refusal, admission = self._admission(expected, remote_static, payload)
        if refusal is not None:
            get_logger("actors.remote").info("node_link_peer_refused", check=refusal.value)
            raise PeerNotAllowed(refusal)
        return admission

    def _admission(
        self, expected: str | None, remote_static: bytes, payload: bytes
    ) -> tuple[PeerCheck | None, Admission]:
        envelope = None
        with contextlib.suppress(MessageDecodeError):
            envelope = REGISTRY.decode(payload)
        if envelope is None:
            # Outside the handler: no __context__ rides along with the refusal.
            return PeerCheck.HELLO_DECODE, Admission.ON_ATTESTATION
        hello = envelope.body
        if not isinstance(hello, NodeHello):
            return PeerCheck.HELLO_TYPE, Admission.ON_ATTESTATION
        name = hello.node
        if name == self._node:
            return PeerCheck.PEER_SELF, Admission.ON_ATTESTATION
        if expected is not None and name != expected:
            return PeerCheck.PEER_UNEXPECTED, Admission.ON_ATTESTATION
        address = self._peers.get(name)
        if address is not None:
            if address.static_public is not None:
                if not hmac.compare_digest(address.static_public, remote_static):
                    return PeerCheck.PEER_STATIC_KEY, Admission.ON_ATTESTATION
                return None, Admission.KNOWN
            return self._in_use(self._links.get(name), remote_static), Admission.ON_ATTESTATION
        if not self._accept_joining:
            return PeerCheck.PEER_UNKNOWN, Admission.ON_ATTESTATION
        return self._join_refusal(name, remote_static), Admission.ON_ATTESTATION

    @staticmethod
    def _in_use(link: _Link | None, remote_static: bytes) -> PeerCheck | None:
        """Refuses another key for a name whose link is up (squatting)."""
        current = link.channel if link is not None else None
        if current is not None and not hmac.compare_digest(current.remote_static, remote_static):
            return PeerCheck.PEER_IN_USE
        return None

    def _join_refusal(self, name: str, remote_static: bytes) -> PeerCheck | None:
        """Why an unconfigured node may not join now, if it may not."""
        link = self._joined.get(name)
        if link is not None:
            return self._in_use(link, remote_static)
        if len(self._joined) >= self._max_joined:
            return PeerCheck.PEER_JOINED_LIMIT
        return None

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
                        check=getattr(error, "check", None),
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
        if peer in self._peers:
            link = self._link(peer)
            if self._adopt(link, channel, peer):
                await self._run_link(link, channel)
            return
        # A joiner. Checked again now that its attestation passed: other
        # joiners may have been adopted since its handshake.
        refusal = self._join_refusal(peer, channel.remote_static)
        if refusal is not None or not self._accept_joining or peer == self._node:
            get_logger("actors.remote").info(
                "node_link_join_refused",
                check=(refusal or PeerCheck.PEER_UNKNOWN).value,
            )
            return
        joined = self._joined.get(peer)
        if joined is None:
            joined = self._joined[peer] = _Link(peer, joined=True)
            joined.down = True  # until adopted: peer_up fires then
        if self._adopt(joined, channel, peer):
            await self._run_link(joined, channel)

    def _adopt(self, link: _Link, channel: SecureChannel, dialer: str) -> bool:
        preferred = min(self._node, link.peer)
        current = link.channel
        if current is not None:
            if not hmac.compare_digest(current.remote_static, channel.remote_static):
                # Another key for a name whose link is up: the link keeps its key.
                get_logger("actors.remote").info(
                    "node_link_peer_refused", peer=link.peer, check=PeerCheck.PEER_IN_USE.value
                )
                return False
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
                if link.joined:
                    # No dialler keeps a joined link: its writer lives as long
                    # as its one channel, and dropping it cancels both.
                    link.scope = nursery.cancel_scope
                    nursery.start_soon(self._write, link)
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
        if link.joined and self._joined.get(link.peer) is link:
            # Forgotten: it has no address to be dialled at, and a restarted
            # node comes back with a new key, by dialling in again.
            del self._joined[link.peer]

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
