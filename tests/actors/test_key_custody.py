"""Key custody end to end: real releases, measured boot on simulated NitroTPMs,
the real attestation verifier, Noise envelopes and sealed model files."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from _release_kit import NOW, ReleaseFiles, ReleaseKit

from actors.counter_guard import CounterCheck, CounterRefused
from actors.key_custody import (
    KEYRING_COUNTER,
    Denial,
    EnvelopeError,
    KeyReleaseDenied,
    KeyringCheck,
    KeyringError,
    KeyringRefused,
    KeyVault,
    NodeKeyCustody,
    seal_keyring_file,
)
from actors.key_custody import _vault as vault_module
from actors.seams.tpm import TPMError
from nodes.boot import BootInputs, measured_boot
from nodes.model_store import (
    ModelStoreError,
    open_sealed_model,
    read_blocks,
    read_sealed_header,
    seal_model_file,
    write_sealed_stream,
)
from nodes.random import SystemRandom
from protocol.attestation import AttestationVerifier, ChainCache, NitroAuthenticator, TrustAnchor
from protocol.key_custody import (
    ENVELOPE_PROTOCOL,
    DataKeyEvent,
    DataKeyRequest,
    DataKeyState,
    KekState,
    Keyring,
    KeyringFile,
    seal_data_key_import,
)
from protocol.measurement import (
    APPLICATION_PCRS,
    RELEASE_PCR,
    model_artifact_name,
    model_policy,
)
from protocol.noise import KeyPair
from protocol.release import VerifiedRelease
from protocol.sealed_model import SealedModelAuthError
from simulations.clock import ManualClock
from simulations.nitrotpm import SimulatedNitroPKI, SimulatedNitroTPM

NOW_MS = int(NOW.timestamp() * 1000)
MODEL = "smol"
WEIGHTS = b"GGUF" + hashlib.shake_256(b"weights").digest(300_000)


@dataclass
class Cluster:
    kit: ReleaseKit
    release: VerifiedRelease
    pki: SimulatedNitroPKI
    wall: ManualClock
    keys_tpm: SimulatedNitroTPM
    keys_custody: NodeKeyCustody
    provider: KeyPair
    vault: KeyVault
    persisted: list[bytes]
    store: Path
    files: ReleaseFiles

    def node(
        self, seed: str, *, model_id: str | None = MODEL
    ) -> tuple[SimulatedNitroTPM, NodeKeyCustody]:
        tpm = SimulatedNitroTPM(seed=seed, pki=self.pki, clock=self.wall)
        booted = measured_boot(
            self.boot_inputs(model_id, tpm), tpm=tpm, random=SystemRandom(), now=NOW
        )
        return tpm, booted.custody

    def boot_inputs(self, model_id: str | None, tpm: SimulatedNitroTPM) -> BootInputs:
        return self.kit.boot_inputs(self.files, model_id, self.kit.node_state_dir(tpm))

    def request_key(
        self, tpm: SimulatedNitroTPM, custody: NodeKeyCustody, version: int | None = None
    ) -> DataKeyRequest:
        return custody.data_key_request(
            tpm,
            challenge=self.vault.issue_challenge(custody.static_public),
            model_id=MODEL,
            key_version=version,
        )

    def fetch(
        self, tpm: SimulatedNitroTPM, custody: NodeKeyCustody, version: int | None = None
    ) -> int:
        request = self.request_key(tpm, custody, version)
        grant = self.vault.release_data_key(request, peer=custody.static_public)
        return custody.accept_grant(
            request, grant, keys_node_static=self.keys_custody.static_public
        )

    def load(self, custody: NodeKeyCustody, path: Path) -> bytes:
        spec = self.release.artifacts[model_artifact_name(MODEL)]
        with (
            open_sealed_model(
                path,
                custody.data_key_for,
                model_id=MODEL,
                expected_length=spec.length,
                expected_sha384=spec.hashes["sha384"],
            ) as model,
            open(model.path, "rb") as loaded,
        ):
            return loaded.read()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    kit = ReleaseKit(install_root=tmp_path / "install")
    files = kit.publish(1, models={MODEL: WEIGHTS})
    release = kit.verified(files)
    wall = ManualClock(NOW_MS)
    pki = SimulatedNitroPKI("cluster")
    keys_tpm = SimulatedNitroTPM(seed="keys-node", pki=pki, clock=wall)
    inputs = kit.boot_inputs(files, None, kit.node_state_dir(keys_tpm))
    keys_node = measured_boot(inputs, tpm=keys_tpm, random=SystemRandom(), now=NOW)
    verifier = AttestationVerifier(
        [NitroAuthenticator(TrustAnchor.from_der(pki.root_der), cache=ChainCache())]
    )
    persisted: list[bytes] = []
    keyring = KeyVault.new_keyring(keys_tpm, SystemRandom())
    # The model provider's static key, as the release would name it for MODEL.
    provider = KeyPair.generate(ENVELOPE_PROTOCOL.dh, SystemRandom().token_bytes)
    vault = KeyVault(
        custody=keys_node.custody,
        tpm=keys_tpm,
        random=SystemRandom(),
        clock=wall,
        verifier=verifier,
        policy_for=lambda model_id: model_policy([release], model_id),
        provider_static_for=lambda model_id: provider.public if model_id == MODEL else None,
        keyring=keyring,
        persist=persisted.append,
    )
    yield Cluster(
        kit,
        release,
        pki,
        wall,
        keys_tpm,
        keys_node.custody,
        provider,
        vault,
        persisted,
        tmp_path / "store",
        files,
    )


def seal_weights(cluster: Cluster, version: int, name: str = "weights.gguf") -> Path:
    """The provider's side: the GGUF sealed under a fresh DEK that the vault stores."""
    source = cluster.store / name
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_bytes(WEIGHTS)
    vault_version = cluster.vault.add_data_key(MODEL, data_key := SystemRandom().token_bytes(32))
    assert vault_version == version
    destination = cluster.store / f"{MODEL}.v{version}.sealed"
    info = seal_model_file(
        source,
        destination,
        model_id=MODEL,
        key_version=version,
        data_key=data_key,
        random=SystemRandom(),
        chunk_size=64 << 10,
    )
    assert info.plaintext_sha384 == hashlib.sha384(WEIGHTS).digest()
    source.unlink()
    return destination


