"""TPM 2.0 quotes (swtpm) on node links and on the client path.

A quote carries no wall-clock time, so a verifier that bounds a document's
age refuses it, as key release and node links did while freshness rested on a
timestamp. Bound to the handshake hash instead, a quote is as fresh as a
NitroTPM document: here an swtpm-backed node links up with a node on a
simulated NitroTPM, passes re-attestation rounds, is cut off when its quoted
PCRs change, and a client verifies it before sending anything.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import pytest
import trio
from _node_attestation import Cloud, LogCapture, RecordingEvents, new_key
from _swtpm import Swtpm, require_swtpm

from actors.attestation import AttestationService, Evidence, PeerAttestationVerifier
from actors.channel import NOT_ATTESTED, ChannelAttestation, SecureChannel, connect_secure
from actors.key_custody import NodeKeyCustody
from actors.lowlevel import Backoff
from nodes.random import SystemRandom
from nodes.tcp import serve_secure
from nodes.tcp_transport import PeerAddress, TcpNoiseTransport
from protocol.attestation import (
    AttestationVerifier,
    Check,
    DocumentKind,
    Expectations,
    NitroAuthenticator,
    PcrPolicy,
    PcrRelease,
    StaleEvidence,
    TrustAnchor,
    noise_key_binding,
)
from protocol.attestation import tpm2_quote as quote

if TYPE_CHECKING:
    from nodes.tpm import TpmDeviceBackend

os.environ.setdefault("TSS2_LOG", "all+NONE")
pytestmark = pytest.mark.anyio

RANDOM = SystemRandom()
CLOUD = Cloud("tpm-quote-link")
FAST = Backoff(initial=0.02, factor=2.0, maximum=0.1, jitter=0.5)
QUOTED_PCR = 16  # any quoted register: the policy pins all of them


@pytest.fixture(scope="module")
def swtpm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swtpm]:
    require_swtpm()
    instance = Swtpm(Path(tmp_path_factory.mktemp("swtpm-link")))
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture
def tpm(swtpm: Swtpm) -> Iterator[TpmDeviceBackend]:
    from nodes.tpm import TpmDeviceBackend

    backend = TpmDeviceBackend(swtpm.tcti)
    if backend.pcr_read(0) == bytes(48):
        # A booted machine's firmware has measured itself into PCR0.
        backend.pcr_extend(0, hashlib.sha384(b"firmware").digest())
    yield backend
    backend.close()


class QuoteNode:
    """A node whose TPM is the swtpm, attesting with quotes."""

    def __init__(self, tpm: TpmDeviceBackend) -> None:
        self.custody = NodeKeyCustody(random=RANDOM)
        self.service = AttestationService(
            tpm=tpm,
            custody=self.custody,
            kind=DocumentKind.TPM2_QUOTE,
            clock=CLOUD.clock,
            run_blocking=trio.to_thread.run_sync,
        )


class ClusterTrust:
    """Admits the simulated Nitro nodes' state and the swtpm's current state."""

    def __init__(self, tpm: TpmDeviceBackend) -> None:
        trust = quote.QuoteTrust.from_ak_public_keys([tpm.attestation_key_public()])
        self.verifier = AttestationVerifier(
            [
                NitroAuthenticator(TrustAnchor.from_der(CLOUD.pki.root_der)),
                quote.Tpm2QuoteAuthenticator(trust),
            ]
        )
        swtpm_state = PcrRelease.from_mapping("swtpm", tpm.pcr_read_many(range(24)))
        self.policy = PcrPolicy(releases=(*CLOUD.policy.releases, swtpm_state))
        self.peers = PeerAttestationVerifier(
            verifier=self.verifier, policy=self.policy, clock=CLOUD.clock
        )


async def test_a_quote_bound_to_the_handshake_passes_where_a_timestamp_check_refuses_it(
    tpm: TpmDeviceBackend,
) -> None:
    node = QuoteNode(tpm)
    trust = ClusterTrust(tpm)

    async def served(channel: SecureChannel) -> None:
        await channel.send(await channel.receive())

    seen: list[Evidence] = []
    async with trio.open_nursery() as nursery:
        port: int = await nursery.start(
            functools.partial(
                serve_secure,
                "127.0.0.1",
                0,
                served,
                static=node.custody.static,
                entropy=RANDOM.token_bytes,
                verify_peer=lambda static, payload: None,
                attestation=ChannelAttestation(prove=node.service.attest, require=NOT_ATTESTED),
            )
        )
        stream = await anyio.connect_tcp("127.0.0.1", port)
        channel = await connect_secure(
            stream,
            static=new_key(),
            entropy=RANDOM.token_bytes,
            verify_peer=lambda static, payload: None,
            attestation=ChannelAttestation(prove=NOT_ATTESTED, require=trust.peers),
        )
        async with channel:
            evidence = channel.peer_evidence
            assert evidence is not None and evidence.kind is DocumentKind.TPM2_QUOTE
            await channel.send(b"prompt")
            assert await channel.receive() == b"prompt"
            seen.append(evidence)
        nursery.cancel_scope.cancel()

    # The same quote under freshness-by-timestamp (the old client's check):
    (evidence,) = seen
    with pytest.raises(StaleEvidence) as stale:
        trust.verifier.verify(
            evidence.document,
            kind=DocumentKind.TPM2_QUOTE,
            expectations=Expectations(
                pcr_policy=trust.policy,
                max_age_ms=5 * 60 * 1000,
                expected_public_key=noise_key_binding(node.custody.static_public),
            ),
            now_ms=CLOUD.clock.wall_ms(),
        )
    assert stale.value.check is Check.FRESHNESS


async def test_a_quote_attested_node_links_reattests_and_is_cut_off_when_its_pcrs_change(
    tpm: TpmDeviceBackend,
) -> None:
    logs = LogCapture()
    quoting = QuoteNode(tpm)
    nitro = CLOUD.node("nitro")
    trust = ClusterTrust(tpm)

    def transport(name: str, static: object, attest: object) -> TcpNoiseTransport:
        return TcpNoiseTransport(
            name,
            static=static,  # type: ignore[arg-type]
            random=RANDOM,
            peers={},
            attest=attest,  # type: ignore[arg-type]
            verify_attestation=trust.peers,
            backoff=FAST,
            reattest_interval=0.3,
            reattest_timeout=2.0,
            min_answer_interval=0.0,
        )

    tq = transport("q", quoting.custody.static, quoting.service.attest)
    tn = transport("n", nitro.static, nitro.service.attest)
    events = RecordingEvents()
    tn.bind(events)
    tq.bind(RecordingEvents())
    async with trio.open_nursery() as nursery:
        port_q: int = await nursery.start(tq.run)
        port_n: int = await nursery.start(tn.run)
        tq.add_peer("n", PeerAddress("127.0.0.1", port_n, nitro.static.public))
        tn.add_peer("q", PeerAddress("127.0.0.1", port_q, quoting.custody.static_public))
        assert tn.send("q", b"\x94")
        with trio.fail_after(10):
            while events.count("up", "q") == 0:
                await trio.sleep(0.01)
        before = quoting.service.attestations
        await trio.sleep(1.5)
        assert events.count("down", "q") == 0
        assert quoting.service.attestations >= before + 2  # quotes answered challenges

        tpm.pcr_extend(QUOTED_PCR, hashlib.sha384(b"other code").digest())
        with trio.fail_after(10):
            while events.count("down", "q") == 0:
                await trio.sleep(0.01)
        failures = logs.events("node_link_reattestation_failed")
        assert (failures[0]["peer"], failures[0]["reason"]) == ("q", "pcr_policy")
        nursery.cancel_scope.cancel()
