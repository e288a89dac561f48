"""Attack: remove or rewrite the node's record of its release counter.

The binding (the counter's NV name, in the node's state directory) is the
node's memory of which counter it defined. Root can delete or rewrite it; it
is not authenticated (sealing would not authenticate it either: an owner can
create sealed objects under any PCR policy). What an attacker gains is nothing
but a refused boot: a counter without its binding is ``counter_binding_missing``,
a garbled one ``counter_binding_malformed``, another counter's binding
``counter_recreated``; boot advances nothing and measures nothing. (Deleting
the counter too makes the node look new; see test_owner_deletes_release_counter:
its fresh counter starts above the deleted one.)
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from _counter_machines import Machine, boot, publish, refused
from _release_kit import ReleaseKit

from actors.counter_guard import CounterBinding
from nodes.boot import RELEASE_COUNTER_BINDING, BootCheck
from protocol.measurement import RELEASE_COUNTER


def booted_once(machine: Machine, kit: ReleaseKit) -> Path:
    """Boot release 5, reboot, and return where the binding lives."""
    boot(machine, kit, publish(kit, 5))
    machine.reboot()
    binding = machine.state_dir / RELEASE_COUNTER_BINDING
    assert binding.is_file()
    return binding


def test_removed_binding_stops_boot(machine: Machine, kit: ReleaseKit) -> None:
    booted_once(machine, kit).unlink()
    for version in (4, 5, 6):
        error = refused(machine, kit, publish(kit, version))
        assert error.check is BootCheck.COUNTER_BINDING_MISSING
        assert "no record of defining it" in str(error)
    # Neither advanced nor replaced, and no new binding was written.
    assert machine.tpm.counter_read(RELEASE_COUNTER) == 5
    assert not (machine.state_dir / RELEASE_COUNTER_BINDING).exists()


def test_removed_state_directory_stops_boot(machine: Machine, kit: ReleaseKit) -> None:
    binding = booted_once(machine, kit)
    binding.unlink()
    binding.parent.rmdir()
    assert refused(machine, kit, publish(kit, 5)).check is BootCheck.COUNTER_BINDING_MISSING


@pytest.mark.parametrize(
    "garbled",
    [b"", b"\x00" * 47, b"MNTLCTR\x01" + b"\xff" * 100, b"not a binding"],
    ids=["empty", "zeros", "overlong", "text"],
)
def test_garbled_binding_stops_boot(machine: Machine, kit: ReleaseKit, garbled: bytes) -> None:
    booted_once(machine, kit).write_bytes(garbled)
    error = refused(machine, kit, publish(kit, 5))
    assert error.check is BootCheck.COUNTER_BINDING_MALFORMED
    assert machine.tpm.counter_read(RELEASE_COUNTER) == 5


def test_binding_of_another_counter_stops_boot(machine: Machine, kit: ReleaseKit) -> None:
    # What the owner could copy from another machine: a well-formed binding
    # naming a counter this TPM does not hold.
    elsewhere = CounterBinding(
        RELEASE_COUNTER, b"\x00\x0b" + hashlib.sha256(b"another machine").digest()
    )
    booted_once(machine, kit).write_bytes(elsewhere.encode())
    error = refused(machine, kit, publish(kit, 6))
    assert error.check is BootCheck.COUNTER_RECREATED
    assert machine.tpm.counter_read(RELEASE_COUNTER) == 5
