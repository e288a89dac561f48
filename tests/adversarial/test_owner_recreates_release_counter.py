"""Attack: the TPM owner replaces the release counter with one of their own.

The owner deletes the node's release counter and defines another at the same
handle, as ``tpm2_nvdefine`` would. Left unwritten, the old code read it as 0
(``TPM_RC_NV_UNINITIALIZED`` meant "never incremented") and booted an older
release; initialised, the old code took its value for the node's own.

Now boot compares the counter's NV name with the one this node recorded when
it defined the counter (each definition has its own name: a random
authPolicy is part of the hashed public area) and stops at
``counter_recreated``, advancing nothing. An owner who copies the public area
byte for byte gets the same name; that counter still starts above the deleted
one (the TPM's rule), so it refuses every release the node's counter refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _counter_machines import (
    Machine,
    SwtpmMachine,
    boot,
    publish,
    refused,
)
from _release_kit import ReleaseKit

from nodes.boot import BootCheck
from protocol.measurement import RELEASE_COUNTER


def test_recreated_counter_is_refused(
    machine: Machine,
    kit: ReleaseKit,
) -> None:
    newer = publish(kit, 5)
    boot(machine, kit, newer)
    machine.reboot()
    machine.owner_undefine_release_counter()
    machine.owner_define_release_counter()
    impostor = machine.owner_read_release_counter()

    # Newer, same and older releases alike: boot never adopts (and advances) it.
    for release in (publish(kit, 9), newer, publish(kit, 4)):
        error = refused(machine, kit, release)
        assert error.check is BootCheck.COUNTER_RECREATED
        assert "not the one this node defined" in str(error)
    # Boot never advanced the counter it did not define.
    assert machine.owner_read_release_counter() == impostor


@pytest.fixture
def swtpm_machine(tmp_path: Path) -> Iterator[SwtpmMachine]:
    opened = SwtpmMachine(tmp_path / "machine")
    try:
        yield opened
    finally:
        opened.close()


def test_unwritten_counter_is_not_a_zero_floor(
    swtpm_machine: SwtpmMachine,
    kit: ReleaseKit,
) -> None:
    boot(swtpm_machine, kit, publish(kit, 5))
    swtpm_machine.reboot()
    swtpm_machine.owner_undefine_release_counter()
    swtpm_machine.owner_define_release_counter(initialise=False)
    # The old code booted release 4 here: an unwritten counter read as 0.
    assert refused(swtpm_machine, kit, publish(kit, 4)).check is BootCheck.COUNTER_RECREATED


def test_copied_counter_keeps_the_name_but_not_the_value(
    swtpm_machine: SwtpmMachine,
    kit: ReleaseKit,
) -> None:
    newer = publish(kit, 5)
    boot(swtpm_machine, kit, newer)
    swtpm_machine.reboot()
    # TPM2_NV_ReadPublic needs no authorisation: the owner can copy the public
    # area, random authPolicy included, so the name matches ...
    swtpm_machine.owner_copy_release_counter()
    # ... but the TPM started the copy above the deleted counter's 5.
    assert swtpm_machine.tpm.counter_read(RELEASE_COUNTER) == 6
    error = refused(swtpm_machine, kit, publish(kit, 4))
    assert error.check is BootCheck.ROLLBACK
    assert "lower than this TPM's release counter 6" in str(error)
    assert refused(swtpm_machine, kit, newer).check is BootCheck.ROLLBACK