# --- release decisions ---------------------------------------------------------------------


def test_node_on_an_allowed_release_gets_the_key_and_loads_the_model(cluster: Cluster) -> None:
    sealed = seal_weights(cluster, 1)
    assert WEIGHTS[:64] not in sealed.read_bytes()
    tpm, custody = cluster.node("inference-1")
    assert cluster.fetch(tpm, custody) == 1
    assert cluster.load(custody, sealed) == WEIGHTS


def test_node_with_unlisted_pcrs_gets_no_key(cluster: Cluster) -> None:
    seal_weights(cluster, 1)
    # A node booted without the model: its PCR 13 matches no model policy entry.
    tpm, custody = cluster.node("ingress-1", model_id=None)
    with pytest.raises(KeyReleaseDenied) as caught:
        cluster.fetch(tpm, custody)
    assert caught.value.denial is Denial.ATTESTATION
    assert caught.value.attestation_check == "pcr_policy"
    # A node that measured something else entirely (an unlisted release).
    rogue = SimulatedNitroTPM(seed="rogue", pki=cluster.pki, clock=cluster.wall)
    for index in APPLICATION_PCRS:
        rogue.pcr_extend(index, hashlib.sha384(b"unlisted release").digest())
    rogue_custody = NodeKeyCustody(random=SystemRandom())
    with pytest.raises(KeyReleaseDenied) as caught:
        cluster.fetch(rogue, rogue_custody)
    assert caught.value.attestation_check == "pcr_policy"
    assert not rogue_custody.has_data_key(MODEL, 1)


def test_document_from_another_pki_gets_no_key(cluster: Cluster) -> None:
    seal_weights(cluster, 1)
    foreign = SimulatedNitroTPM.from_seed("elsewhere", clock=cluster.wall)
    measured_boot(cluster.boot_inputs(MODEL, foreign), tpm=foreign, random=SystemRandom(), now=NOW)
    with pytest.raises(KeyReleaseDenied) as caught:
        cluster.fetch(foreign, NodeKeyCustody(random=SystemRandom()))
    assert caught.value.attestation_check == "chain_root"


