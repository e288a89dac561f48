"""Attack: replay an attestation document captured from an earlier session.

The operator holds node b's Noise static key (dumped from b's memory after it
took b over, say) and documents b produced earlier, while b still ran the
released code. b's TPM now shows other PCRs, so b cannot produce a passing
document any more. The operator dials node a as b and presents a captured
document. On the base code every handshake carried the same boot-time
document, bound only to b's key and fresh by timestamp, so the replay was
accepted for the whole freshness window (and forever by a verifier without a
maximum age). Now a document must carry the nonce derived from *this*
handshake's hash, so each captured document is refused by its nonce: the one b
made for an earlier session, and b's timestamp-only cached document.
"""

from __future__ import annotations

import contextlib
import hashlib

import anyio
import pytest
import trio
from _node_attestation import Cloud, LogCapture, NodeAttestation, RecordingEvents, hello

from actors.attestation import Evidence
from actors.channel import (
    NOT_ATTESTED,
    ChannelAttestation,
    accept_secure,
    connect_secure,
    memory_byte_stream_pair,
)
from nodes.random import SystemRandom
from nodes.tcp_transport import PeerAddress, TcpNoiseTransport
from protocol.attestation import Check, Expectations, StaleEvidence, noise_key_binding
from protocol.framing import PeerRejected
from protocol.measurement import APPLICATION_PCRS

pytestmark = pytest.mark.anyio

RANDOM = SystemRandom()
FIVE_MINUTES_MS = 5 * 60 * 1000


def _attested(node: NodeAttestation) -> ChannelAttestation:
    return ChannelAttestation(prove=node.service.attest, require=node.verifier)


def _replaying(captured: Evidence, victim: NodeAttestation) -> ChannelAttestation:
    async def replay(nonce: bytes) -> Evidence:
        return captured

    return ChannelAttestation(prove=replay, require=victim.verifier)


async def _captured_documents(a: NodeAttestation, b: NodeAttestation) -> list[Evidence]:
    """What the operator collected while b was honest: the document b sent on
    a genuine earlier link to a, and b's cached timestamp-only document."""
    left, right = memory_byte_stream_pair()
    seen: dict[str, Evidence | None] = {}

    async def a_accepts() -> None:
        channel = await accept_secure(
            right,
            static=a.static,
            entropy=RANDOM.token_bytes,
            verify_peer=lambda static, payload: None,
            attestation=_attested(a),
        )
        seen["from b"] = channel.peer_evidence
        await channel.aclose()

    async with anyio.create_task_group() as group:
        group.start_soon(a_accepts)
        channel = await connect_secure(
            left,
            static=b.static,
            entropy=RANDOM.token_bytes,
            verify_peer=lambda static, payload: None,
            attestation=_attested(b),
        )
        await channel.aclose()
    earlier = seen["from b"]
    assert earlier is not None
    return [earlier, await b.service.refresh()]


async def _setup() -> tuple[NodeAttestation, NodeAttestation, list[Evidence]]:
    cloud = Cloud("adversarial-replay")
    a, b = cloud.node("a"), cloud.node("b")
    captured = await _captured_documents(a, b)
    # Each captured document is genuine, bound to b's key and young: exactly
    # what freshness-by-timestamp accepted.
    for evidence in captured:
        cloud.attestation_verifier.verify(
            evidence.document,
            kind=evidence.kind,
            expectations=Expectations(
                pcr_policy=cloud.policy,
                max_age_ms=FIVE_MINUTES_MS,
                expected_public_key=noise_key_binding(b.static.public),
            ),
            now_ms=cloud.clock.wall_ms(),
        )
    # b is taken over: its PCRs no longer pass, so it cannot attest afresh.
    b.tpm.pcr_extend(APPLICATION_PCRS[0], hashlib.sha384(b"other code").digest())
    return a, b, captured


@pytest.mark.parametrize("which", [0, 1], ids=["earlier-session", "cached-timestamp-only"])
async def test_a_replayed_document_is_refused_by_its_nonce(which: int) -> None:
    a, b, captured = await _setup()
    left, right = memory_byte_stream_pair()
    refusals: list[BaseException] = []

    async def a_accepts() -> None:
        try:
            await accept_secure(
                right,
                static=a.static,
                entropy=RANDOM.token_bytes,
                verify_peer=lambda static, payload: None,
                attestation=_attested(a),
            )
        except PeerRejected as refused:
            refusals.append(refused)

    with trio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(a_accepts)
            # The attacker's side ends with an error too, once a closes.
            with contextlib.suppress(Exception):
                await connect_secure(
                    left,
                    static=b.static,  # the stolen key: the handshake itself succeeds
                    entropy=RANDOM.token_bytes,
                    verify_peer=lambda static, payload: None,
                    attestation=_replaying(captured[which], a),
                )
    (refused,) = refusals
    assert refused.check == "attestation.refused"
    cause = refused.__cause__
    assert isinstance(cause, StaleEvidence)
    assert cause.check is Check.NONCE


async def test_a_replayed_document_does_not_bring_a_node_link_up() -> None:
    a, b, captured = await _setup()
    logs = LogCapture()
    events = RecordingEvents()
    transport = TcpNoiseTransport(
        "a",
        static=a.static,
        random=RANDOM,
        peers={"b": PeerAddress("127.0.0.1", 1, b.static.public)},
        attest=a.service.attest,
        verify_attestation=a.verifier,
    )
    transport.bind(events)
    async with trio.open_nursery() as nursery:
        port: int = await nursery.start(transport.run)
        with trio.fail_after(10):
            for evidence in captured:
                stream = await anyio.connect_tcp("127.0.0.1", port)
                with contextlib.suppress(Exception):
                    await connect_secure(
                        stream,
                        static=b.static,
                        entropy=RANDOM.token_bytes,
                        verify_peer=lambda static, payload: None,
                        attestation=ChannelAttestation(
                            prove=_replaying(evidence, a).prove, require=NOT_ATTESTED
                        ),
                        handshake_payload=hello("b"),
                    )
            while len(logs.checks("secure_channel.connection_failed")) < len(captured):
                await trio.sleep(0.01)
        assert logs.checks("secure_channel.connection_failed") == ["attestation.refused"] * 2
        assert events.count("up", "b") == 0
        nursery.cancel_scope.cancel()
