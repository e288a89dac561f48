"""Attested nodes for link and channel tests: one simulated cloud, its TPMs and policy.

A :class:`Cloud` is a simulated Nitro PKI, the verifier pinned to its root,
and the PCR policy an honest node satisfies: every register of a TPM that
booted and measured nothing else (so any later extend leaves the policy).
:meth:`Cloud.node` gives one node's attestation service (on a fresh
SimulatedNitroTPM of that cloud) and its verifier of peers.
"""

from __future__ import annotations

from dataclasses import dataclass

import trio

from actors.attestation import AttestationService, PeerAttestationVerifier
from actors.key_custody import NodeKeyCustody
from actors.seams.clock import Clock, TrioClock
from actors.seams.random import SystemRandom
from protocol.attestation import (
    AttestationVerifier,
    DocumentKind,
    NitroAuthenticator,
    PcrPolicy,
    PcrRelease,
    TrustAnchor,
)
from protocol.noise import KeyPair, NoiseProtocol
from simulations.nitrotpm import PCR_COUNT, SimulatedNitroPKI, SimulatedNitroTPM

DH = NoiseProtocol.from_name("Noise_XX_25519_ChaChaPoly_BLAKE2s").dh


def new_key() -> KeyPair:
    return KeyPair.generate(DH, SystemRandom().token_bytes)


@dataclass
class NodeAttestation:
    """What one node needs for its links: its TPM, key custody, service, verifier."""

    tpm: SimulatedNitroTPM
    custody: NodeKeyCustody
    service: AttestationService
    verifier: PeerAttestationVerifier

    @property
    def static(self) -> KeyPair:
        return self.custody.static


class Cloud:
    def __init__(self, seed: str = "link-tests", *, clock: Clock | None = None) -> None:
        self.clock = clock if clock is not None else TrioClock()
        self.pki = SimulatedNitroPKI(seed)
        self.attestation_verifier = AttestationVerifier(
            [NitroAuthenticator(TrustAnchor.from_der(self.pki.root_der))]
        )
        reference = self.tpm("reference")
        self.policy = PcrPolicy(
            releases=(
                PcrRelease.from_mapping(
                    "honest", {index: reference.pcr_read(index) for index in range(PCR_COUNT)}
                ),
            )
        )
        self._count = 0

    def tpm(self, name: str) -> SimulatedNitroTPM:
        return SimulatedNitroTPM(seed=f"tpm/{name}", pki=self.pki, clock=self.clock)

    def peer_verifier(self) -> PeerAttestationVerifier:
        return PeerAttestationVerifier(
            verifier=self.attestation_verifier, policy=self.policy, clock=self.clock
        )

    def node(self, name: str, key: KeyPair | None = None) -> NodeAttestation:
        self._count += 1
        tpm = self.tpm(f"{name}/{self._count}")
        custody = NodeKeyCustody(random=SystemRandom(), static=key if key else new_key())
        service = AttestationService(
            tpm=tpm,
            custody=custody,
            kind=DocumentKind.NITRO,
            clock=self.clock,
            run_blocking=trio.to_thread.run_sync,
        )
        return NodeAttestation(tpm, custody, service, self.peer_verifier())


class RecordingEvents:
    """A TransportEvents sink that records what a transport reports."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.frames: list[tuple[str, bytes]] = []

    def peer_up(self, peer: str) -> None:
        self.events.append(("up", peer))

    def peer_down(self, peer: str) -> None:
        self.events.append(("down", peer))

    def frame_received(self, peer: str, frame: bytes) -> None:
        self.frames.append((peer, frame))

    def count(self, kind: str, peer: str) -> int:
        return self.events.count((kind, peer))
