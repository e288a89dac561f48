"""Attack: keep a node's TPM busy with anonymous clients until its own links lapse.

Anyone may open a channel to a node that serves customers. On the base code
the node proved itself right after the Noise handshake, before the client
had said anything: every anonymous handshake cost a TPM command (100-350 ms
on real hardware, one at a time), and nothing bounded how many queued. An
attacker completing handshakes in a loop kept the TPM's queue long; the
node's answers to its node links' re-attestation challenges waited behind
that queue past their deadline, and honest links were cut.

Now, on a channel whose peer proves nothing, the node proves only after the
peer's evidence message arrived (a silent connection costs no TPM command),
and client-channel proofs take ``AttestationService.attest_client_channel``:
one at a time by default, and none starts while a node link or
re-attestation answer is waiting, so those are never queued behind a flood.
"""

from __future__ import annotations

import functools

import anyio
import anyio.abc
import pytest
import trio
from _node_attestation import (
    Cloud,
    LogCapture,
    NodeAttestation,
    RecordingEvents,
    new_key,
    raw_handshake,
)

from actors.attestation import Attest, EvidenceMessage, encode_control
from actors.channel import NOT_ATTESTED, ChannelAttestation, SecureChannel
from actors.lowlevel import Backoff
from nodes.random import SystemRandom
from nodes.tcp import serve_secure
from nodes.tcp_transport import PeerAddress, TcpNoiseTransport

pytestmark = pytest.mark.anyio

RANDOM = SystemRandom()
CLOUD = Cloud("adversarial-tpm-busy")
#: Modelled TPM: each attestation takes this long, one at a time.
TPM_LATENCY_S = 0.05
#: Anonymous clients at once, each always waiting for a proof.
FLOOD = 16
FLOOD_S = 3.0
INTERVAL = 0.3
#: Less than FLOOD * TPM_LATENCY_S: an answer queued behind the flood lapses.
TIMEOUT = 0.6


async def echo(channel: SecureChannel) -> None:
    async for payload in channel:
        await channel.send(payload)


def _customers_server(node: NodeAttestation, prove: Attest) -> functools.partial[object]:
    """A node serving customers, as the demo's inference node does."""
    return functools.partial(
        serve_secure,
        "127.0.0.1",
        0,
        echo,
        static=node.static,
        entropy=RANDOM.token_bytes,
        verify_peer=lambda static, payload: None,
        attestation=ChannelAttestation(prove=prove, require=NOT_ATTESTED),
    )


async def test_a_silent_client_costs_no_tpm_command() -> None:
    node = CLOUD.node("server")
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(_customers_server(node, node.service.attest))
            silent = []
            for _ in range(20):
                stream = await anyio.connect_tcp("127.0.0.1", port)
                await raw_handshake(stream, new_key(), b"")  # and then nothing
                silent.append(stream)
            await trio.sleep(0.3)
            assert node.service.attestations == 0, "the node attested to clients who never spoke"
            # A client that speaks gets its proof.
            stream = await anyio.connect_tcp("127.0.0.1", port)
            session = await raw_handshake(stream, new_key(), b"")
            await stream.send(session.send(encode_control(EvidenceMessage.of(None))))
            await stream.receive()
            assert node.service.attestations == 1
            for each in (*silent, stream):
                await each.aclose()
            nursery.cancel_scope.cancel()


async def anonymous_client(port: int, until: float) -> None:
    """Handshake, the empty evidence a customer sends, wait for the proof,
    hang up; again, until ``until``."""
    while trio.current_time() < until:
        with trio.move_on_after(2.0):
            stream = await anyio.connect_tcp("127.0.0.1", port)
            try:
                session = await raw_handshake(stream, new_key(), b"")
                await stream.send(session.send(encode_control(EvidenceMessage.of(None))))
                await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass
            finally:
                await stream.aclose()


async def test_a_flood_of_anonymous_clients_does_not_make_a_node_link_lapse() -> None:
    logs = LogCapture()
    q = CLOUD.node("q", tpm_latency_s=TPM_LATENCY_S)  # serves customers and links to n
    n = CLOUD.node("n")

    def transport(name: str, node: NodeAttestation) -> TcpNoiseTransport:
        return TcpNoiseTransport(
            name,
            static=node.static,
            random=RANDOM,
            peers={},
            attest=node.service.attest,
            verify_attestation=node.verifier,
            backoff=Backoff(initial=0.05, factor=2.0, maximum=0.2, jitter=0.5),
            reattest_interval=INTERVAL,
            reattest_timeout=TIMEOUT,
            min_answer_interval=0.0,
        )

    tq, tn = transport("q", q), transport("n", n)
    n_events = RecordingEvents()
    tn.bind(n_events)
    tq.bind(RecordingEvents())
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            port_q: int = await nursery.start(tq.run)
            port_n: int = await nursery.start(tn.run)
            tq.add_peer("n", PeerAddress("127.0.0.1", port_n, n.static.public))
            tn.add_peer("q", PeerAddress("127.0.0.1", port_q, q.static.public))
            assert tn.send("q", b"hello")
            with trio.fail_after(5):
                while n_events.count("up", "q") == 0:
                    await trio.sleep(0.01)
            # q's customers' server, on its client-channel path.
            customers = await nursery.start(_customers_server(q, q.service.attest_client_channel))
            before = q.service.attestations
            async with trio.open_nursery() as attackers:
                until = trio.current_time() + FLOOD_S
                for _ in range(FLOOD):
                    attackers.start_soon(anonymous_client, customers, until)
            proofs = q.service.attestations - before
            events = list(n_events.events)
            nursery.cancel_scope.cancel()
    # The flood kept q's TPM busy the whole time...
    assert proofs >= 0.6 * FLOOD_S / TPM_LATENCY_S
    # ...and q's link to n stayed up, every re-attestation answered in time.
    assert logs.events("node_link_reattestation_failed") == []
    assert events == [("up", "q")]
