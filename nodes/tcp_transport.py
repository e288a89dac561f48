"""The Transport seam over TCP, every node link a Noise XX secure channel.

Each configured peer has one *link*: an outbound queue, a writer task, a
dialler that (re)connects with :class:`Backoff`, and at most one live
:class:`~actors.channel.SecureChannel`. A peer is identified by the Noise
static key it proves in the handshake, which must be the key configured for
the node name its :class:`NodeHello` claims (and, when a verifier is given,
its attestation must satisfy it); a connection from anyone else is refused
before any frame is read.

Both ends of a link may dial at once. When two channels to the same peer
exist, the one dialled by the node whose name sorts first is kept and the
other closed; both ends apply the same rule, so they converge on one channel.

Events to the runtime: ``peer_up`` when a channel to the peer is adopted,
``peer_down`` when it is lost or a dial fails (queued frames are dropped,
since the runtime fails the asks waiting on them), then redialling continues
with backoff. ``send`` refuses frames while the link is known to be down.
"""

from __future__ import annotations

import contextlib
import functools
import hmac
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import anyio
import trio

from actors._remote.backoff import Backoff
from actors._remote.messages import NodeHello
from actors.channel import SecureChannel, connect_secure, serve_secure
from actors.log import get_logger
from actors.seams.clock import Clock, TrioClock
from actors.seams.random import Random
from actors.seams.transport import TransportEvents
from protocol.framing import DEFAULT_MAX_PAYLOAD, SessionError
from protocol.messages import REGISTRY, Envelope, MessageDecodeError
from protocol.noise import KeyPair

_LINK_ERRORS = (
    OSError,
    SessionError,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
)


class PeerNotAllowed(Exception):
    """A handshake named a node that is not configured, or proved another key."""

    def __init__(self, check: str) -> None:
        super().__init__(f"peer refused: {check}")
        self.check = check


@dataclass(frozen=True, slots=True)
class PeerAddress:
    host: str
    port: int
    static_public: bytes


AttestationVerifier = Callable[[str, bytes, bytes], None]
"""``(node, remote_static, attestation) -> None``; raises to refuse the peer."""


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
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        attestation: bytes = b"",
        verify_attestation: AttestationVerifier | None = None,
        backoff: Backoff | None = None,
        clock: Clock | None = None,
        queue_limit: int = 4096,
        handshake_timeout: float = 10.0,
    ) -> None:
        self._node = node
        self._static = static
        self._random = random
        self._peers = dict(peers)
        self._listen_host = listen_host
        self._listen_port = listen_port
        self._hello = REGISTRY.encode(Envelope.wrap(NodeHello(node, attestation)))
        self._verify_attestation = verify_attestation
        self._backoff = backoff if backoff is not None else Backoff()
        self._clock = clock if clock is not None else TrioClock()
        self._queue_limit = queue_limit
        self._handshake_timeout = handshake_timeout
        self._events: TransportEvents | None = None
        self._links: dict[str, _Link] = {}
        self._nursery: trio.Nursery | None = None
        self.port: int | None = None

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
                        handshake_payload=self._hello,
                        handshake_timeout=self._handshake_timeout,
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
            raise PeerNotAllowed("hello.decode")
        hello = envelope.body
        if not isinstance(hello, NodeHello):
            raise PeerNotAllowed("hello.type")
        address = self._peers.get(hello.node)
        if address is None or hello.node == self._node:
            raise PeerNotAllowed("peer.unknown")
        if expected is not None and hello.node != expected:
            raise PeerNotAllowed("peer.unexpected")
        if not hmac.compare_digest(address.static_public, remote_static):
            raise PeerNotAllowed("peer.static_key")
        if self._verify_attestation is not None:
            self._verify_attestation(hello.node, remote_static, hello.attestation)

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
            handshake_payload=self._hello,
            handshake_timeout=self._handshake_timeout,
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
                    self._nursery.start_soon(self._read_and_close, link, channel)
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
            await self._read(link, channel)

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

    async def _read(self, link: _Link, channel: SecureChannel) -> None:
        try:
            async for payload in channel:
                if link.channel is not channel:
                    break
                if self._events is not None:
                    self._events.frame_received(link.peer, payload)
        except _LINK_ERRORS:
            pass
        finally:
            self._lost(link, channel)

    async def _read_and_close(self, link: _Link, channel: SecureChannel) -> None:
        try:
            await self._read(link, channel)
        finally:
            with trio.CancelScope(shield=True):
                await channel.aclose()

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
                await channel.send(frame)
            except _LINK_ERRORS:
                self._lost(link, channel)
