"""Secure channels over loopback TCP and in-memory streams, including attacks.

Every failure case checks three things: the failing side gets a typed error,
the channel is closed, and the server keeps serving fresh connections.
"""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
import anyio.abc
import pytest
from _node_attestation import Cloud

from actors.channel import (
    NODE_LINK_PROLOGUE,
    NOT_ATTESTED,
    ChannelAttestation,
    HandshakeTimeout,
    SecureChannel,
    TransportBroken,
    accept_secure,
    connect_secure,
    memory_byte_stream_pair,
)
from nodes.random import SystemRandom
from nodes.tcp import serve_secure
from protocol.framing import (
    DecryptFailed,
    HandshakeFailed,
    PayloadTooLarge,
    PeerRejected,
    SessionError,
    TruncatedStream,
)
from protocol.messages import Envelope, Ping, Pong
from protocol.noise import KeyPair, NoiseProtocol

pytestmark = pytest.mark.anyio

DH = NoiseProtocol.from_name("Noise_XX_25519_ChaChaPoly_BLAKE2s").dh
RANDOM = SystemRandom()
CLIENT_KEY = KeyPair.generate(DH, RANDOM.token_bytes)
STRANGER_KEY = KeyPair.generate(DH, RANDOM.token_bytes)
SERVER_HELLO = b"server's handshake payload"
CLIENT_HELLO = b"client's handshake payload"
MIB = 1024 * 1024
# These tests are about the channel itself; the attestation exchange that
# follows every handshake has its own tests (test_channel_attestation.py).
# The server is a node, attested on a simulated NitroTPM; the client is a
# customer that verifies it.
SERVER_NODE = Cloud("test-channel").node("server")
SERVER_KEY = SERVER_NODE.static
SERVED = ChannelAttestation(prove=SERVER_NODE.service.attest, require=NOT_ATTESTED)
CLIENT = ChannelAttestation(prove=NOT_ATTESTED, require=SERVER_NODE.verifier)


class NotAllowed(Exception):
    pass


def allow(*keys: KeyPair, expect_payload: bytes | None = None) -> Callable[[bytes, bytes], None]:
    """A verify_peer that admits only ``keys`` (the attestation layer's seat)."""
    allowed = {k.public for k in keys}

    def verify(remote_static: bytes, payload: bytes) -> None:
        if remote_static not in allowed:
            raise NotAllowed("static key not in the allowed set")
        if expect_payload is not None and payload != expect_payload:
            raise NotAllowed("unexpected handshake payload")

    return verify


async def echo(channel: SecureChannel) -> None:
    async for payload in channel:
        await channel.send(payload)


@dataclass
class Server:
    port: int
    errors: anyio.abc.ObjectReceiveStream[Exception]
    seen: list[Exception] = field(default_factory=list)

    async def next_error(self) -> Exception:
        with anyio.fail_after(5):
            error = await self.errors.receive()
        self.seen.append(error)
        return error


@asynccontextmanager
async def running_server(
    handler: Callable[[SecureChannel], Awaitable[None]] = echo,
    *,
    handshake_timeout: float = 5.0,
    max_payload: int = 4 * MIB,
) -> AsyncIterator[Server]:
    send_errors, receive_errors = anyio.create_memory_object_stream[Exception](100)
    async with anyio.create_task_group() as tg:
        port = await tg.start(
            functools.partial(
                serve_secure,
                "127.0.0.1",
                0,
                handler,
                static=SERVER_KEY,
                entropy=RANDOM.token_bytes,
                attestation=SERVED,
                verify_peer=allow(CLIENT_KEY, expect_payload=CLIENT_HELLO),
                handshake_payload=SERVER_HELLO,
                handshake_timeout=handshake_timeout,
                max_payload=max_payload,
                on_error=send_errors.send_nowait,
            )
        )
        try:
            yield Server(port, receive_errors)
        finally:
            tg.cancel_scope.cancel()


