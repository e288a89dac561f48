"""Attack: flood the keys node with malformed frames and messages until it stops
serving key releases.

The operator opens connection after connection and sends, each time, one of:
bytes that are no Noise handshake, a payload that is no message envelope, a
valid message that is no key-custody request, a payload above the key
channel's size bound, or a request cut off mid-frame. Each such connection
ends with a typed error (a ``core.error`` answer where the channel still
works), the server logs it by type and check, and keeps serving: a genuine
node fetches its key afterwards.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import anyio
import pytest
from _custody_kit import MODEL, CustodyCloud, new_key_pair
from _keys_wire_kit import LOOPBACK, RANDOM, dial, keys_node_verifier, serving_keys_node

from actors.channel import connect_secure
from actors.key_custody import (
    MAX_KEY_MESSAGE_BYTES,
    KeyChannelCheck,
    asker_channel_attestation,
    fetch_data_key,
    import_data_key,
)
from protocol.framing import SessionCheck, SessionError
from protocol.messages import Envelope, ErrorCode, ErrorReply, Ping

pytestmark = pytest.mark.anyio

ROUNDS = 6


async def _garbage_before_handshake(port: int) -> None:
    async with await anyio.connect_tcp(LOOPBACK, port) as stream:
        await stream.send(struct.pack(">H", 40) + bytes(40))
        with anyio.move_on_after(5):
            while await stream.receive():
                pass


async def _not_an_envelope(port: int, cloud: CustodyCloud) -> None:
    async with await dial(port, new_key_pair(), keys_node_verifier(cloud)) as channel:
        await channel.send(b"\xc1 not msgpack")
        reply = await channel.receive_message()
        assert reply.body == ErrorReply(ErrorCode.BAD_REQUEST, False)


async def _not_a_key_request(port: int, cloud: CustodyCloud) -> None:
    async with await dial(port, new_key_pair(), keys_node_verifier(cloud)) as channel:
        await channel.send_message(Envelope.wrap(Ping(7), request_id=9))
        reply = await channel.receive_message()
        assert reply.body == ErrorReply(ErrorCode.BAD_REQUEST, False)
        assert reply.request_id == 9


async def _oversized(port: int, cloud: CustodyCloud) -> None:
    stream = await anyio.connect_tcp(LOOPBACK, port)
    channel = await connect_secure(
        stream,
        static=new_key_pair(),
        entropy=RANDOM.token_bytes,
        verify_peer=lambda remote_static, payload: None,
        attestation=asker_channel_attestation(keys_node_verifier(cloud)),
    )
    async with channel:
        await channel.send(bytes(MAX_KEY_MESSAGE_BYTES + 1))
        with pytest.raises((SessionError, anyio.EndOfStream)):
            await channel.receive()


async def _cut_mid_frame(port: int, cloud: CustodyCloud) -> None:
    channel = await dial(port, new_key_pair(), keys_node_verifier(cloud))
    # Half a frame, then the connection goes away.
    await channel._stream.send(struct.pack(">H", 500) + bytes(100))
    await channel._abort()


async def _tolerating(attack: Coroutine[Any, Any, None]) -> None:
    """Run one attack connection; whatever it sees, the attacker just goes on."""
    with contextlib.suppress(SessionError, anyio.BrokenResourceError, anyio.EndOfStream, OSError):
        await attack


async def test_malformed_frames_leave_the_keys_node_serving(tmp_path: Path) -> None:
    cloud = CustodyCloud(tmp_path)
    tpm, custody = cloud.inference_node("inference-1")
    async with serving_keys_node(cloud) as keys:
        for _ in range(ROUNDS):
            await _tolerating(_garbage_before_handshake(keys.port))
            await _not_an_envelope(keys.port, cloud)
            await _not_a_key_request(keys.port, cloud)
            await _tolerating(_oversized(keys.port, cloud))
            await _tolerating(_cut_mid_frame(keys.port, cloud))
        with anyio.fail_after(10):
            while len(keys.errors) < 5 * ROUNDS:
                await anyio.sleep(0.02)
        # Still serving, for the provider and for a genuine node.
        async with await dial(keys.port, cloud.provider, keys_node_verifier(cloud)) as provider:
            await import_data_key(
                provider,
                cloud.provider,
                MODEL,
                bytes(32),
                key_version=1,
                entropy=RANDOM.token_bytes,
            )
        async with await dial(keys.port, custody.static, keys_node_verifier(cloud)) as channel:
            assert await fetch_data_key(channel, custody, tpm, MODEL) == 1
    checks = {getattr(error, "check", None) for error in keys.errors}
    assert KeyChannelCheck.MALFORMED in checks
    assert KeyChannelCheck.UNEXPECTED in checks
    # The oversized payload is refused by the session before it is reassembled.
    assert SessionCheck.PAYLOAD_SIZE in checks
    assert None not in checks  # every connection ended on a typed error
