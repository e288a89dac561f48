"""Attack: the TPM owner deletes the release counter to boot an older release.

Issue 8, finding 4 (reproduced on swtpm): the owner undefines the NV release
counter; boot read a missing counter as 0 and accepted release 4 on a node that
had run release 5; its increment then re-created the counter, which the TPM
starts above every count a deleted counter held (6 here), so the legitimate
release 5 was refused as a rollback from then on.

Now, on the simulated TPM and on swtpm alike:

* with the node's binding in place, every boot stops at ``counter_missing``
  before anything is measured, release 4 and release 5 alike, and boot
  neither defines nor advances a counter: nothing boot does locks release 5
  out, and the counter stays deleted until the operator decides;
* if the owner deletes the binding as well, the node looks new: boot defines a
  counter, the TPM starts it at 6 (one above the deleted 5), and releases 4
  and 5 are refused as ``rollback`` before anything is measured; release 6
  boots. Deleting the counter buys the owner a node that needs a newer release
  (a denial of service, which root has anyway), never a rollback.
"""

from __future__ import annotations

import pytest
from _counter_machines import (
    Machine,
    boot,
    publish,
    refused,
)
from _release_kit import ReleaseKit

from actors.seams.tpm import CounterMissing
from nodes.boot import RELEASE_COUNTER_BINDING, BootCheck
from protocol.measurement import RELEASE_COUNTER


def test_old_release_is_refused_after_the_owner_deletes_the_counter(
    machine: Machine,
    kit: ReleaseKit,
) -> None:
    newer, older = publish(kit, 5), publish(kit, 4)
    boot(machine, kit, newer)
    assert machine.tpm.counter_read(RELEASE_COUNTER) == 5

    machine.reboot()
    machine.owner_undefine_release_counter()

    error = refused(machine, kit, older)
    assert error.check is BootCheck.COUNTER_MISSING
    assert "deleted" in str(error)
    # Boot re-created nothing: no counter for a later increment to inherit.
    with pytest.raises(CounterMissing):
        machine.tpm.counter_read(RELEASE_COUNTER)

    # The newer release is refused the same way, by name, not as a rollback
    # from a counter boot itself re-created.
    assert refused(machine, kit, newer).check is BootCheck.COUNTER_MISSING
    with pytest.raises(CounterMissing):
        machine.tpm.counter_read(RELEASE_COUNTER)


def test_deleting_counter_and_binding_still_refuses_old_releases(
    machine: Machine,
    kit: ReleaseKit,
) -> None:
    boot(machine, kit, publish(kit, 5))
    machine.reboot()
    machine.owner_undefine_release_counter()
    (machine.state_dir / RELEASE_COUNTER_BINDING).unlink(missing_ok=True)

    # The node looks new; its fresh counter starts above the deleted one's 5.
    error = refused(machine, kit, publish(kit, 4))
    assert error.check is BootCheck.ROLLBACK
    assert "release version 4 is lower than this TPM's release counter 6" in str(error)
    assert machine.tpm.counter_read(RELEASE_COUNTER) == 6

    # Precisely what the owner's deletion costs: release 5 no longer boots on
    # this TPM either; the next release does.
    assert refused(machine, kit, publish(kit, 5)).check is BootCheck.ROLLBACK
    boot(machine, kit, publish(kit, 6))
    assert machine.tpm.counter_read(RELEASE_COUNTER) == 6
