"""Attack: replace the keyring with one built around a KEK the TPM owner sealed itself.

Before the fix the keyring file's MAC key was derived from the KEKs listed in
the file. The TPM owner can create a sealed object under any PCR policy
without being in that PCR state (``TPM2_Create`` checks no PCR; the policy
digest comes from a trial session fed the values any attestation document
shows), so it sealed a KEK of its own choosing to the keys node's measured
registers, wrote a keyring holding only that KEK with the genuine version and
counter binding (both public), and MACed it under a key derived from its own
KEK. The genuine keys node opened it; when the provider re-imported the data
key (the keys "looked lost"), the vault wrapped it under the owner's KEK and
wrote it to a disk the owner reads.

Now the MAC is the TPM's measured HMAC over the platform and application
registers: a primary key whose template's policy is PolicyPCR over the
*current* values. The owner can derive that very key from any state, but the
TPM uses it only in the measured state, where only the released code runs.
The forgery is refused as unauthentic -- on the simulated TPM (the owner power
modelled by ``SimulatedNitroTPM.owner_seal_to``) and on swtpm (with real
``TPM2_Create`` / ``TPM2_CreatePrimary`` / ``TPM2_HMAC`` calls as the owner).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from _custody_kit import MODEL, CustodyCloud
from _swtpm import (
    Swtpm,
    owner_measured_hmac,
    owner_seal_to,
    power_on_image,
    require_swtpm,
)

from actors.key_custody import (
    KeyringCheck,
    KeyringError,
    KeyringRefused,
    KeyVault,
    seal_keyring_file,
)
from actors.seams.tpm import TPM, TPMError
from nodes.random import SystemRandom
from protocol.key_custody import (
    KekState,
    Keyring,
    KeyringFile,
    SealedKek,
    seal_data_key_import,
    unwrap_data_key,
)
from protocol.measurement import APPLICATION_PCRS, MEASURED_PCRS, RELEASE_PCR
from simulations.nitrotpm import running_image

# The ESAPI logs the TPM errors these tests provoke; they assert on typed errors.
os.environ.setdefault("TSS2_LOG", "all+NONE")

OWNER_KEK = bytes(range(32))


def forged_keyring(genuine: KeyringFile, owner_blob: bytes, owner_tpm: TPM) -> bytes:
    """A keyring of the owner's KEK alone, with the genuine version and binding,
    MACed as well as the owner can: by the TPM, in the owner's own state."""
    owner_kek = SealedKek(
        kek_id=1, state=KekState.ACTIVE, sealed_blob=owner_blob, pcr_indices=MEASURED_PCRS
    )
    return seal_keyring_file(
        Keyring(keks=(owner_kek,)),
        version=genuine.version,
        binding=genuine.binding,
        tpm=owner_tpm,
    ).encode()


def owner_can_read(stored: list[bytes], data_key: bytes) -> bool:
    """Whether any keyring file on disk holds ``data_key`` wrapped under OWNER_KEK."""
    for data in stored:
        for record in KeyringFile.decode(data).keyring.data_keys:
            try:
                if unwrap_data_key(OWNER_KEK, record) == data_key:
                    return True
            except KeyringError:  # a record under the genuine KEK
                continue
    return False


def test_a_keyring_of_an_owner_sealed_kek_alone_is_refused(tmp_path: Path) -> None:
    cloud = CustodyCloud(tmp_path)
    random = SystemRandom()
    provider_key = random.token_bytes(32)
    cloud.vault.import_data_key(
        seal_data_key_import(
            MODEL, provider_key, cloud.keys_static, random.token_bytes, provider=cloud.provider
        )
    )
    genuine = KeyringFile.decode(cloud.stored[-1])
    measured = cloud.measured_pcrs()

    # The owner's states: the same machine on its own image with the
    # application registers replayed, and on the released image with another
    # release's registers. Neither is the keys node's measured state.
    other_release = cloud.operator_boot(running_image())
    other_release.pcr_extend(RELEASE_PCR, hashlib.sha384(b"another release").digest())
    for owner_tpm in (cloud.operator_boot(), other_release):
        assert {i: owner_tpm.pcr_read(i) for i in MEASURED_PCRS} != measured
        owner_blob = owner_tpm.owner_seal_to(OWNER_KEK, measured)
        # The owner power is real: the blob opens in the keys node's state.
        assert cloud.keys_tpm.unseal(owner_blob) == OWNER_KEK
        with pytest.raises(KeyringRefused) as caught:
            cloud.open_vault(forged_keyring(genuine, owner_blob, owner_tpm))
        assert caught.value.check is KeyringCheck.UNAUTHENTIC

    # The genuine keyring still opens; a provider's re-import (a new key
    # version) lands under the genuine KEK, which the owner cannot read.
    cloud.vault = cloud.open_vault(cloud.stored[-1])
    again = seal_data_key_import(
        MODEL,
        provider_key,
        cloud.keys_static,
        random.token_bytes,
        provider=cloud.provider,
        key_version=2,
    )
    cloud.vault.import_data_key(again)
    tpm, node = cloud.inference_node("inference-1")
    assert cloud.fetch(tpm, node, version=2) == 2
    assert not owner_can_read(cloud.stored, provider_key)


