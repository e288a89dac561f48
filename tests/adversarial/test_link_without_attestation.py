"""Attack: open a node link without attestation.

On the base code ``TcpNoiseTransport`` defaulted to ``attestation=b""`` and
``verify_attestation=None`` and then skipped the check: a node built with the
defaults linked up with any peer holding a configured key, whatever that peer
ran. Now a transport cannot be built without this node's attestation source
and a verifier for its peers, and a peer that completes the handshake with a
configured key but proves nothing (no evidence, an empty one, or bytes that
are no document) is refused before the link comes up: no ``peer_up``, no
frame delivered.
"""

from __future__ import annotations

import contextlib

import anyio
import pytest
import trio
from _node_attestation import Cloud, LogCapture, RecordingEvents, hello, new_key, raw_handshake

from actors.attestation import Evidence, EvidenceMessage, encode_control
from actors.channel import NOT_ATTESTED, ChannelAttestation
from nodes.random import SystemRandom
from nodes.tcp_transport import PeerAddress, TcpNoiseTransport
from protocol.attestation import DocumentKind
from protocol.messages import Envelope, Ping, encode_envelope

pytestmark = pytest.mark.anyio

CLOUD = Cloud("adversarial-link-without-attestation")


def test_a_transport_cannot_be_built_without_attestation() -> None:
    node = CLOUD.node("a")
    required = {"attest": node.service.attest, "verify_attestation": node.verifier}
    for left_out in ({}, {"attest": node.service.attest}, {"verify_attestation": node.verifier}):
        with pytest.raises(TypeError):
            TcpNoiseTransport("a", static=node.static, random=SystemRandom(), peers={}, **left_out)  # type: ignore[call-arg]
    for name in required:
        with pytest.raises(TypeError):
            TcpNoiseTransport(
                "a",
                static=node.static,
                random=SystemRandom(),
                peers={},
                **{**required, name: None},  # type: ignore[arg-type]
            )
    # A channel states what each side proves: leaving it out is no option either.
    with pytest.raises(TypeError):
        ChannelAttestation(prove=None, require=node.verifier)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ChannelAttestation(prove=NOT_ATTESTED, require=NOT_ATTESTED)


async def _victim(nursery: trio.Nursery) -> tuple[TcpNoiseTransport, RecordingEvents, int]:
    """Node "a", attested, which admits node "b" holding ``B_KEY``."""
    node = CLOUD.node("a")
    transport = TcpNoiseTransport(
        "a",
        static=node.static,
        random=SystemRandom(),
        # b's address is a closed port: a's own dials fail, only inbound
        # connections (the attacker's) can bring the link up.
        peers={"b": PeerAddress("127.0.0.1", 1, B_KEY.public)},
        attest=node.service.attest,
        verify_attestation=node.verifier,
    )
    events = RecordingEvents()
    transport.bind(events)
    port: int = await nursery.start(transport.run)
    return transport, events, port


B_KEY = new_key()  # the attacker holds node b's configured key; b runs unattested code


async def _attack_with(evidence: Evidence | None, port: int) -> None:
    """Handshake as b, send ``evidence`` (or an empty evidence message), then a frame."""
    stream = await anyio.connect_tcp("127.0.0.1", port)
    session = await raw_handshake(stream, B_KEY, hello("b"))
    await stream.send(session.send(encode_control(EvidenceMessage.of(evidence))))
    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
        await stream.send(session.send(b"\x00" + encode_envelope(Envelope.wrap(Ping(1)))))


@pytest.mark.parametrize(
    ("evidence", "check"),
    [
        (None, "attestation.missing"),
        (Evidence(DocumentKind.NITRO, b"no document at all"), "attestation.refused"),
        (Evidence(DocumentKind.TPM2_QUOTE, b"\xa0"), "attestation.refused"),
    ],
    ids=["empty-evidence", "garbage-nitro", "garbage-quote"],
)
async def test_a_peer_that_proves_nothing_is_refused(evidence: Evidence | None, check: str) -> None:
    logs = LogCapture()
    async with trio.open_nursery() as nursery:
        _, events, port = await _victim(nursery)
        with trio.fail_after(10):
            await _attack_with(evidence, port)
            while check not in logs.checks("secure_channel.connection_failed"):
                await trio.sleep(0.01)
        assert events.count("up", "b") == 0
        assert events.frames == []
        nursery.cancel_scope.cancel()


async def test_a_peer_that_sends_data_instead_of_evidence_is_refused() -> None:
    """The old protocol: handshake, then straight to frames."""
    logs = LogCapture()
    async with trio.open_nursery() as nursery:
        _, events, port = await _victim(nursery)
        with trio.fail_after(10):
            stream = await anyio.connect_tcp("127.0.0.1", port)
            session = await raw_handshake(stream, B_KEY, hello("b"))
            await stream.send(session.send(encode_envelope(Envelope.wrap(Ping(1)))))
            while "attestation.malformed" not in logs.checks("secure_channel.connection_failed"):
                await trio.sleep(0.01)
        assert events.count("up", "b") == 0
        assert events.frames == []
        nursery.cancel_scope.cancel()
