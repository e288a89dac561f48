"""Attack: fork the keyring -- two genuine files with one version -- and restore the other.

A commit writes the keyring file as version counter+1, then advances the
counter. Before the fix, when the advance did not happen (the operator cuts
power right after the durable write, or the TPM increment fails), the vault
numbered its next, different commit the same again. Both files carry a valid
MAC and the same version; once the counter reaches it, the vault accepts
either. The operator keeps the orphan, lets the vault retire a data key, and
restores the orphan: the retired key is back and released again.

Now an interrupted commit leaves the vault refusing changes until it is opened
again, a vault opened on a file one above the counter advances first, and one
opened on a file equal to the counter commits an unchanged copy one above
before its first change. Whichever file the operator restarts the vault on,
once the retirement is committed no file holding the retired key opens.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from _custody_kit import MODEL, CustodyCloud

from actors.counter_guard import CounterRefused
from actors.key_custody import (
    CommitInterrupted,
    Denial,
    KeyCustodyError,
    KeyReleaseDenied,
    KeyringCheck,
    KeyringRefused,
    KeyVault,
)
from nodes.random import SystemRandom
from protocol.key_custody import KeyringFile
from simulations.nitrotpm import TpmOp


class PowerCut(Exception):
    """The process dies; what was written stays on the disk."""


def holds_retired_key(data: bytes) -> bool:
    return KeyringFile.decode(data).keyring.data_key(MODEL, 1) is not None


def rotated(tmp_path: Path) -> CustodyCloud:
    """MODEL at v2 active, v1 retiring: v1 is the key the operator wants back."""
    cloud = CustodyCloud(tmp_path)
    cloud.vault.add_data_key(MODEL, SystemRandom().token_bytes(32))
    cloud.vault.activate_data_key(MODEL, cloud.vault.begin_data_key_rotation(MODEL))
    return cloud


def another_change(vault: KeyVault) -> None:
    """Any commit that is not the retirement (a new model's key)."""
    vault.add_data_key("other-model", SystemRandom().token_bytes(32))


def opens(cloud: CustodyCloud, data: bytes) -> KeyVault | None:
    try:
        return cloud.open_vault(data)
    except (KeyCustodyError, CounterRefused):
        return None


def retire_then_restore_every_file(cloud: CustodyCloud, restart_on: bytes) -> None:
    """The operator restarts the vault on ``restart_on``; v1 is retired for good;
    then the operator tries every file the disk ever held."""
    cloud.vault = cloud.open_vault(restart_on)
    cloud.vault.retire_data_key(MODEL, 1)  # committed: "gone for good" from here
    tpm, node = cloud.inference_node("inference-1")
    for data in list(cloud.stored):
        if not holds_retired_key(data):
            continue
        with pytest.raises(KeyringRefused) as caught:
            cloud.vault = cloud.open_vault(data)
        assert caught.value.check is KeyringCheck.ROLLBACK
    with pytest.raises(KeyReleaseDenied) as denied:
        cloud.fetch(tpm, node, version=1)
    assert denied.value.denial is Denial.UNKNOWN_KEY


def power_cut_after_the_write(cloud: CustodyCloud) -> None:
    """Reopen on the newest file, then cut power right after the change's
    file was written durably, before the counter moved."""

    def write_then_die(data: bytes) -> None:
        cloud.stored.append(data)
        if KeyringFile.decode(data).keyring.models() != cloud.vault.keyring.models():
            raise PowerCut

    cloud.vault = cloud.open_vault(cloud.stored[-1], persist=write_then_die)
    with pytest.raises(PowerCut):
        another_change(cloud.vault)


def failed_increment(cloud: CustodyCloud) -> None:
    """The counter increment fails after the file was written; the vault lives on."""
    cloud.keys_tpm.inject_failure(TpmOp.COUNTER_INCREMENT)
    with pytest.raises(CounterRefused):
        another_change(cloud.vault)
    # The interrupted vault takes no further change...
    with pytest.raises(CommitInterrupted):
        cloud.vault.retire_data_key(MODEL, 1)
    assert cloud.vault.keyring.data_key(MODEL, 1) is not None


@pytest.mark.parametrize("interrupt", [power_cut_after_the_write, failed_increment])
def test_no_restart_choice_brings_a_retired_key_back(
    tmp_path: Path, interrupt: Callable[[CustodyCloud], None]
) -> None:
    # Which files would open after the interruption (the operator's choices)?
    probe = rotated(tmp_path / "probe")
    interrupt(probe)
    choices = [index for index, data in enumerate(probe.stored) if opens(probe, data)]
    assert choices  # the vault can always be restarted on something
    for choice in choices:
        # Each choice on a cloud of its own, interrupted the same way.
        cloud = rotated(tmp_path / f"choice-{choice}")
        interrupt(cloud)
        retire_then_restore_every_file(cloud, cloud.stored[choice])
