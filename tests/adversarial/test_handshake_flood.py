"""Attack: exhaust a node's handshakes with stalled TCP connections.

On the base code ``serve_secure`` accepted without limit: every connection
held a task, a socket and handshake state until its deadline, however many
there were, and a connection that trickles bytes is as good as silent. Now
at most ``max_concurrent_handshakes`` handshakes run at once and a newcomer
evicts the oldest, so a flood of stalled connections is cut down to the cap
at once and does not keep an honest peer out, also while the flood goes on;
and each handshake, however slowly its bytes trickle in, is cut at its
deadline.
"""

from __future__ import annotations

import functools
import time

import anyio
import anyio.abc
import pytest
from _node_attestation import Cloud, NodeAttestation, new_key

from actors.channel import (
    NOT_ATTESTED,
    ChannelAttestation,
    HandshakeEvicted,
    HandshakeTimeout,
    SecureChannel,
    connect_secure,
)
from nodes.random import SystemRandom
from nodes.tcp import serve_secure
from protocol.framing import SessionError

pytestmark = pytest.mark.anyio

RANDOM = SystemRandom()
CAP = 8
STALLED = 64
CLOUD = Cloud("adversarial-handshake-flood")


async def echo(channel: SecureChannel) -> None:
    async for payload in channel:
        await channel.send(payload)


async def _serve(
    node: NodeAttestation,
    errors: list[Exception],
    *,
    handshake_timeout: float,
    task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """A node serving customers' clients, as the demo's inference node does."""
    await serve_secure(
        "127.0.0.1",
        0,
        echo,
        static=node.static,
        entropy=RANDOM.token_bytes,
        verify_peer=lambda static, payload: None,
        attestation=ChannelAttestation(prove=node.service.attest, require=NOT_ATTESTED),
        handshake_timeout=handshake_timeout,
        max_concurrent_handshakes=CAP,
        on_error=errors.append,
        task_status=task_status,
    )


async def _honest_round_trip(port: int, node: NodeAttestation) -> None:
    """A client that verifies the node and exchanges one message."""
    stream = await anyio.connect_tcp("127.0.0.1", port)
    channel = await connect_secure(
        stream,
        static=new_key(),
        entropy=RANDOM.token_bytes,
        verify_peer=lambda static, payload: None,
        attestation=ChannelAttestation(prove=NOT_ATTESTED, require=node.verifier),
        handshake_timeout=5.0,
    )
    async with channel:
        await channel.send(b"ping")
        assert await channel.receive() == b"ping"


async def _honest_round_trip_redialling(port: int, node: NodeAttestation) -> int:
    """Like a node link's dialler: an evicted attempt is simply made again.
    Returns the attempts it took; an attacker must open the whole cap while
    one honest handshake is in flight to make more than one necessary."""
    for attempt in range(1, 6):
        try:
            await _honest_round_trip(port, node)
        except SessionError:
            continue
        return attempt
    raise AssertionError("the honest client never got in")


async def _closed_by_server(stream: anyio.abc.SocketStream) -> bool:
    """Whether the server has closed ``stream`` (it never sent a byte)."""
    with anyio.move_on_after(0.05):
        try:
            await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return True
    return False


async def test_a_flood_of_stalled_connections_is_cut_to_the_cap_and_honest_peers_get_in() -> None:
    node = CLOUD.node("server")
    errors: list[Exception] = []
    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            port = await group.start(
                functools.partial(_serve, node, errors, handshake_timeout=60.0)
            )
            stalled = [await anyio.connect_tcp("127.0.0.1", port) for _ in range(STALLED)]
            while sum(isinstance(e, HandshakeEvicted) for e in errors) < STALLED - CAP:
                await anyio.sleep(0.01)
            # Only the cap is held: every older stalled connection was closed.
            closed = [await _closed_by_server(stream) for stream in stalled]
            assert sum(closed) == STALLED - CAP

            # An honest client gets in while the cap is full of stalled ones.
            await _honest_round_trip(port, node)

            # And while the flood goes on: a new stalled connection every 5 ms.
            async def flood() -> None:
                while True:
                    stalled.append(await anyio.connect_tcp("127.0.0.1", port))
                    await anyio.sleep(0.005)

            group.start_soon(flood)
            for _ in range(5):
                await _honest_round_trip_redialling(port, node)
            group.cancel_scope.cancel()
    for stream in stalled:
        await stream.aclose()


async def test_a_stalled_handshake_is_cut_at_its_deadline_even_if_it_trickles() -> None:
    node = CLOUD.node("server")
    errors: list[Exception] = []
    deadline = 0.5
    with anyio.fail_after(20):
        async with anyio.create_task_group() as group:
            port = await group.start(
                functools.partial(_serve, node, errors, handshake_timeout=deadline)
            )
            silent = await anyio.connect_tcp("127.0.0.1", port)
            trickling = await anyio.connect_tcp("127.0.0.1", port)
            started = time.monotonic()

            async def trickle() -> None:
                # A frame header and body, one byte every 50 ms: complete
                # in 1.7 s, long after the deadline.
                for byte in b"\x00\x20" + bytes(32):
                    await trickling.send(bytes([byte]))
                    await anyio.sleep(0.05)

            group.start_soon(trickle)
            for stream in (silent, trickling):
                with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                    await stream.receive()
            elapsed = time.monotonic() - started
            assert deadline * 0.8 <= elapsed <= deadline + 1.5
            while sum(isinstance(e, HandshakeTimeout) for e in errors) < 2:
                await anyio.sleep(0.01)  # reported just after the stream is closed
            await _honest_round_trip(port, node)
            group.cancel_scope.cancel()