def test_key_goes_only_to_the_attested_key(cluster: Cluster) -> None:
    seal_weights(cluster, 1)
    tpm, custody = cluster.node("inference-1")
    request = cluster.request_key(tpm, custody)
    thief = NodeKeyCustody(random=SystemRandom())
    # Swapping in another static key breaks the binding...
    with pytest.raises(KeyReleaseDenied) as caught:
        cluster.vault.release_data_key(
            replace(request, static_public=thief.static_public), peer=custody.static_public
        )
    assert caught.value.attestation_check == "bound_key"
    # ...and a grant to the attested key opens for nobody else.
    request = cluster.request_key(tpm, custody)
    grant = cluster.vault.release_data_key(request, peer=custody.static_public)
    keys_static = cluster.keys_custody.static_public
    with pytest.raises(EnvelopeError):
        thief.accept_grant(request, grant, keys_node_static=keys_static)
    custody.accept_grant(request, grant, keys_node_static=keys_static)


def test_challenges_are_single_use_and_expire(cluster: Cluster) -> None:
    seal_weights(cluster, 1)
    tpm, custody = cluster.node("inference-1")
    peer = custody.static_public
    request = cluster.request_key(tpm, custody)
    cluster.vault.release_data_key(request, peer=peer)
    with pytest.raises(KeyReleaseDenied) as caught:
        cluster.vault.release_data_key(request, peer=peer)
    assert caught.value.denial is Denial.UNKNOWN_CHALLENGE

    request = cluster.request_key(tpm, custody)
    cluster.wall.advance(61)
    with pytest.raises(KeyReleaseDenied) as caught:
        cluster.vault.release_data_key(request, peer=peer)
    assert caught.value.denial is Denial.EXPIRED_CHALLENGE

    # A document made for another nonce does not answer this challenge.
    stale = cluster.request_key(tpm, custody)
    fresh_nonce = cluster.vault.issue_challenge(peer)
    with pytest.raises(KeyReleaseDenied) as caught:
        cluster.vault.release_data_key(replace(stale, nonce=fresh_nonce), peer=peer)
    assert caught.value.attestation_check == "nonce"


def test_a_challenge_is_this_vaults_for_this_peer_at_this_time(cluster: Cluster) -> None:
    seal_weights(cluster, 1)
    tpm, custody = cluster.node("inference-1")
    peer = custody.static_public
    request = cluster.request_key(tpm, custody)
    # The issue time is covered by the tag: backdating or postdating breaks it.
    for shifted in (-1, 1):
        issued = int.from_bytes(request.nonce[:8], "big", signed=True) + shifted
        nonce = issued.to_bytes(8, "big", signed=True) + request.nonce[8:]
        with pytest.raises(KeyReleaseDenied) as caught:
            cluster.vault.release_data_key(replace(request, nonce=nonce), peer=peer)
        assert caught.value.denial is Denial.UNKNOWN_CHALLENGE
    # A restarted vault draws a new challenge key: nothing issued before passes.
    restarted = reopen(cluster, cluster.persisted[-1])
    with pytest.raises(KeyReleaseDenied) as caught:
        restarted.release_data_key(request, peer=peer)
    assert caught.value.denial is Denial.UNKNOWN_CHALLENGE
    # The original still answers (the refusals above consumed nothing).
    grant = cluster.vault.release_data_key(request, peer=peer)
    custody.accept_grant(request, grant, keys_node_static=cluster.keys_custody.static_public)


def test_used_challenges_are_remembered_until_they_expire_and_bounded(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vault_module, "MAX_USED_CHALLENGES", 8)
    seal_weights(cluster, 1)
    tpm, custody = cluster.node("inference-1")
    peer = custody.static_public
    requests = [cluster.request_key(tpm, custody) for _ in range(9)]
    for request in requests[:8]:
        cluster.vault.release_data_key(request, peer=peer)
    # The memory is full: the vault issues nothing more and takes no unused
    # nonce, rather than forget a used one...
    with pytest.raises(KeyReleaseDenied) as caught:
        cluster.vault.issue_challenge(peer)
    assert caught.value.denial is Denial.TOO_MANY_CHALLENGES
    with pytest.raises(KeyReleaseDenied) as caught:
        cluster.vault.release_data_key(requests[8], peer=peer)
    assert caught.value.denial is Denial.TOO_MANY_CHALLENGES
    # ...so every used one is still refused.
    for request in requests[:8]:
        with pytest.raises(KeyReleaseDenied) as caught:
            cluster.vault.release_data_key(request, peer=peer)
        assert caught.value.denial is Denial.UNKNOWN_CHALLENGE
    # Once they expire they are refused by age, and their room is free again.
    cluster.wall.advance(61)
    for request in requests:
        with pytest.raises(KeyReleaseDenied) as caught:
            cluster.vault.release_data_key(request, peer=peer)
        assert caught.value.denial is Denial.EXPIRED_CHALLENGE
    cluster.fetch(tpm, custody)