async def connect(
    port: int,
    *,
    key: KeyPair = CLIENT_KEY,
    wrap: Callable[[anyio.abc.ByteStream], anyio.abc.ByteStream] | None = None,
    handshake_timeout: float = 5.0,
    max_payload: int = 4 * MIB,
) -> SecureChannel:
    stream: anyio.abc.ByteStream = await anyio.connect_tcp("127.0.0.1", port)
    if wrap is not None:
        stream = wrap(stream)
    return await connect_secure(
        stream,
        static=key,
        entropy=RANDOM.token_bytes,
        attestation=CLIENT,
        verify_peer=allow(SERVER_KEY, expect_payload=SERVER_HELLO),
        handshake_payload=CLIENT_HELLO,
        handshake_timeout=handshake_timeout,
        max_payload=max_payload,
    )


async def assert_fresh_connection_works(server: Server) -> None:
    async with await connect(server.port) as channel:
        payload = os.urandom(65_536)  # two chunks, within every test server's limit
        await channel.send(payload)
        assert await channel.receive() == payload


class InterferingStream(anyio.abc.ByteStream):
    """Wraps a stream and misbehaves on the n-th send (0-based)."""

    def __init__(self, inner: anyio.abc.ByteStream, at_send: int, action: str) -> None:
        self.inner = inner
        self.at_send = at_send
        self.action = action
        self.sends = 0
        self.last = b""

    async def send(self, item: bytes) -> None:
        index = self.sends
        self.sends += 1
        if index == self.at_send and self.action == "cut":
            # Half of this write reaches the peer, then the connection drops.
            await self.inner.send(item[: len(item) // 2])
            await self.inner.aclose()
            return
        if index == self.at_send and self.action == "flip":
            tampered = bytearray(item)
            tampered[len(tampered) // 2] ^= 0x04
            item = bytes(tampered)
        await self.inner.send(item)
        if index == self.at_send and self.action == "replay":
            await self.inner.send(item)

    async def receive(self, max_bytes: int = 65536) -> bytes:
        return await self.inner.receive(max_bytes)

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def aclose(self) -> None:
        await self.inner.aclose()


# The client writes two handshake messages (sends 0 and 1) and its (empty)
# evidence message (send 2); its first application frame is send 3.
FIRST_TRANSPORT_SEND = 3


# -- TCP: round trips ---------------------------------------------------------------------


async def test_round_trip_both_directions_over_tcp() -> None:
    with anyio.fail_after(30):
        async with running_server() as server:
            async with await connect(server.port) as channel:
                assert channel.remote_static == SERVER_KEY.public
                assert channel.peer_handshake_payload == SERVER_HELLO
                for size in (0, 1, 1000, 65518, 65519, 65536, 1 * MIB):
                    payload = os.urandom(size)
                    await channel.send(payload)
                    assert await channel.receive() == payload
            assert server.seen == []


async def test_many_concurrent_connections() -> None:
    with anyio.fail_after(30):
        async with running_server() as server:

            async def client(i: int) -> None:
                async with await connect(server.port) as channel:
                    for j in range(5):
                        payload = f"{i}:{j}".encode() * (i + 1) * 100
                        await channel.send(payload)
                        assert await channel.receive() == payload

            async with anyio.create_task_group() as tg:
                for i in range(12):
                    tg.start_soon(client, i)


async def test_server_sends_first_and_messages_round_trip() -> None:
    async def pinger(channel: SecureChannel) -> None:
        await channel.send_message(Envelope.wrap(Ping(41), request_id=7))
        reply = await channel.receive_message()
        assert reply == Envelope.wrap(Pong(41), request_id=7)
        await channel.send(b"done")

    with anyio.fail_after(10):
        async with running_server(pinger) as server:
            async with await connect(server.port) as channel:
                request = await channel.receive_message()
                assert isinstance(request.body, Ping)
                await channel.send_message(
                    Envelope.wrap(Pong(request.body.nonce), request_id=request.request_id)
                )
                assert await channel.receive() == b"done"
                with pytest.raises(anyio.EndOfStream):
                    await channel.receive()  # the server's handler returned: CLOSE
            assert server.seen == []


# -- TCP: failures --------------------------------------------------------------------------


async def test_server_rejects_a_static_key_outside_the_allowed_set() -> None:
    with anyio.fail_after(10):
        async with running_server() as server:
            streams: list[anyio.abc.ByteStream] = []

            def keep(stream: anyio.abc.ByteStream) -> anyio.abc.ByteStream:
                streams.append(stream)
                return stream

            # The server sent nothing after rejecting: the stranger sees the
            # stream end without CLOSE, before it is handed a channel at all
            # (the attestation exchange waits for the server's first payload).
            with pytest.raises(TruncatedStream):
                await connect(server.port, key=STRANGER_KEY, wrap=keep)
            error = await server.next_error()
            assert isinstance(error, PeerRejected)
            assert isinstance(error.__cause__, NotAllowed)
            with pytest.raises(anyio.ClosedResourceError):
                await streams[0].send(b"x")
            await assert_fresh_connection_works(server)


async def test_client_rejects_a_server_outside_its_allowed_set() -> None:
    with anyio.fail_after(10):
        async with running_server() as server:
            stream = await anyio.connect_tcp("127.0.0.1", server.port)
            with pytest.raises(PeerRejected):
                await connect_secure(
                    stream,
                    static=CLIENT_KEY,
                    entropy=RANDOM.token_bytes,
                    attestation=CLIENT,
                    verify_peer=allow(STRANGER_KEY),
                    handshake_payload=CLIENT_HELLO,
                )
            # The client wrote nothing after rejecting: the server's handshake
            # sees the stream end.
            error = await server.next_error()
            assert isinstance(error, TruncatedStream)
            with pytest.raises(anyio.ClosedResourceError):
                await stream.send(b"x")
            await assert_fresh_connection_works(server)


async def test_tampered_ciphertext() -> None:
    with anyio.fail_after(10):
        async with running_server() as server:
            channel = await connect(
                server.port, wrap=lambda s: InterferingStream(s, FIRST_TRANSPORT_SEND, "flip")
            )
            await channel.send(b"a message somebody alters on the way" * 10)
            error = await server.next_error()
            assert isinstance(error, DecryptFailed)
            with pytest.raises(TruncatedStream):
                await channel.receive()
            await assert_fresh_connection_works(server)


async def test_tampered_ciphertext_towards_the_client() -> None:
    class FlipIncoming(InterferingStream):
        async def receive(self, max_bytes: int = 65536) -> bytes:
            data = await self.inner.receive(max_bytes)
            if self.sends > FIRST_TRANSPORT_SEND:  # handshake done, our request sent
                tampered = bytearray(data)
                tampered[-1] ^= 0x80
                data = bytes(tampered)
            return data

    with anyio.fail_after(10):
        async with running_server() as server:
            channel = await connect(server.port, wrap=lambda s: FlipIncoming(s, -1, "none"))
            await channel.send(b"hello")
            with pytest.raises(DecryptFailed):
                await channel.receive()
            with pytest.raises(anyio.ClosedResourceError):
                await channel.send(b"again")
            error = await server.next_error()
            assert isinstance(error, (TruncatedStream, TransportBroken))
            await assert_fresh_connection_works(server)


async def test_replayed_frame() -> None:
    with anyio.fail_after(10):
        async with running_server() as server:
            channel = await connect(
                server.port, wrap=lambda s: InterferingStream(s, FIRST_TRANSPORT_SEND, "replay")
            )
            await channel.send(b"transfer 100 credits")
            assert await channel.receive() == b"transfer 100 credits"  # the original, echoed once
            error = await server.next_error()
            assert isinstance(error, DecryptFailed)
            with pytest.raises(TruncatedStream):
                await channel.receive()
            await assert_fresh_connection_works(server)


async def test_truncated_stream_mid_payload() -> None:
    with anyio.fail_after(10):
        async with running_server() as server:
            channel = await connect(
                server.port, wrap=lambda s: InterferingStream(s, FIRST_TRANSPORT_SEND, "cut")
            )
            # A multi-frame payload of which only the first half arrives.
            await channel.send(os.urandom(200_000))
            error = await server.next_error()
            assert isinstance(error, TruncatedStream)
            with pytest.raises(TransportBroken):
                await channel.send(b"more")
            await assert_fresh_connection_works(server)


async def test_truncated_stream_without_close() -> None:
    with anyio.fail_after(10):
        async with running_server() as server:
            stream = await anyio.connect_tcp("127.0.0.1", server.port)
            channel = await connect_secure(
                stream,
                static=CLIENT_KEY,
                entropy=RANDOM.token_bytes,
                attestation=CLIENT,
                verify_peer=allow(SERVER_KEY),
                handshake_payload=CLIENT_HELLO,
            )
            await channel.send(b"complete, but the stream is not")
            assert await channel.receive() == b"complete, but the stream is not"
            await stream.aclose()  # the transport ends without the channel's CLOSE
            error = await server.next_error()
            assert isinstance(error, TruncatedStream)
            await assert_fresh_connection_works(server)


async def test_oversized_payload() -> None:
    with anyio.fail_after(10):
        async with running_server(max_payload=64 * 1024) as server:
            channel = await connect(server.port, max_payload=4 * MIB)
            await channel.send(os.urandom(1 * MIB))
            error = await server.next_error()
            assert isinstance(error, PayloadTooLarge)
            with pytest.raises((TruncatedStream, TransportBroken)):
                await channel.receive()
            await assert_fresh_connection_works(server)


async def test_sender_refuses_payloads_above_its_own_limit() -> None:
    with anyio.fail_after(10):
        async with (
            running_server() as server,
            await connect(server.port, max_payload=1000) as channel,
        ):
            with pytest.raises(PayloadTooLarge):
                await channel.send(b"x" * 1001)
            await channel.send(b"x" * 1000)
            assert await channel.receive() == b"x" * 1000


async def test_a_write_the_peer_does_not_read_is_cut_at_its_deadline() -> None:
    a, b = memory_byte_stream_pair(max_buffer_size=4)
    channels: dict[str, SecureChannel] = {}

    async def server() -> None:
        channels["server"] = await accept_secure(
            b,
            static=SERVER_KEY,
            entropy=RANDOM.token_bytes,
            attestation=SERVED,
            verify_peer=allow(CLIENT_KEY),
        )

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(server)
            client = await connect_secure(
                a,
                static=CLIENT_KEY,
                entropy=RANDOM.token_bytes,
                attestation=CLIENT,
                verify_peer=allow(SERVER_KEY),
                write_timeout=0.2,
            )
        # The server never reads: the stream's buffer fills, a write blocks,
        # and the watchdog cuts it.
        started = anyio.current_time()
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.enforce_write_deadline)  # returns once the channel is closed
            with pytest.raises(TransportBroken) as broken:
                for _ in range(8):
                    await client.send(b"x" * 1000)
        assert broken.value.check == "transport.write_timeout"
        assert anyio.current_time() - started < 0.2 * 1.25 + 0.5
        with pytest.raises(anyio.ClosedResourceError):
            await client.send(b"after the cut")
        await channels["server"].aclose()


async def test_handshake_timeout_on_the_server_while_others_are_served() -> None:
    with anyio.fail_after(10):
        async with running_server(handshake_timeout=1.0) as server:
            silent = await anyio.connect_tcp("127.0.0.1", server.port)
            # The silent connection does not hold up anyone else.
            await assert_fresh_connection_works(server)
            error = await server.next_error()
            assert isinstance(error, HandshakeTimeout)
            with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                await silent.receive()
            await silent.aclose()
            await assert_fresh_connection_works(server)


async def test_handshake_timeout_on_the_client() -> None:
    with anyio.fail_after(10):
        async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
            port = listener.extra(anyio.abc.SocketAttribute.local_port)
            accepted: list[anyio.abc.SocketStream] = []

            async def hold(stream: anyio.abc.SocketStream) -> None:
                accepted.append(stream)
                await anyio.sleep_forever()

            async with anyio.create_task_group() as tg:
                tg.start_soon(listener.serve, hold)
                with pytest.raises(HandshakeTimeout):
                    await connect(port, handshake_timeout=0.3)
                tg.cancel_scope.cancel()


async def test_garbage_instead_of_a_handshake() -> None:
    with anyio.fail_after(10):
        async with running_server() as server:
            async with await anyio.connect_tcp("127.0.0.1", server.port) as raw:
                await raw.send(b"\x00\x05hello")
                error = await server.next_error()
                assert isinstance(error, HandshakeFailed)
            await assert_fresh_connection_works(server)


async def test_wrong_prologue_fails_the_handshake() -> None:
    with anyio.fail_after(10):
        async with running_server() as server:
            stream = await anyio.connect_tcp("127.0.0.1", server.port)
            with pytest.raises(HandshakeFailed):
                await connect_secure(
                    stream,
                    static=CLIENT_KEY,
                    entropy=RANDOM.token_bytes,
                    attestation=CLIENT,
                    verify_peer=allow(SERVER_KEY),
                    prologue=b"mantle/2 node-link",
                )
            assert isinstance(await server.next_error(), (TruncatedStream, HandshakeFailed))
            await assert_fresh_connection_works(server)


async def test_a_failing_handler_does_not_affect_other_connections() -> None:
    async def crash_on_request(channel: SecureChannel) -> None:
        payload = await channel.receive()
        if payload == b"crash":
            raise RuntimeError("handler bug")
        await channel.send(payload)
        await echo(channel)

    with anyio.fail_after(10):
        async with (
            running_server(crash_on_request) as server,
            await connect(server.port) as healthy,
        ):
            async with await connect(server.port) as doomed:
                await doomed.send(b"crash")
                assert isinstance(await server.next_error(), RuntimeError)
                # The handler failed, so its channel ends without CLOSE:
                # the client sees a truncated stream, never a clean end of
                # a partial answer.
                with pytest.raises(TruncatedStream):
                    await doomed.receive()
            await healthy.send(b"still fine")
            assert await healthy.receive() == b"still fine"


# -- in-memory streams ------------------------------------------------------------------------


@asynccontextmanager
async def memory_pair(
    *,
    client_verify: Callable[[bytes, bytes], Awaitable[None] | None] | None = None,
    server_verify: Callable[[bytes, bytes], Awaitable[None] | None] | None = None,
) -> AsyncIterator[tuple[SecureChannel, SecureChannel]]:
    a, b = memory_byte_stream_pair()
    channels: dict[str, SecureChannel] = {}

    async def server() -> None:
        channels["server"] = await accept_secure(
            b,
            static=SERVER_KEY,
            entropy=RANDOM.token_bytes,
            attestation=SERVED,
            verify_peer=server_verify or allow(CLIENT_KEY),
            handshake_payload=SERVER_HELLO,
        )

    async with anyio.create_task_group() as tg:
        tg.start_soon(server)
        channels["client"] = await connect_secure(
            a,
            static=CLIENT_KEY,
            entropy=RANDOM.token_bytes,
            attestation=CLIENT,
            verify_peer=client_verify or allow(SERVER_KEY),
            handshake_payload=CLIENT_HELLO,
        )
    yield channels["client"], channels["server"]


async def test_in_memory_round_trip_and_clean_close() -> None:
    with anyio.fail_after(10):
        async with memory_pair() as (client, server):
            assert client.handshake_hash == server.handshake_hash
            assert client.remote_static == SERVER_KEY.public
            assert server.remote_static == CLIENT_KEY.public
            assert server.peer_handshake_payload == CLIENT_HELLO
            big = os.urandom(1 * MIB)

            async def serve() -> None:
                async for payload in server:
                    await server.send(payload[::-1])
                await server.aclose()

            async with anyio.create_task_group() as tg:
                tg.start_soon(serve)
                for payload in (b"", b"abc", big):
                    await client.send(payload)
                    assert await client.receive() == payload[::-1]
                await client.aclose()
            with pytest.raises(anyio.ClosedResourceError):
                await client.send(b"after close")


async def test_async_verify_peer_and_its_rejection() -> None:
    calls: list[bytes] = []

    async def slow_verify(remote_static: bytes, payload: bytes) -> None:
        await anyio.sleep(0.01)
        calls.append(payload)
        if payload != SERVER_HELLO:
            raise NotAllowed("bad document")

    with anyio.fail_after(10):
        async with memory_pair(client_verify=slow_verify) as (client, server):
            assert calls == [SERVER_HELLO]
            await client.aclose()
            await server.aclose()

    async def reject(remote_static: bytes, payload: bytes) -> None:
        await anyio.sleep(0)
        raise NotAllowed("no")

    with anyio.fail_after(10), pytest.raises(ExceptionGroup) as group:
        async with memory_pair(server_verify=reject):
            pass
    kinds = {type(e) for e in group.value.exceptions}
    assert PeerRejected in kinds


async def test_the_default_prologue_names_the_protocol_and_version() -> None:
    assert NODE_LINK_PROLOGUE == b"mantle/1 node-link"


async def test_errors_are_session_errors_with_checks() -> None:
    for error_type in (
        HandshakeTimeout,
        TransportBroken,
        DecryptFailed,
        TruncatedStream,
        PeerRejected,
    ):
        assert issubclass(error_type, SessionError)
