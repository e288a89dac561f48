"""Attack: change the release counter while boot is running, so that boot
advances a counter it never verified.

Boot reads the counter first (the floor for verifying the release) and
advances it last. The old code re-read it at the end with missing-means-zero
and then incremented whatever stood at the handle, creating a counter if none
did: an owner deleting the counter while boot verified the release got the
node to boot and to re-create the counter itself.

Now boot verifies the counter again against its binding before advancing
(``counter_missing``, ``counter_recreated``, ``rollback`` if it rose), every
increment names the bound definition so the TPM refuses a counter swapped in
after that check (``counter_recreated``, the replacement left as it was), and
every step must add exactly one (``counter_unexpected``). Nothing is measured.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from _counter_machines import (
    MODEL,
    Machine,
    boot,
    publish,
    refused,
)
from _release_kit import NOW, ReleaseKit

import nodes.boot
from actors.seams.tpm import TPM, CounterMissing
from nodes.boot import BootCheck, BootError, measured_boot
from nodes.random import SystemRandom
from protocol.measurement import APPLICATION_PCRS, PCR_RESET_VALUE, RELEASE_COUNTER


def owner_acts_while_boot_verifies_the_release(
    monkeypatch: pytest.MonkeyPatch, action: Callable[[], None]
) -> None:
    """Run ``action`` as boot checks the installed artifacts (between steps 1 and 6)."""
    verify = nodes.boot.verify_installed_artifacts

    def verify_then_act(*args: object, **kwargs: object) -> None:
        verify(*args, **kwargs)  # type: ignore[arg-type]
        action()

    monkeypatch.setattr(nodes.boot, "verify_installed_artifacts", verify_then_act)


def test_counter_deleted_during_boot_is_neither_advanced_nor_recreated(
    machine: Machine, kit: ReleaseKit, monkeypatch: pytest.MonkeyPatch
) -> None:
    boot(machine, kit, publish(kit, 3))
    machine.reboot()
    owner_acts_while_boot_verifies_the_release(monkeypatch, machine.owner_undefine_release_counter)
    error = refused(machine, kit, publish(kit, 5))
    assert error.check is BootCheck.COUNTER_MISSING
    with pytest.raises(CounterMissing):
        machine.tpm.counter_read(RELEASE_COUNTER)


def test_counter_replaced_during_boot_is_not_advanced(
    machine: Machine, kit: ReleaseKit, monkeypatch: pytest.MonkeyPatch
) -> None:
    boot(machine, kit, publish(kit, 3))
    machine.reboot()

    def replace() -> None:
        machine.owner_undefine_release_counter()
        machine.owner_define_release_counter()

    owner_acts_while_boot_verifies_the_release(monkeypatch, replace)
    error = refused(machine, kit, publish(kit, 9))
    assert error.check is BootCheck.COUNTER_RECREATED
    # The replacement holds what the TPM initialised it to (one above the
    # deleted 3), not the release version boot would have advanced it to.
    assert machine.owner_read_release_counter() == 4


class _ReplacedBeforeTheFirstIncrement:
    """The machine's TPM, with the owner replacing the release counter in the
    last moment before boot's first increment: after every check boot makes."""

    def __init__(self, machine: Machine) -> None:
        self._machine = machine
        self.replaced = False

    def __getattr__(self, name: str) -> object:
        return getattr(self._machine.tpm, name)

    def counter_increment(self, counter: int, **named: bytes | None) -> int:
        if not self.replaced:
            self.replaced = True
            self._machine.owner_undefine_release_counter()
            self._machine.owner_define_release_counter()
        return self._machine.tpm.counter_increment(counter, **named)


def refused_through(proxy: object, machine: Machine, kit: ReleaseKit, version: int) -> BootError:
    """Boot release ``version`` with ``proxy`` standing in for the machine's TPM."""
    inputs = kit.boot_inputs(publish(kit, version), MODEL, machine.state_dir)
    with pytest.raises(BootError) as caught:
        measured_boot(inputs, tpm=proxy, random=SystemRandom(), now=NOW)  # type: ignore[arg-type]
    for index in APPLICATION_PCRS:
        assert machine.tpm.pcr_read(index) == PCR_RESET_VALUE
    return caught.value


def test_counter_replaced_after_the_last_check_is_not_advanced(
    machine: Machine, kit: ReleaseKit
) -> None:
    boot(machine, kit, publish(kit, 3))
    machine.reboot()
    proxy = _ReplacedBeforeTheFirstIncrement(machine)
    error = refused_through(proxy, machine, kit, 9)
    assert proxy.replaced
    assert error.check is BootCheck.COUNTER_RECREATED
    assert machine.owner_read_release_counter() == 4  # initialised, never advanced


class _SomeoneElseIncrements:
    """A TPM on which another process advances the counter between boot's steps."""

    def __init__(self, tpm: TPM) -> None:
        self._tpm = tpm

    def __getattr__(self, name: str) -> object:
        return getattr(self._tpm, name)

    def counter_increment(self, counter: int, **named: bytes | None) -> int:
        self._tpm.counter_increment(counter)
        return self._tpm.counter_increment(counter, **named)


def test_an_increment_that_does_not_add_one_stops_boot(machine: Machine, kit: ReleaseKit) -> None:
    boot(machine, kit, publish(kit, 3))
    machine.reboot()
    error = refused_through(_SomeoneElseIncrements(machine.tpm), machine, kit, 9)
    assert error.check is BootCheck.COUNTER_UNEXPECTED
    assert "in one increment" in str(error)
    # Boot stopped at the first step that did not add exactly one.
    assert machine.tpm.counter_read(RELEASE_COUNTER) == 5
