"""The attestation exchange after every handshake, re-attestation over an open
channel, and serve_secure's handshake cap (which handshake it evicts).

The attacks on these (an unattested peer, a replayed document, a stale link,
a handshake flood) are in tests/adversarial/; here are the mechanics.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.abc
import pytest
from _node_attestation import Cloud, NodeAttestation, hello, new_key, raw_handshake

from actors.attestation import (
    ChallengeMessage,
    Evidence,
    EvidenceMessage,
    Reattestation,
    ReattestationFailed,
    encode_control,
)
from actors.channel import (
    NOT_ATTESTED,
    ChannelAttestation,
    HandshakeEvicted,
    LocalAttestationFailed,
    SecureChannel,
    _HandshakeSlots,
    _Stage,
    accept_secure,
    connect_secure,
    memory_byte_stream_pair,
)
from nodes.random import SystemRandom
from nodes.tcp import serve_secure
from protocol.attestation import Check, StaleEvidence, unverified_payload
from protocol.framing import PayloadTooLarge, PeerRejected
from protocol.noise import KeyPair
from simulations.nitrotpm import TpmOp

pytestmark = pytest.mark.anyio

RANDOM = SystemRandom()
CLOUD = Cloud("channel-attestation")


def attested(node: NodeAttestation) -> ChannelAttestation:
    return ChannelAttestation(prove=node.service.attest, require=node.verifier)


@asynccontextmanager
async def memory_channels(
    client_static: KeyPair,
    client: ChannelAttestation,
    server: NodeAttestation,
    served: ChannelAttestation,
) -> AsyncIterator[tuple[SecureChannel, SecureChannel]]:
    left, right = memory_byte_stream_pair()
    channels: dict[str, SecureChannel] = {}

    async def accept() -> None:
        channels["server"] = await accept_secure(
            right,
            static=server.static,
            entropy=RANDOM.token_bytes,
            verify_peer=lambda static, payload: None,
            attestation=served,
        )

    async with anyio.create_task_group() as group:
        group.start_soon(accept)
        channels["client"] = await connect_secure(
            left,
            static=client_static,
            entropy=RANDOM.token_bytes,
            verify_peer=lambda static, payload: None,
            attestation=client,
        )
    try:
        yield channels["client"], channels["server"]
    finally:
        await channels["client"].aclose()
        await channels["server"].aclose()


def nonce_of(evidence: Evidence | None) -> object:
    assert evidence is not None
    return unverified_payload(evidence.document)["nonce"]


# -- the exchange ------------------------------------------------------------------------


async def test_both_nodes_prove_themselves_over_the_handshake_hash() -> None:
    a, b = CLOUD.node("a"), CLOUD.node("b")
    nonces = []
    for _ in range(2):
        async with memory_channels(a.static, attested(a), b, attested(b)) as (client, server):
            assert client.peer_evidence is not None and server.peer_evidence is not None
            # Each document carries the nonce of its sender's role in this session.
            assert nonce_of(client.peer_evidence) == client.attestation_nonce(ours=False)
            assert nonce_of(server.peer_evidence) == server.attestation_nonce(ours=False)
            assert client.attestation_nonce(ours=True) == server.attestation_nonce(ours=False)
            assert client.attestation_nonce(ours=True) != client.attestation_nonce(ours=False)
            nonces.append(nonce_of(client.peer_evidence))
            await client.send(b"after the exchange")
            assert await server.receive() == b"after the exchange"
    assert nonces[0] != nonces[1]  # every session has its own


async def test_a_client_proves_nothing_and_verifies_the_node() -> None:
    node = CLOUD.node("node")
    client = ChannelAttestation(prove=NOT_ATTESTED, require=node.verifier)
    served = ChannelAttestation(prove=node.service.attest, require=NOT_ATTESTED)
    async with memory_channels(new_key(), client, node, served) as (client_channel, node_channel):
        assert client_channel.peer_evidence is not None
        assert node_channel.peer_evidence is None
        # Large payloads flow once the exchange's bound on the first payload is lifted.
        await client_channel.send(bytes(1_000_000))
        assert len(await node_channel.receive()) == 1_000_000


async def test_a_document_over_another_nonce_is_refused() -> None:
    node, server = CLOUD.node("node"), CLOUD.node("server")

    async def wrong_nonce(nonce: bytes) -> Evidence:
        return await node.service.attest(bytes(32))

    client = ChannelAttestation(prove=wrong_nonce, require=NOT_ATTESTED)
    with pytest.raises(ExceptionGroup) as group:
        async with memory_channels(node.static, client, server, attested(server)):
            pass
    (refused,) = [e for e in group.value.exceptions if isinstance(e, PeerRejected)]
    assert isinstance(refused.__cause__, StaleEvidence)
    assert refused.__cause__.check is Check.NONCE


async def test_an_async_verifier_is_awaited_and_its_refusal_chained() -> None:
    node, server = CLOUD.node("node"), CLOUD.node("server")
    calls: list[bytes] = []

    class Refused(Exception):
        pass

    async def verify(remote_static: bytes, evidence: Evidence, nonce: bytes) -> None:
        await anyio.sleep(0)
        calls.append(nonce)
        raise Refused

    served = ChannelAttestation(prove=server.service.attest, require=verify)
    with pytest.raises(ExceptionGroup) as group:
        async with memory_channels(node.static, attested(node), server, served):
            pass
    (refused,) = [e for e in group.value.exceptions if isinstance(e, PeerRejected)]
    assert isinstance(refused.__cause__, Refused)
    assert len(calls) == 1 and len(calls[0]) == 32


async def test_this_side_failing_to_attest_is_a_typed_error() -> None:
    node, server = CLOUD.node("node"), CLOUD.node("server")
    node.tpm.inject_failure(TpmOp.ATTEST)
    with pytest.raises(ExceptionGroup) as group:
        async with memory_channels(node.static, attested(node), server, attested(server)):
            pass
    (failed,) = [e for e in group.value.exceptions if isinstance(e, LocalAttestationFailed)]
    assert failed.check == "attestation.unavailable"  # the client's own TPM failed


async def test_the_first_payload_is_held_to_the_size_of_a_document() -> None:
    server = CLOUD.node("server")
    left, right = memory_byte_stream_pair()
    errors: list[Exception] = []

    async def accept() -> None:
        try:
            await accept_secure(
                right,
                static=server.static,
                entropy=RANDOM.token_bytes,
                verify_peer=lambda static, payload: None,
                attestation=attested(server),
            )
        except Exception as error:
            errors.append(error)

    async with anyio.create_task_group() as group:
        group.start_soon(accept)
        session = await raw_handshake(left, new_key(), hello("x"))
        await left.send(session.send(bytes(100_000)))
    assert len(errors) == 1 and isinstance(errors[0], PayloadTooLarge)


def test_what_each_side_proves_is_always_stated() -> None:
    node = CLOUD.node("node")
    for prove, require in ((None, node.verifier), (node.service.attest, None), (b"", b"")):
        with pytest.raises(TypeError):
            ChannelAttestation(prove=prove, require=require)  # type: ignore[arg-type]
    with pytest.raises(ValueError):  # a channel with no attested end
        ChannelAttestation(prove=NOT_ATTESTED, require=NOT_ATTESTED)


# -- re-attestation ----------------------------------------------------------------------


def reattestation(channel: SecureChannel, node: NodeAttestation, **timing: float) -> Reattestation:
    async def send(message: bytes) -> None:
        await channel.send(message)

    return Reattestation(
        channel,
        prove=node.service.attest,
        verify=node.verifier,
        send=send,
        clock=CLOUD.clock,
        random=RANDOM,
        interval_s=timing.get("interval_s", 0.05),
        timeout_s=timing.get("timeout_s", 1.0),
        min_answer_interval_s=timing.get("min_answer_interval_s", 0.0),
    )


async def pump(channel: SecureChannel, re: Reattestation) -> None:
    async for payload in channel:
        re.control_received(payload)


async def test_both_sides_reattest_each_other_in_rounds() -> None:
    a, b = CLOUD.node("a"), CLOUD.node("b")
    async with memory_channels(a.static, attested(a), b, attested(b)) as (left, right):
        ra, rb = reattestation(left, a), reattestation(right, b)
        with anyio.move_on_after(0.6):
            async with anyio.create_task_group() as group:
                for channel, re in ((left, ra), (right, rb)):
                    group.start_soon(pump, channel, re)
                    group.start_soon(re.run)
        assert ra.verified_rounds >= 3 and rb.verified_rounds >= 3
        assert ra.answered >= 3 and rb.answered >= 3


@pytest.mark.parametrize(
    ("message", "check"),
    [
        (encode_control(EvidenceMessage(None, b"")), "evidence.unsolicited"),
        (b"\x94\x01garbage", "control.decode"),
    ],
)
async def test_control_messages_out_of_turn_break_the_exchange(message: bytes, check: str) -> None:
    class Channel:
        handshake_hash = bytes(32)
        remote_static = bytes(32)
        is_initiator = True

    node = CLOUD.node("a")

    async def send(message: bytes) -> None:
        raise AssertionError("nothing is sent")

    re = Reattestation(
        Channel(),
        prove=node.service.attest,
        verify=node.verifier,
        send=send,
        clock=CLOUD.clock,
        random=RANDOM,
    )
    with pytest.raises(ReattestationFailed) as failed:
        re.control_received(message)
    assert failed.value.check == check
    challenge = encode_control(ChallengeMessage(bytes(32)))
    re.control_received(challenge)
    with pytest.raises(ReattestationFailed) as overlap:
        re.control_received(challenge)  # a second one before the first was answered
    assert overlap.value.check == "challenge.overlap"


async def test_an_answer_for_another_challenge_is_refused() -> None:
    a, b = CLOUD.node("a"), CLOUD.node("b")
    async with memory_channels(a.static, attested(a), b, attested(b)) as (left, right):
        ra = reattestation(left, a, interval_s=0.01)

        async def answer_with_a_stale_document() -> None:
            async for payload in right:
                assert isinstance(payload, bytes)
                stale = await b.service.attest(right.attestation_nonce(ours=True))
                await right.send(encode_control(EvidenceMessage.of(stale)))

        failures: list[ReattestationFailed] = []
        async with anyio.create_task_group() as group:
            group.start_soon(pump, left, ra)
            group.start_soon(answer_with_a_stale_document)
            try:
                await ra.run()
            except ReattestationFailed as failed:
                failures.append(failed)
            group.cancel_scope.cancel()
        (failed,) = failures
        assert failed.check == "reattest.rejected"
        assert failed.attestation_check == Check.NONCE.value


# -- the handshake cap -------------------------------------------------------------------


async def test_at_the_cap_the_oldest_handshake_is_evicted() -> None:
    server = CLOUD.node("server")
    errors: list[Exception] = []

    async def echo(channel: SecureChannel) -> None:
        async for payload in channel:
            await channel.send(payload)

    async with anyio.create_task_group() as group:
        port = await group.start(
            functools.partial(
                serve_secure,
                "127.0.0.1",
                0,
                echo,
                static=server.static,
                entropy=RANDOM.token_bytes,
                verify_peer=lambda static, payload: None,
                attestation=ChannelAttestation(prove=server.service.attest, require=NOT_ATTESTED),
                handshake_timeout=30.0,
                max_concurrent_handshakes=2,
                on_error=errors.append,
            )
        )
        stalled: list[anyio.abc.SocketStream] = []
        for _ in range(3):
            stalled.append(await anyio.connect_tcp("127.0.0.1", port))
            await anyio.sleep(0.1)  # admitted in this order
        with anyio.fail_after(5):
            with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                await stalled[0].receive()
        with anyio.move_on_after(0.2) as still_open:
            await stalled[1].receive()
        assert still_open.cancelled_caught
        assert [type(e) for e in errors] == [HandshakeEvicted]
        for stream in stalled:
            await stream.aclose()
        group.cancel_scope.cancel()


async def test_the_cap_evicts_the_least_advanced_handshake_and_never_a_nodes() -> None:
    slots = _HandshakeSlots(3)
    with contextlib.ExitStack() as held:
        (silent, _), (customer, advance_customer), (node, advance_node) = (
            held.enter_context(slots.admit()) for _ in range(3)
        )
        advance_customer(_Stage.CUSTOMER_SPOKE)
        advance_node(_Stage.NODE)
        # A newcomer evicts the connection that never finished its Noise
        # handshake, although it is not the oldest...
        newcomer, advance_newcomer = held.enter_context(slots.admit())
        assert silent.cancel_called and not customer.cancel_called
        advance_newcomer(_Stage.CUSTOMER)
        # ...then the customer that has not spoken, before the one that has...
        second, advance_second = held.enter_context(slots.admit())
        assert newcomer.cancel_called and not customer.cancel_called
        # ...and among equals the oldest.
        advance_second(_Stage.CUSTOMER_SPOKE)
        held.enter_context(slots.admit())
        assert customer.cancel_called and not second.cancel_called
        assert not node.cancel_called
    # ...and a configured node's handshake is never cut: at a cap full of
    # them, the newcomer is refused instead.
    slots = _HandshakeSlots(1)
    with slots.admit() as (node, advance_node):
        advance_node(_Stage.NODE)
        with slots.admit() as (refused, _):
            assert refused.cancel_called and not node.cancel_called
        assert len(slots) == 1
    assert len(slots) == 0
