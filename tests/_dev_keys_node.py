"""A keys node of a ``mantle-node dev`` release, in process, for the model provider's part.

The release is the dev cluster's own (:func:`nodes.devcluster.build_dev_release`),
the keys node boots it on a simulated TPM of the cluster's simulated cloud and
holds a real :class:`~actors.key_custody.KeyVault`; its key-custody port is a
secure channel on which it proves its attestation, answering each
``keys.data_key_import`` from the vault. ``impostor=True`` gives the keys node
a machine whose application registers show a release nobody logged.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import anyio
import anyio.abc
import anyio.to_thread

from actors.attestation import AttestationService
from actors.channel import NOT_ATTESTED, ChannelAttestation, SecureChannel
from actors.key_custody import KeyVault, NodeKeyCustody
from nodes.boot import BootedNode, BootInputs, measured_boot
from nodes.clock import TrioClock
from nodes.devcluster import (
    ClusterLayout,
    DevRelease,
    build_dev_release,
    model_artifact,
    provision_model,
)
from nodes.model_store import SealedModelInfo, open_sealed_model
from nodes.random import SystemRandom
from nodes.release import read_metadata_file
from nodes.tcp import serve_secure
from protocol.attestation import DocumentKind
from protocol.key_custody import ENVELOPE_PROTOCOL, DataKeyImport, DataKeyImported
from protocol.measurement import boot_extends, model_policy, release_measurement
from protocol.messages import Envelope
from protocol.noise import KeyPair
from protocol.release import MAX_LOG_PROOF_BYTES, MAX_ROOT_BYTES, MAX_TARGETS_BYTES
from simulations.nitrotpm import SimulatedNitroPKI, SimulatedNitroTPM

MODEL = "tiny"
FAKE_GGUF = b"GGUF" + hashlib.sha256(b"weights").digest() * 512


async def _any_client(remote_static: bytes, payload: bytes) -> None:
    """The model provider is no node: its import is authenticated inside."""


@dataclass
class KeysNodeKit:
    layout: ClusterLayout
    release: DevRelease
    pki: SimulatedNitroPKI
    provider: KeyPair
    model: Path
    tpm: SimulatedNitroTPM
    custody: NodeKeyCustody
    vault: KeyVault
    now: datetime
    imports: list[str] = field(default_factory=list)

    @classmethod
    def create(cls, tmp_path: Path, *, impostor: bool = False) -> KeysNodeKit:
        random = SystemRandom()
        layout = ClusterLayout(tmp_path / "dev")
        layout.prepare()
        model = tmp_path / f"{MODEL}.gguf"
        model.write_bytes(FAKE_GGUF)
        pki = SimulatedNitroPKI(random.token_bytes(32))
        provider = KeyPair.generate(ENVELOPE_PROTOCOL.dh, random.token_bytes)
        now = datetime.now(UTC)
        release = build_dev_release(
            layout,
            model_id=MODEL,
            model=model_artifact(model),
            provider_static=provider.public,
            pki=pki,
            now=now,
        )
        tpm = SimulatedNitroTPM(seed=random.token_bytes(32), pki=pki, clock=TrioClock())
        if impostor:
            # Genuine machine of the cloud, registers of a release nobody logged.
            forged = release_measurement(release.verified, None)
            for index, digest in boot_extends(forged):
                tpm.pcr_extend(index, hashlib.sha384(b"patched " + digest).digest())
            custody = NodeKeyCustody(random=random)
        else:
            custody = _boot(release, tpm, tmp_path / "keys-state", None, now).custody
        verified = release.verified
        vault = KeyVault(
            custody=custody,
            tpm=tpm,
            random=random,
            clock=TrioClock(),
            verifier=_verifier(release),
            policy_for=lambda model_id: model_policy([verified], model_id),
            provider_static_for=verified.model_provider_static,
            keyring=KeyVault.new_keyring(tpm, random),
            persist=lambda keyring: None,
        )
        return cls(layout, release, pki, provider, model, tpm, custody, vault, now)

    async def _answer(self, channel: SecureChannel) -> None:
        async with channel:
            envelope = await channel.receive_message()
            assert isinstance(envelope.body, DataKeyImport)
            version = self.vault.import_data_key(envelope.body)
            self.imports.append(envelope.body.model_id)
            reply = DataKeyImported(envelope.body.model_id, version)
            await channel.send_message(Envelope.wrap(reply, request_id=envelope.request_id))

    async def serve(self, *, task_status: anyio.abc.TaskStatus[int]) -> None:
        service = AttestationService(
            tpm=self.tpm,
            custody=self.custody,
            kind=DocumentKind.NITRO,
            clock=TrioClock(),
            run_blocking=anyio.to_thread.run_sync,
        )
        await serve_secure(
            "127.0.0.1",
            0,
            self._answer,
            static=self.custody.static,
            entropy=SystemRandom().token_bytes,
            verify_peer=_any_client,
            attestation=ChannelAttestation(
                prove=service.attest_client_channel, require=NOT_ATTESTED
            ),
            task_status=task_status,
        )

    async def provision(self, port: int) -> SealedModelInfo:
        return await provision_model(
            model=self.model,
            sealed=self.layout.sealed_model(MODEL),
            model_id=MODEL,
            provider=self.provider,
            keys_host="127.0.0.1",
            keys_port=port,
            release=self.release.verified,
            attestation_root=self.release.pins.attestation_root,
            random=SystemRandom(),
        )

    def released_weights(self, model_id: str) -> bytes:
        """What an attested inference node of the release decrypts with the key it is granted."""
        random = SystemRandom()
        tpm = SimulatedNitroTPM(seed=random.token_bytes(32), pki=self.pki, clock=TrioClock())
        state = self.layout.data_dir / "inference-state"
        node = _boot(self.release, tpm, state, model_id, self.now)
        custody = node.custody
        request = custody.data_key_request(
            tpm, challenge=self.vault.issue_challenge(custody.static_public), model_id=model_id
        )
        custody.accept_grant(
            request,
            self.vault.release_data_key(request, peer=custody.static_public),
            keys_node_static=self.custody.static_public,
        )
        spec = self.release.verified.artifacts[f"models/{model_id}.gguf"]
        with open_sealed_model(
            self.layout.sealed_model(model_id),
            custody.data_key_for,
            model_id=model_id,
            expected_length=spec.length,
            expected_sha384=spec.hashes["sha384"],
        ) as weights:
            return Path(weights.path).read_bytes()


def _verifier(release: DevRelease):  # type: ignore[no-untyped-def]
    from protocol.attestation import AttestationVerifier, NitroAuthenticator

    return AttestationVerifier([NitroAuthenticator(release.pins.attestation_root)])


def _boot(
    release: DevRelease,
    tpm: SimulatedNitroTPM,
    state: Path,
    model_id: str | None,
    now: datetime,
) -> BootedNode:
    bundle = release.bundle
    return measured_boot(
        BootInputs(
            root_metadata=read_metadata_file(bundle.root, MAX_ROOT_BYTES, "root"),
            targets_metadata=read_metadata_file(bundle.targets, MAX_TARGETS_BYTES, "targets"),
            log_proof=read_metadata_file(bundle.log_proof, MAX_LOG_PROOF_BYTES, "proof"),
            trusted_root=release.pins.release_root,
            log_public_key=release.pins.log_public_key,
            install_root=release.install_root,
            state_dir=state,
            model_id=model_id,
        ),
        tpm=tpm,
        random=SystemRandom(),
        now=now,
    )
