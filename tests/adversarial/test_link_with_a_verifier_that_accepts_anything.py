"""Attack: build a node link whose peer check accepts anything.

A node link verifies its peer's attestation with ``verify_attestation``. On
the base code ``TcpNoiseTransport`` took any callable there, so a fail-open
link was one argument away: ``verify_attestation=lambda *a: None`` (or any
stand-in) links up with a node running anything -- another image, another
release -- as long as it holds a configured key. Now the transport takes
only a :class:`PeerAttestationVerifier` (a final class) and refuses anything
else with :class:`TypeError`; and that verifier still refuses a policy that
does not pin the image's platform registers, so the one verifier there is
cannot be configured to admit a foreign image either.
"""

from __future__ import annotations

import hashlib

import pytest
import trio
from _node_attestation import Cloud

from actors.attestation import Evidence, PeerAttestationVerifier
from nodes.random import SystemRandom
from nodes.tcp_transport import TcpNoiseTransport
from protocol.attestation import PcrPolicy, PcrRelease, channel_attestation_nonce
from protocol.measurement import APPLICATION_PCRS, MissingPlatformRegisters

CLOUD = Cloud("adversarial-verifier-accepts-anything")


async def _accept_anything_async(remote_static: bytes, evidence: Evidence, nonce: bytes) -> None:
    """An async verifier that checks nothing."""


class _LooksLikeAVerifier:
    """Duck-typed like a PeerAttestationVerifier, and checks nothing."""

    def __call__(self, remote_static: bytes, evidence: Evidence, nonce: bytes) -> None:
        return None


@pytest.mark.parametrize(
    "stand_in",
    [lambda *args: None, _accept_anything_async, _LooksLikeAVerifier()],
    ids=["lambda", "async-function", "duck-typed"],
)
def test_a_node_link_takes_no_verifier_but_the_real_one(stand_in: object) -> None:
    node = CLOUD.node("a")
    with pytest.raises(TypeError):
        TcpNoiseTransport(
            "a",
            static=node.static,
            random=SystemRandom(),
            peers={},
            attest=node.service.attest,
            verify_attestation=stand_in,  # type: ignore[arg-type]
        )
    # The real one is taken.
    TcpNoiseTransport(
        "a",
        static=node.static,
        random=SystemRandom(),
        peers={},
        attest=node.service.attest,
        verify_attestation=node.verifier,
    )


def test_the_real_verifier_cannot_be_set_to_admit_a_foreign_image() -> None:
    reference = CLOUD.tpm("reference")
    application_only = PcrPolicy(
        releases=(
            PcrRelease.from_mapping(
                "application-only", {i: reference.pcr_read(i) for i in APPLICATION_PCRS}
            ),
        )
    )
    verifier = PeerAttestationVerifier(
        verifier=CLOUD.attestation_verifier, policy=application_only, clock=CLOUD.clock
    )
    foreign = CLOUD.node("foreign")
    foreign.tpm.pcr_extend(4, hashlib.sha384(b"another boot chain").digest())
    nonce = channel_attestation_nonce(bytes(32), attester_is_initiator=True)
    evidence = trio.run(foreign.service.attest, nonce)
    with pytest.raises(MissingPlatformRegisters):
        verifier(foreign.static.public, evidence, nonce)
