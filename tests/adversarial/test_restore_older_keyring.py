"""Attack: restore an older keyring file to bring back retired data keys and a destroyed KEK.

The keyring file sits on a disk root controls. Before the fix nothing tied a
keyring to time: after a data key was retired and a KEK rotation destroyed
the old KEK, putting yesterday's keyring back gave the keys node the retired
key (servable again) and the old KEK's sealed blob (which still unseals: a
seal binds PCR values, not time) -- "gone for good" was false.

Now the file's version is bound to a TPM NV counter (``KEYRING_COUNTER``)
that each commit advances, the file records which definition of the counter
it belongs to, and a MAC that only the TPM in the keys node's measured state
computes authenticates it. The test restores each older file (refused: rollback), edits an old
file's version up to the counter (refused: unauthentic), forges a file that
pairs a KEK the owner sealed itself with the genuine records (refused:
unauthentic; test_keyring_forged_around_owner_sealed_kek.py tries the owner's
KEK alone), and deletes or re-creates the counter as the TPM owner can
(refused: missing, recreated) -- on the simulated TPM and on swtpm.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import msgpack
import pytest
from _custody_kit import MODEL, CustodyCloud
from _swtpm import Swtpm, owner_define_counter, owner_undefine, read_nv_public, require_swtpm

from actors.counter_guard import CounterBinding, CounterCheck, CounterRefused
from actors.key_custody import (
    KEYRING_COUNTER,
    Denial,
    KeyReleaseDenied,
    KeyringCheck,
    KeyringRefused,
    KeyVault,
    seal_keyring_file,
)
from nodes.random import SystemRandom
from protocol.key_custody import KekState, KeyringFile, SealedKek
from protocol.measurement import MEASURED_PCRS


def history(cloud: CustodyCloud) -> tuple[int, int]:
    """Rotate MODEL's data key and the KEK to completion; returns the retired
    data key version and the destroyed KEK id."""
    vault = cloud.vault
    vault.add_data_key(MODEL, SystemRandom().token_bytes(32))
    old_kek = vault.keyring.active_kek.kek_id
    new_version = vault.begin_data_key_rotation(MODEL)
    vault.activate_data_key(MODEL, new_version)
    vault.retire_data_key(MODEL, 1)
    vault.begin_kek_rotation()
    while vault.rewrap_data_keys(batch=1):
        pass
    vault.complete_kek_rotation()
    return 1, old_kek


def test_older_keyring_files_are_refused(tmp_path: Path) -> None:
    cloud = CustodyCloud(tmp_path)
    retired, destroyed = history(cloud)
    latest = cloud.stored[-1]
    holding_retired = [
        data for data in cloud.stored if KeyringFile.decode(data).keyring.data_key(MODEL, retired)
    ]
    holding_destroyed = [
        data
        for data in cloud.stored
        if any(k.kek_id == destroyed for k in KeyringFile.decode(data).keyring.keks)
    ]
    assert holding_retired and holding_destroyed

    for older in cloud.stored[:-1]:
        with pytest.raises(KeyringRefused) as caught:
            cloud.open_vault(older)
        assert caught.value.check is KeyringCheck.ROLLBACK

    # The newest file opens, and neither the retired key nor the old KEK is in it.
    reopened = cloud.open_vault(latest)
    assert reopened.keyring.data_key(MODEL, retired) is None
    assert destroyed not in [k.kek_id for k in reopened.keyring.keks]
    tpm, node = cloud.inference_node("inference-1")
    cloud.vault = reopened
    with pytest.raises(KeyReleaseDenied) as denied:
        cloud.fetch(tpm, node, version=retired)
    assert denied.value.denial is Denial.UNKNOWN_KEY
    assert cloud.fetch(tpm, node) == 2


def test_an_old_keyring_with_its_version_edited_up_is_refused(tmp_path: Path) -> None:
    cloud = CustodyCloud(tmp_path)
    retired, _ = history(cloud)
    counter = cloud.keys_tpm.counter_read(KEYRING_COUNTER)
    old = next(
        data for data in cloud.stored if KeyringFile.decode(data).keyring.data_key(MODEL, retired)
    )
    fields = msgpack.unpackb(old, raw=False)
    fields[1] = counter
    with pytest.raises(KeyringRefused) as caught:
        cloud.open_vault(msgpack.packb(fields, use_bin_type=True))
    assert caught.value.check is KeyringCheck.UNAUTHENTIC


def test_a_keyring_forged_around_an_owner_sealed_kek_is_refused(tmp_path: Path) -> None:
    """The owner can seal a KEK it knows to this node's PCR values; it cannot
    make the genuine KEK part of a keyring it authenticates."""
    cloud = CustodyCloud(tmp_path)
    cloud.vault.add_data_key(MODEL, SystemRandom().token_bytes(32))
    genuine = KeyringFile.decode(cloud.stored[-1])
    owner_kek = bytes(range(32))
    # The owner, on the same machine booted into its own image.
    owner_tpm = cloud.operator_boot()
    owner_sealed = SealedKek(
        kek_id=9,
        state=KekState.ACTIVE,
        sealed_blob=owner_tpm.owner_seal_to(owner_kek, cloud.measured_pcrs()),
        pcr_indices=MEASURED_PCRS,
    )
    # The genuine KEK demoted to pending, the genuine wrapped records kept: the
    # vault would unwrap the real data key and could reseal weights under a
    # key the owner then stages.
    forged_ring = replace(
        genuine.keyring,
        keks=(replace(genuine.keyring.active_kek, state=KekState.PENDING), owner_sealed),
    )
    forged = seal_keyring_file(
        forged_ring, version=genuine.version, binding=genuine.binding, tpm=owner_tpm
    )
    with pytest.raises(KeyringRefused) as caught:
        cloud.open_vault(forged.encode())
    assert caught.value.check is KeyringCheck.UNAUTHENTIC


def test_deleting_or_recreating_the_keyring_counter_is_detected(tmp_path: Path) -> None:
    cloud = CustodyCloud(tmp_path)
    history(cloud)
    latest, oldest = cloud.stored[-1], cloud.stored[0]

    cloud.keys_tpm.owner_undefine_counter(KEYRING_COUNTER)
    for data in (latest, oldest):
        with pytest.raises(CounterRefused) as caught:
            cloud.open_vault(data)
        assert caught.value.check is CounterCheck.MISSING
    # A running vault stops committing too: it never advances a counter it lost.
    with pytest.raises(CounterRefused):
        cloud.vault.add_data_key("another-model", SystemRandom().token_bytes(32))

    name = cloud.keys_tpm.counter_define(KEYRING_COUNTER)
    assert name != KeyringFile.decode(latest).binding.nv_name
    for data in (latest, oldest):
        with pytest.raises(CounterRefused) as caught:
            cloud.open_vault(data)
        assert caught.value.check is CounterCheck.RECREATED
    # Rebinding an old file to the new counter needs its MAC: refused as edited.
    fields = msgpack.unpackb(oldest, raw=False)
    fields[1] = cloud.keys_tpm.counter_read(KEYRING_COUNTER)
    fields[2] = CounterBinding(KEYRING_COUNTER, name).encode()
    with pytest.raises(KeyringRefused) as edited:
        cloud.open_vault(msgpack.packb(fields, use_bin_type=True))
    assert edited.value.check is KeyringCheck.UNAUTHENTIC


def test_on_a_tpm_device_older_files_and_owner_counter_tricks_are_refused(
    tmp_path: Path,
) -> None:
    """The same attack on a TPM 2.0 device (swtpm): the keyring counter is an
    NV counter the owner can delete, re-create, or re-create byte for byte."""
    require_swtpm()
    from nodes.tpm import TpmDeviceBackend
    from nodes.tpm._device import COUNTER_NV_BASE

    cloud = CustodyCloud(tmp_path)
    swtpm = Swtpm(tmp_path / "swtpm")
    swtpm.start()
    try:
        device = TpmDeviceBackend(swtpm.tcti)
        stored = [KeyVault.new_keyring(device, SystemRandom())]
        vault = cloud.open_vault(stored[0], tpm=device, persist=stored.append)
        vault.add_data_key(MODEL, SystemRandom().token_bytes(32))
        vault.activate_data_key(MODEL, vault.begin_data_key_rotation(MODEL))
        vault.retire_data_key(MODEL, 1)
        with pytest.raises(KeyringRefused) as caught:
            cloud.open_vault(stored[1], tpm=device)  # still holds v1
        assert caught.value.check is KeyringCheck.ROLLBACK
        device.close()

        # The counter survives a restart of the TPM; the newest file opens.
        swtpm.stop()
        swtpm.start()
        device = TpmDeviceBackend(swtpm.tcti)
        assert cloud.open_vault(stored[-1], tpm=device).keyring.data_key(MODEL, 1) is None

        # The owner copies the counter's public area, deletes it and defines the
        # copy (same NV name): the TPM starts it above the deleted count, so the
        # newest file is now "older" than the counter -- refused, never a rollback.
        handle = COUNTER_NV_BASE + KEYRING_COUNTER
        public = read_nv_public(swtpm.tcti, handle)
        owner_undefine(swtpm.tcti, handle)
        with pytest.raises(CounterRefused) as missing:
            cloud.open_vault(stored[-1], tpm=device)
        assert missing.value.check is CounterCheck.MISSING
        owner_define_counter(swtpm.tcti, handle, copy_of=public)
        with pytest.raises(KeyringRefused) as copied:
            cloud.open_vault(stored[-1], tpm=device)
        assert copied.value.check is KeyringCheck.ROLLBACK
        # An ordinary re-created counter is not the one the keyring names.
        owner_undefine(swtpm.tcti, handle)
        device.counter_define(KEYRING_COUNTER)
        with pytest.raises(CounterRefused) as recreated:
            cloud.open_vault(stored[-1], tpm=device)
        assert recreated.value.check is CounterCheck.RECREATED
        device.close()
    finally:
        swtpm.stop()