def test_on_a_tpm_device_the_owner_cannot_write_a_keyring_the_node_opens(
    tmp_path: Path,
) -> None:
    require_swtpm()
    from nodes.tpm import TpmDeviceBackend
    from simulations.nitrotpm import NodeImage

    application = {i: hashlib.sha384(b"genuine %d" % i).digest() for i in APPLICATION_PCRS}
    operator_image = NodeImage(*(hashlib.sha384(b"operator %d" % i).digest() for i in range(3)))

    def boot(image: NodeImage | None = None) -> TpmDeviceBackend:
        device = TpmDeviceBackend(swtpm.tcti)
        power_on_image(device, image)
        for index, digest in application.items():
            device.pcr_extend(index, digest)
        return device

    cloud = CustodyCloud(tmp_path)
    random = SystemRandom()
    swtpm = Swtpm(tmp_path / "swtpm")
    swtpm.start()
    try:
        # 1. The genuine keys node: a keyring, and the provider's data key in it.
        device = boot()
        measured = device.pcr_read_many(MEASURED_PCRS)
        stored = [KeyVault.new_keyring(device, random)]
        vault = cloud.open_vault(stored[0], tpm=device, persist=stored.append)
        provider_key = random.token_bytes(32)
        vault.import_data_key(
            seal_data_key_import(
                MODEL, provider_key, cloud.keys_static, random.token_bytes, provider=cloud.provider
            )
        )
        genuine = KeyringFile.decode(stored[-1])
        device.close()
        swtpm.stop()

        # 2. The owner boots its own image (application registers replayed).
        swtpm.start()
        owner = boot(operator_image)
        assert owner.pcr_read_many(MEASURED_PCRS) != measured
        with pytest.raises(TPMError):
            owner.unseal(genuine.keyring.active_kek.sealed_blob)
        owner.close()
        owner_blob = owner_seal_to(swtpm.tcti, measured, OWNER_KEK)
        # It derives the keys node's own MAC key for the measured state, but
        # the TPM will not use it here.
        probe = b"mantle/keyring-file/v2\x00" + bytes(32)
        from tpm2_pytss import TSS2_Exception

        with pytest.raises(TSS2_Exception):
            owner_measured_hmac(swtpm.tcti, measured, probe)
        owner = TpmDeviceBackend(swtpm.tcti)
        forged = forged_keyring(genuine, owner_blob, owner)
        owner.close()
        swtpm.stop()

        # 3. The genuine keys node starts again, on the owner's keyring.
        swtpm.start()
        device = boot()
        assert device.pcr_read_many(MEASURED_PCRS) == measured
        assert device.unseal(owner_blob) == OWNER_KEK  # the owner's blob is sound
        with pytest.raises(KeyringRefused) as caught:
            cloud.open_vault(forged, tpm=device)
        assert caught.value.check is KeyringCheck.UNAUTHENTIC
        vault = cloud.open_vault(stored[-1], tpm=device, persist=stored.append)
        vault.import_data_key(
            seal_data_key_import(
                MODEL, provider_key, cloud.keys_static, random.token_bytes, provider=cloud.provider,
                key_version=2,
            )
        )  # fmt: skip
        assert not owner_can_read(stored, provider_key)
        # The key the owner derived in step 2 is the node's: in this state the
        # TPM computes the same tag for both (which is why only the state,
        # never the key's derivation, may be what keeps the owner out).
        tag = device.measured_hmac(MEASURED_PCRS, probe)
        device.close()
        assert owner_measured_hmac(swtpm.tcti, measured, probe) == tag
    finally:
        swtpm.stop()
