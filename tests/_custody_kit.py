"""A keys node and inference nodes on one simulated cloud, for key-custody attacks.

Real releases (signed, logged), measured boot on simulated NitroTPMs, the real
attestation verifier and the real vault: each attack test changes only what
the attacker controls.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from _release_kit import NOW, ReleaseKit

from actors.key_custody import KeyVault, NodeKeyCustody
from actors.seams.tpm import TPM
from nodes.boot import BootedNode, measured_boot
from nodes.random import SystemRandom
from protocol.attestation import (
    AttestationVerifier,
    ChainCache,
    NitroAuthenticator,
    PcrPolicy,
    TrustAnchor,
)
from protocol.key_custody import ENVELOPE_PROTOCOL, DataKeyGrant, DataKeyRequest
from protocol.measurement import MEASURED_PCRS, boot_extends, model_policy
from protocol.noise import KeyPair
from protocol.release import VerifiedRelease
from simulations.clock import ManualClock
from simulations.nitrotpm import NodeImage, SimulatedNitroPKI, SimulatedNitroTPM

MODEL = "smol"
WEIGHTS = b"GGUF" + hashlib.shake_256(b"adversarial weights").digest(4096)


def new_key_pair() -> KeyPair:
    return KeyPair.generate(ENVELOPE_PROTOCOL.dh, SystemRandom().token_bytes)


#: The model provider: one party, whose key every test release names for MODEL.
MODEL_PROVIDER = new_key_pair()

#: An image of the operator's own making (its own kernel and user space).
OPERATOR_IMAGE = NodeImage(
    *(hashlib.sha384(b"operator's own image %d" % index).digest() for index in range(3))
)


@dataclass
class CustodyCloud:
    """One release serving MODEL, a booted keys node with its vault, a provider key."""

    tmp: Path
    kit: ReleaseKit = field(init=False)
    release: VerifiedRelease = field(init=False)
    wall: ManualClock = field(init=False)
    pki: SimulatedNitroPKI = field(init=False)
    keys_tpm: SimulatedNitroTPM = field(init=False)
    keys_node: BootedNode = field(init=False)
    #: The model provider's static key: the one the release names for MODEL.
    provider: KeyPair = field(init=False)
    #: Every keyring file the keys node stored, oldest first (its disk's history).
    stored: list[bytes] = field(init=False, default_factory=list)
    vault: KeyVault = field(init=False)

    def __post_init__(self) -> None:
        self.kit = ReleaseKit(install_root=self.tmp / "install")
        self.provider = MODEL_PROVIDER
        self.files = self.kit.publish(
            1, models={MODEL: WEIGHTS}, model_providers={MODEL: self.provider.public}
        )
        self.release = self.kit.verified(self.files)
        self.wall = ManualClock(int(NOW.timestamp() * 1000))
        self.pki = SimulatedNitroPKI("adversarial-cloud")
        self.keys_tpm = SimulatedNitroTPM(seed="keys-node", pki=self.pki, clock=self.wall)
        self.keys_node = measured_boot(
            self.kit.boot_inputs(self.files, None, self.kit.node_state_dir(self.keys_tpm)),
            tpm=self.keys_tpm,
            random=SystemRandom(),
            now=NOW,
        )
        self.stored.append(KeyVault.new_keyring(self.keys_tpm, SystemRandom()))
        self.vault = self.open_vault(self.stored[-1])

    def open_vault(
        self,
        keyring_file: bytes,
        *,
        tpm: TPM | None = None,
        persist: Callable[[bytes], None] | None = None,
        policy_for: Callable[[str], PcrPolicy | None] | None = None,
        verifier: AttestationVerifier | None = None,
    ) -> KeyVault:
        """The keys node's vault (re)started on ``keyring_file`` (on ``tpm`` and
        storing into ``persist``; by default the keys node's simulated TPM and
        :attr:`stored`)."""
        return KeyVault(
            custody=self.keys_node.custody,
            tpm=tpm if tpm is not None else self.keys_tpm,
            random=SystemRandom(),
            clock=self.wall,
            verifier=verifier
            if verifier is not None
            else AttestationVerifier(
                [NitroAuthenticator(TrustAnchor.from_der(self.pki.root_der), cache=ChainCache())]
            ),
            policy_for=policy_for
            if policy_for is not None
            else lambda model_id: model_policy([self.release], model_id),
            provider_static_for=self.release.model_provider_static,
            keyring=keyring_file,
            persist=persist if persist is not None else self.stored.append,
        )

    @property
    def keys_static(self) -> bytes:
        """The keys node's static key as an inference node verified it (its
        boot document binds it)."""
        return self.keys_node.custody.static_public

    def measured_pcrs(self) -> dict[int, bytes]:
        """The keys node's measured registers, as any of its attestation documents shows them."""
        return {index: self.keys_tpm.pcr_read(index) for index in MEASURED_PCRS}

    def operator_boot(self, image: NodeImage = OPERATOR_IMAGE) -> SimulatedNitroTPM:
        """The keys node's machine (same TPM, same NV state) booted into
        ``image``, with the application registers extended to the keys node's
        values: their event digests are published, so anyone can extend them.
        The simulated TPM object of the genuine boot stays usable, standing for
        the machine once it boots the released image again."""
        tpm = SimulatedNitroTPM(
            seed="keys-node", pki=self.pki, clock=self.wall, nv=self.keys_tpm.nv, image=image
        )
        for index, digest in boot_extends(self.keys_node.measurement):
            tpm.pcr_extend(index, digest)
        return tpm

    def inference_node(self, seed: str) -> tuple[SimulatedNitroTPM, NodeKeyCustody]:
        tpm = SimulatedNitroTPM(seed=seed, pki=self.pki, clock=self.wall)
        booted = measured_boot(
            self.kit.boot_inputs(self.files, MODEL, self.kit.node_state_dir(tpm)),
            tpm=tpm,
            random=SystemRandom(),
            now=NOW,
        )
        return tpm, booted.custody

    def request(
        self, tpm: SimulatedNitroTPM, custody: NodeKeyCustody, version: int | None = None
    ) -> DataKeyRequest:
        return custody.data_key_request(
            tpm,
            challenge=self.vault.issue_challenge(custody.static_public),
            model_id=MODEL,
            key_version=version,
        )

    def grant(self, request: DataKeyRequest, custody: NodeKeyCustody) -> DataKeyGrant:
        return self.vault.release_data_key(request, peer=custody.static_public)

    def fetch(
        self, tpm: SimulatedNitroTPM, custody: NodeKeyCustody, version: int | None = None
    ) -> int:
        request = self.request(tpm, custody, version)
        return custody.accept_grant(
            request, self.grant(request, custody), keys_node_static=self.keys_static
        )
