"""Attack: unseal a KEK that was sealed to the application registers only.

Before the fix ``KeyVault.new_keyring`` and ``begin_kek_rotation`` sealed a
KEK to whatever non-empty PCR selection the caller named; only the demo added
the platform registers, by convention, and the tests, the custody kit and the
benchmark sealed to PCR 8, 13 and 14 alone. Those registers are extended by
user space with published event digests, so the operator reboots the keys
node's machine into an image of its own, extends them, unseals the KEK and
unwraps every data key in the keyring file.

Now a KEK is sealed to every register of the measured state (the image's
platform registers and the application registers) by default, and a
selection missing any of them is refused with a typed error -- before the
keyring counter is defined, so a refused call leaves nothing behind.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _custody_kit import MODEL, CustodyCloud

from actors.key_custody import KeyVault, UnmeasuredKekSelection
from actors.seams.tpm import TPMError
from nodes.random import SystemRandom
from protocol.key_custody import KeyringFile, unwrap_data_key
from protocol.measurement import APPLICATION_PCRS, MEASURED_PCRS, PLATFORM_PCRS
from simulations.nitrotpm import SimulatedNitroTPM

WEAK_SELECTIONS = (
    APPLICATION_PCRS,
    PLATFORM_PCRS,
    (16,),  # the debug register: resettable by anyone
    tuple(index for index in MEASURED_PCRS if index != 12),
)


def test_the_keyring_kek_does_not_unseal_under_the_operators_image(tmp_path: Path) -> None:
    cloud = CustodyCloud(tmp_path)
    data_key = SystemRandom().token_bytes(32)
    cloud.vault.add_data_key(MODEL, data_key)
    keyring = KeyringFile.decode(cloud.stored[-1]).keyring
    assert set(MEASURED_PCRS) <= set(keyring.active_kek.pcr_indices)

    operator = cloud.operator_boot()  # same TPM; application registers replayed
    for index in APPLICATION_PCRS:
        assert operator.pcr_read(index) == cloud.keys_tpm.pcr_read(index)
    with pytest.raises(TPMError):
        operator.unseal(keyring.active_kek.sealed_blob)
    # In the keys node's own state the KEK does open, and holds the data key.
    record = keyring.data_key(MODEL, 1)
    assert record is not None
    assert (
        unwrap_data_key(cloud.keys_tpm.unseal(keyring.active_kek.sealed_blob), record) == data_key
    )


@pytest.mark.parametrize("selection", WEAK_SELECTIONS)
def test_a_first_keyring_sealed_to_fewer_registers_is_refused(
    tmp_path: Path, selection: tuple[int, ...]
) -> None:
    cloud = CustodyCloud(tmp_path)
    fresh = SimulatedNitroTPM(seed="fresh keys node", pki=cloud.pki, clock=cloud.wall)
    with pytest.raises(UnmeasuredKekSelection):
        KeyVault.new_keyring(fresh, SystemRandom(), selection)
    # Nothing was defined: the node can still make its keyring, sealed properly.
    assert KeyVault.new_keyring(fresh, SystemRandom())
    # A superset of the measured registers is fine.
    another = SimulatedNitroTPM(seed="another keys node", pki=cloud.pki, clock=cloud.wall)
    assert KeyVault.new_keyring(another, SystemRandom(), (0, *MEASURED_PCRS))


@pytest.mark.parametrize("selection", WEAK_SELECTIONS)
def test_a_kek_rotation_to_fewer_registers_is_refused(
    tmp_path: Path, selection: tuple[int, ...]
) -> None:
    cloud = CustodyCloud(tmp_path)
    cloud.vault.add_data_key(MODEL, SystemRandom().token_bytes(32))
    before = cloud.vault.keyring
    with pytest.raises(UnmeasuredKekSelection):
        cloud.vault.begin_kek_rotation(selection)
    assert cloud.vault.keyring == before
    assert cloud.vault.keyring.pending_kek is None