def test_denied_requests_consume_the_challenge_and_never_unseal(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    seal_weights(cluster, 1)
    unseals: list[bytes] = []
    real_unseal = cluster.keys_tpm.unseal

    def counting_unseal(blob: bytes) -> bytes:
        unseals.append(blob)
        return real_unseal(blob)

    monkeypatch.setattr(cluster.keys_tpm, "unseal", counting_unseal)
    tpm, custody = cluster.node("inference-1")
    ingress_tpm, ingress = cluster.node("ingress-1", model_id=None)
    thief = NodeKeyCustody(random=SystemRandom())

    denied = [
        (cluster.request_key(ingress_tpm, ingress), ingress),  # PCRs outside the policy
        (replace(cluster.request_key(tpm, custody), static_public=thief.static_public), custody),
        (
            custody.data_key_request(
                tpm,
                challenge=cluster.vault.issue_challenge(custody.static_public),
                model_id="not-listed",
            ),
            custody,
        ),
    ]
    for request, asker in denied:
        with pytest.raises(KeyReleaseDenied):
            cluster.vault.release_data_key(request, peer=asker.static_public)
        # The nonce went with the refusal: a correct request over it is refused too.
        retry = custody.data_key_request(tpm, challenge=request.nonce, model_id=MODEL)
        for peer in {asker.static_public, custody.static_public}:
            with pytest.raises(KeyReleaseDenied) as caught:
                cluster.vault.release_data_key(retry, peer=peer)
            assert caught.value.denial is Denial.UNKNOWN_CHALLENGE
    # No refused request got as far as unsealing a KEK.
    assert unseals == []
    cluster.fetch(tpm, custody)
    assert len(unseals) == 1


def test_unknown_model_and_version_are_refused(cluster: Cluster) -> None:
    seal_weights(cluster, 1)
    tpm, custody = cluster.node("inference-1")
    with pytest.raises(KeyReleaseDenied) as caught:
        cluster.fetch(tpm, custody, version=7)
    assert caught.value.denial is Denial.UNKNOWN_KEY
    request = custody.data_key_request(
        tpm, challenge=cluster.vault.issue_challenge(custody.static_public), model_id="not-listed"
    )
    with pytest.raises(KeyReleaseDenied) as caught:
        cluster.vault.release_data_key(request, peer=custody.static_public)
    assert caught.value.denial is Denial.NO_POLICY


def test_kek_cannot_be_unsealed_after_the_keys_node_pcrs_change(cluster: Cluster) -> None:
    seal_weights(cluster, 1)
    tpm, custody = cluster.node("inference-1")
    cluster.fetch(tpm, custody)
    blob = cluster.vault.keyring.active_kek.sealed_blob
    cluster.keys_tpm.unseal(blob)

    cluster.keys_tpm.pcr_extend(RELEASE_PCR, hashlib.sha384(b"something else ran").digest())
    with pytest.raises(TPMError):
        cluster.keys_tpm.unseal(blob)
    with pytest.raises(KeyReleaseDenied) as caught:
        cluster.fetch(tpm, custody)
    assert caught.value.denial is Denial.KEK_SEALED

    # A reboot alone does not help (the PCRs are at reset, not at the release)...
    cluster.keys_tpm.reboot()
    with pytest.raises(TPMError):
        cluster.keys_tpm.unseal(blob)
    # ...measured boot of the same release does.
    measured_boot(
        cluster.boot_inputs(None, cluster.keys_tpm),
        tpm=cluster.keys_tpm,
        random=SystemRandom(),
        now=NOW,
    )
    assert len(cluster.keys_tpm.unseal(blob)) == 32
    cluster.fetch(tpm, custody)


def test_keys_node_booted_with_a_model_measurement_cannot_unseal(cluster: Cluster) -> None:
    blob = cluster.vault.keyring.active_kek.sealed_blob
    cluster.keys_tpm.reboot()
    measured_boot(
        cluster.boot_inputs(MODEL, cluster.keys_tpm),
        tpm=cluster.keys_tpm,
        random=SystemRandom(),
        now=NOW,
    )
    with pytest.raises(TPMError):
        cluster.keys_tpm.unseal(blob)


# --- rotation without downtime -------------------------------------------------------------


def test_data_key_rotation_keeps_serving_old_and_new(cluster: Cluster) -> None:
    old_file = seal_weights(cluster, 1)
    tpm_a, node_a = cluster.node("inference-a")
    tpm_b, node_b = cluster.node("inference-b")
    cluster.fetch(tpm_a, node_a)

    new_version = cluster.vault.begin_data_key_rotation(MODEL)
    assert new_version == 2
    assert cluster.vault.keyring.data_key(MODEL, 2).state is DataKeyState.STAGED  # type: ignore[union-attr]
    with old_file.open("rb") as stream:
        new_file = cluster.store / f"{MODEL}.v2.sealed"
        write_sealed_stream(
            new_file,
            cluster.vault.reseal_model(MODEL, read_blocks(stream, 10_000), 2, chunk_size=32 << 10),
        )
    assert read_sealed_header(new_file).key_version == 2

    # Mid-rotation: the active key is still v1, the staged v2 is already served.
    assert cluster.fetch(tpm_b, node_b) == 1
    assert cluster.fetch(tpm_b, node_b, version=2) == 2
    assert cluster.load(node_b, new_file) == WEIGHTS

    cluster.vault.activate_data_key(MODEL, 2)
    assert cluster.vault.keyring.data_key(MODEL, 1).state is DataKeyState.RETIRING  # type: ignore[union-attr]
    # A node still holding the old file keeps loading it.
    fresh_tpm, fresh = cluster.node("inference-c")
    assert cluster.fetch(fresh_tpm, fresh, version=1) == 1
    assert cluster.load(fresh, old_file) == WEIGHTS
    assert cluster.fetch(fresh_tpm, fresh) == 2  # the active version by default

    cluster.vault.retire_data_key(MODEL, 1)
    with pytest.raises(KeyReleaseDenied) as caught:
        cluster.fetch(fresh_tpm, fresh, version=1)
    assert caught.value.denial is Denial.UNKNOWN_KEY
    # The old key never opens the new file.
    holder_of_v1 = NodeKeyCustody(random=SystemRandom())
    with pytest.raises(KeyringError, match="no data key held"):
        cluster.load(holder_of_v1, new_file)


def test_kek_rotation_rewraps_while_releases_continue(cluster: Cluster) -> None:
    seal_weights(cluster, 1)
    for extra in range(3):
        cluster.vault.add_data_key(f"model-{extra}", SystemRandom().token_bytes(32))
    tpm, custody = cluster.node("inference-1")
    old_kek = cluster.vault.keyring.active_kek
    key_before = cluster.vault._data_key(cluster.vault.keyring.data_key(MODEL, 1))  # type: ignore[arg-type]

    new_kek_id = cluster.vault.begin_kek_rotation()
    cluster.fetch(tpm, custody)
    remaining = len(cluster.vault.keyring.data_keys)
    while remaining:
        remaining = cluster.vault.rewrap_data_keys(batch=1)
        # Between any two steps a release works, whichever KEK wraps the key now.
        cluster.fetch(tpm, custody)
    assert {r.kek_id for r in cluster.vault.keyring.data_keys} == {new_kek_id}
    cluster.vault.complete_kek_rotation()

    keyring = cluster.vault.keyring
    assert [k.kek_id for k in keyring.keks] == [new_kek_id]
    assert keyring.active_kek.state is KekState.ACTIVE
    assert all(k.sealed_blob != old_kek.sealed_blob for k in keyring.keks)
    assert cluster.vault._data_key(keyring.data_key(MODEL, 1)) == key_before  # type: ignore[arg-type]
    cluster.fetch(tpm, custody)
    # Every committed keyring was persisted first, and the last one reloads.
    assert KeyringFile.decode(cluster.persisted[-1]).keyring == keyring
    assert Keyring.decode(keyring.encode()) == keyring


def test_kek_rotation_cannot_complete_before_every_key_moved(cluster: Cluster) -> None:
    seal_weights(cluster, 1)
    cluster.vault.add_data_key("model-2", SystemRandom().token_bytes(32))
    cluster.vault.begin_kek_rotation()
    with pytest.raises(KeyringError):
        cluster.vault.begin_kek_rotation()
    cluster.vault.rewrap_data_keys(batch=0)
    with pytest.raises(KeyringError, match="still wraps"):
        cluster.vault.complete_kek_rotation()


def test_data_key_lifecycle_refuses_transitions_outside_the_table(cluster: Cluster) -> None:
    seal_weights(cluster, 1)
    with pytest.raises(KeyringError):
        cluster.vault.activate_data_key(MODEL, 1)  # already active
    with pytest.raises(KeyringError):
        cluster.vault.retire_data_key(MODEL, 1)  # active keys are superseded first
    keyring = cluster.vault.keyring
    with pytest.raises(KeyringError):
        keyring.apply_data_key_event(MODEL, 99, DataKeyEvent.RETIRE)
    staged = cluster.vault.begin_data_key_rotation(MODEL)
    with pytest.raises(KeyringError):
        cluster.vault.begin_data_key_rotation(MODEL)
    cluster.vault.retire_data_key(MODEL, staged)  # abandoning a rotation is allowed
    assert cluster.vault.keyring.data_key(MODEL, staged) is None


# --- sealed files at rest ------------------------------------------------------------------


def test_tampered_or_substituted_sealed_file_does_not_load(cluster: Cluster) -> None:
    sealed = seal_weights(cluster, 1)
    tpm, custody = cluster.node("inference-1")
    cluster.fetch(tpm, custody)
    data = bytearray(sealed.read_bytes())
    data[len(data) // 2] ^= 0x40
    tampered = sealed.with_name("tampered.sealed")
    tampered.write_bytes(bytes(data))
    with pytest.raises(SealedModelAuthError):
        cluster.load(custody, tampered)

    # Different weights sealed under the genuine key: authentic, but not the release's model.
    other = cluster.store / "other.gguf"
    other.write_bytes(b"GGUF" + bytes(1000))
    substituted = cluster.store / "substituted.sealed"
    seal_model_file(
        other,
        substituted,
        model_id=MODEL,
        key_version=1,
        data_key=custody.data_key_for(read_sealed_header(sealed)),
        random=SystemRandom(),
    )
    with pytest.raises(ModelStoreError, match="differs from the release"):
        cluster.load(custody, substituted)


def test_provider_import_is_opened_only_by_the_keys_node(cluster: Cluster) -> None:
    data_key = SystemRandom().token_bytes(32)
    envelope = seal_data_key_import(
        MODEL,
        data_key,
        cluster.vault.static_public,
        SystemRandom().token_bytes,
        provider=cluster.provider,
    )
    version = cluster.vault.import_data_key(envelope)
    assert cluster.vault._data_key(cluster.vault.keyring.data_key(MODEL, version)) == data_key  # type: ignore[arg-type]
    elsewhere = NodeKeyCustody(random=SystemRandom())
    misaddressed = seal_data_key_import(
        MODEL,
        data_key,
        elsewhere.static_public,
        SystemRandom().token_bytes,
        provider=cluster.provider,
    )
    with pytest.raises(EnvelopeError):
        cluster.vault.import_data_key(misaddressed)
    relabelled = replace(envelope, model_id="another-model")
    with pytest.raises(EnvelopeError):
        cluster.vault.import_data_key(relabelled)
    # The same authentic import again (a replayed file) does not re-add a version.
    with pytest.raises(KeyringError, match="not a new version"):
        cluster.vault.import_data_key(envelope)
    renumbered = replace(
        seal_data_key_import(
            MODEL, data_key, cluster.vault.static_public, SystemRandom().token_bytes,
            provider=cluster.provider, key_version=2,
        ),
        key_version=3,
    )  # fmt: skip
    with pytest.raises(EnvelopeError):
        cluster.vault.import_data_key(renumbered)


def test_model_add_cli_registers_a_key_only_an_attested_keys_node_opens(
    tmp_path: Path, cluster: Cluster
) -> None:
    import time

    from nodes.cli import main
    from protocol.key_custody import DataKeyImport
    from protocol.measurement import cluster_policy

    # The provider checks the keys node's document as of the real time.
    wall = ManualClock(time.time_ns() // 1_000_000)
    keys_tpm = SimulatedNitroTPM(seed="keys-cli", pki=cluster.pki, clock=wall)
    keys_node = measured_boot(
        cluster.boot_inputs(None, keys_tpm), tpm=keys_tpm, random=SystemRandom(), now=NOW
    )
    provider_key = tmp_path / "provider.key"
    assert main(["model", "provider-key", str(provider_key)]) == 0
    assert provider_key.stat().st_mode & 0o077 == 0
    assert main(["model", "provider-key", str(provider_key)]) == 2  # never overwritten
    provider = KeyPair.from_private(
        ENVELOPE_PROTOCOL.dh, bytes.fromhex(provider_key.read_text().strip())
    )
    vault = KeyVault(
        custody=keys_node.custody,
        tpm=keys_tpm,
        random=SystemRandom(),
        clock=wall,
        verifier=AttestationVerifier(
            [NitroAuthenticator(TrustAnchor.from_der(cluster.pki.root_der))]
        ),
        policy_for=lambda model_id: model_policy([cluster.release], model_id),
        provider_static_for=lambda model_id: provider.public if model_id == MODEL else None,
        keyring=KeyVault.new_keyring(keys_tpm, SystemRandom()),
        persist=[].append,
    )
    (tmp_path / "keys.cbor").write_bytes(keys_node.document)
    (tmp_path / "policy.json").write_text(cluster_policy([cluster.release]).to_json())
    (tmp_path / "root.pem").write_bytes(cluster.pki.root_pem())
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(WEIGHTS)
    args = [
        "model", "add", str(gguf), "--model-id", MODEL, "--store", str(tmp_path / "store"),
        "--keys-document", str(tmp_path / "keys.cbor"), "--keys-policy",
        str(tmp_path / "policy.json"), "--trust-root", str(tmp_path / "root.pem"),
        "--chunk-size", "65536", "--provider-key", str(provider_key),
    ]  # fmt: skip
    # A static key other than the attested one is refused before anything is sealed.
    stranger = NodeKeyCustody(random=SystemRandom()).static_public.hex()
    assert main([*args, "--keys-static", stranger]) == 1
    assert not (tmp_path / "store").exists()
    # So is a key version no keys node would accept an import for.
    attested = keys_node.custody.static_public.hex()
    with pytest.raises(SystemExit) as refused:  # a usage error, before anything runs
        main([*args, "--keys-static", attested, "--key-version", "0"])
    assert refused.value.code == 2
    assert not (tmp_path / "store").exists()

    assert main([*args, "--keys-static", keys_node.custody.static_public.hex()]) == 0
    sealed = tmp_path / "store" / MODEL / "v1.sealed"
    envelope = DataKeyImport.decode(sealed.with_suffix(".import").read_bytes())
    assert vault.import_data_key(envelope) == 1
    # A provider key file that holds no key is refused before anything is sealed.
    (tmp_path / "bad.key").write_text("not hex\n")
    bad = [*args[:-1], str(tmp_path / "bad.key"), "--keys-static", attested, "--key-version", "2"]
    assert main(bad) == 2
    assert not (tmp_path / "store" / MODEL / "v2.sealed").exists()
    assert main(["model", "list", "--store", str(tmp_path / "store")]) == 0
    # A manifest nested deeper than the JSON parser recurses is a typed refusal.
    manifest = tmp_path / "store" / MODEL / "manifest.json"
    manifest.write_bytes(b"[" * 30_000 + b"]" * 30_000)
    assert main(["model", "list", "--store", str(tmp_path / "store")]) == 1

    tpm = SimulatedNitroTPM(seed="inference-cli", pki=cluster.pki, clock=wall)
    custody = measured_boot(
        cluster.boot_inputs(MODEL, tpm), tpm=tpm, random=SystemRandom(), now=NOW
    ).custody
    request = custody.data_key_request(
        tpm, challenge=vault.issue_challenge(custody.static_public), model_id=MODEL
    )
    custody.accept_grant(
        request,
        vault.release_data_key(request, peer=custody.static_public),
        keys_node_static=keys_node.custody.static_public,
    )
    assert cluster.load(custody, sealed) == WEIGHTS


# --- the keyring file ----------------------------------------------------------------------


def reopen(cluster: Cluster, keyring_file: bytes) -> KeyVault:
    return KeyVault(
        custody=cluster.keys_custody,
        tpm=cluster.keys_tpm,
        random=SystemRandom(),
        clock=cluster.wall,
        verifier=AttestationVerifier(
            [NitroAuthenticator(TrustAnchor.from_der(cluster.pki.root_der))]
        ),
        policy_for=lambda model_id: model_policy([cluster.release], model_id),
        provider_static_for=lambda model_id: None,
        keyring=keyring_file,
        persist=cluster.persisted.append,
    )


def test_every_commit_advances_the_keyring_counter_and_reopens(cluster: Cluster) -> None:
    start = cluster.keys_tpm.counter_read(KEYRING_COUNTER)
    assert cluster.vault.keyring_version == start
    seal_weights(cluster, 1)
    cluster.vault.begin_data_key_rotation(MODEL)
    assert cluster.keys_tpm.counter_read(KEYRING_COUNTER) == start + 2
    assert [KeyringFile.decode(data).version for data in cluster.persisted] == [
        start + 1,
        start + 2,
    ]
    reopened = reopen(cluster, cluster.persisted[-1])
    assert reopened.keyring == cluster.vault.keyring
    assert reopened.keyring_version == start + 2


def test_a_crash_between_writing_the_file_and_advancing_the_counter_recovers(
    cluster: Cluster,
) -> None:
    seal_weights(cluster, 1)
    before = cluster.persisted[-1]
    counter = cluster.keys_tpm.counter_read(KEYRING_COUNTER)

    def crash_after_write(keyring_file: bytes) -> None:
        cluster.persisted.append(keyring_file)
        raise OSError("power lost")

    cluster.vault._persist = crash_after_write
    with pytest.raises(OSError):
        cluster.vault.begin_data_key_rotation(MODEL)
    # The file is one ahead of the counter: it opens, and the counter catches up.
    assert cluster.keys_tpm.counter_read(KEYRING_COUNTER) == counter
    assert KeyringFile.decode(cluster.persisted[-1]).version == counter + 1
    recovered = reopen(cluster, cluster.persisted[-1])
    assert cluster.keys_tpm.counter_read(KEYRING_COUNTER) == counter + 1
    assert recovered.keyring.data_key(MODEL, 2) is not None
    # ...after which the file from before the crash is the older copy.
    with pytest.raises(KeyringRefused) as caught:
        reopen(cluster, before)
    assert caught.value.check is KeyringCheck.ROLLBACK


def test_a_crash_before_the_write_keeps_the_previous_keyring(cluster: Cluster) -> None:
    seal_weights(cluster, 1)

    def crash_before_write(keyring_file: bytes) -> None:
        raise OSError("power lost")

    cluster.vault._persist = crash_before_write
    with pytest.raises(OSError):
        cluster.vault.begin_data_key_rotation(MODEL)
    assert cluster.vault.keyring.data_key(MODEL, 2) is None
    assert reopen(cluster, cluster.persisted[-1]).keyring == cluster.vault.keyring


def test_a_second_first_keyring_on_one_tpm_is_refused(cluster: Cluster) -> None:
    # Losing the keyring file does not let anyone start a fresh one quietly.
    with pytest.raises(CounterRefused) as caught:
        KeyVault.new_keyring(cluster.keys_tpm, SystemRandom())
    assert caught.value.check is CounterCheck.BINDING_MISSING


def test_a_file_two_writes_ahead_of_the_counter_is_refused(cluster: Cluster) -> None:
    seal_weights(cluster, 1)
    stored = KeyringFile.decode(cluster.persisted[-1])
    ahead = seal_keyring_file(
        stored.keyring, version=stored.version + 2, binding=stored.binding, tpm=cluster.keys_tpm
    )
    with pytest.raises(KeyringRefused) as caught:
        reopen(cluster, ahead.encode())
    assert caught.value.check is KeyringCheck.AHEAD_OF_COUNTER


def test_retired_versions_are_never_numbered_again(cluster: Cluster) -> None:
    seal_weights(cluster, 1)
    # An abandoned rotation: v2 staged, then retired.
    data_key = SystemRandom().token_bytes(32)
    staged = seal_data_key_import(
        MODEL, data_key, cluster.vault.static_public, SystemRandom().token_bytes,
        provider=cluster.provider, key_version=2,
    )  # fmt: skip
    assert cluster.vault.import_data_key(staged) == 2
    cluster.vault.retire_data_key(MODEL, 2)
    assert cluster.vault.keyring.retired_through(MODEL) == 2
    # The provider's import file played again does not bring v2 back...
    with pytest.raises(KeyringError, match="not a new version"):
        cluster.vault.import_data_key(staged)
    # ...and the next key is numbered above it, also after a restart.
    assert reopen(cluster, cluster.persisted[-1]).keyring.next_version(MODEL) == 3
    assert cluster.vault.begin_data_key_rotation(MODEL) == 3
