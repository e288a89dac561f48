"""What an attacker on the network runs against a node link: the real Noise XX
handshake with a key it holds, then whatever it chooses to send."""

from __future__ import annotations

import io
import json
import secrets

import anyio
import anyio.abc

from actors._remote.messages import NodeHello
from actors.channel import NODE_LINK_PROLOGUE
from actors.log import configure_logging
from protocol.framing import NEED_DATA, PeerIdentity, SecureSession, SessionState
from protocol.messages import REGISTRY, Envelope
from protocol.noise import HandshakeState, KeyPair, NoiseProtocol

PROTOCOL = NoiseProtocol.from_name("Noise_XX_25519_ChaChaPoly_BLAKE2s")


def hello(node: str) -> bytes:
    return REGISTRY.encode(Envelope.wrap(NodeHello(node)))


async def raw_handshake(
    stream: anyio.abc.ByteStream, static: KeyPair, claimed_node: str
) -> SecureSession:
    """Complete the initiator's handshake as ``claimed_node`` and stop: no
    attestation exchange, the session is the attacker's to use."""
    handshake = HandshakeState(
        PROTOCOL,
        initiator=True,
        prologue=NODE_LINK_PROLOGUE,
        static=static,
        entropy=secrets.token_bytes,
    )
    session = SecureSession(handshake, handshake_payload=hello(claimed_node))
    while session.state is not SessionState.OPEN:
        if session.state is SessionState.HANDSHAKE_WRITE:
            await stream.send(session.write_handshake())
            continue
        event = session.next_event()
        if event is NEED_DATA:
            session.receive_data(await stream.receive())
        elif isinstance(event, PeerIdentity):
            session.accept_peer()
    return session


class LogCapture:
    """The JSON log lines of this process, parsed (logging is reconfigured)."""

    def __init__(self) -> None:
        self._stream = io.StringIO()
        configure_logging(self._stream, level="debug")

    def events(self, name: str) -> list[dict[str, object]]:
        records = [json.loads(line) for line in self._stream.getvalue().splitlines()]
        return [record for record in records if record.get("event") == name]

    def checks(self, name: str) -> list[object]:
        return [record.get("check") for record in self.events(name)]
