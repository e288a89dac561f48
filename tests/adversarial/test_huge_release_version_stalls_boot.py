"""Attack: a release signed with an enormous version stalls boot.

Boot raises the release counter to the release's version one increment at a
time (a TPM counter has no "set"). The old code looped until it got there, so
a release signed as version 10**9 (a signers' slip, or a signing threshold
turned against the fleet) kept every node booting it in an NV-write loop for
weeks. Now a release more than ``MAX_RELEASE_ADVANCE`` above the counter is
refused (``version_jump``) before anything is advanced or measured.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _release_kit import NOW, ReleaseKit

from nodes.boot import MAX_RELEASE_ADVANCE, BootCheck, BootError, measured_boot
from nodes.random import SystemRandom
from protocol.measurement import APPLICATION_PCRS, PCR_RESET_VALUE, RELEASE_COUNTER
from simulations.clock import ManualClock
from simulations.nitrotpm import SimulatedNitroTPM

MODEL = "smol"
WEIGHTS = b"GGUF" + bytes(64)


class _CountedIncrements:
    """The TPM, failing the test once boot increments past the cap (instead of
    letting a stalled boot run for weeks)."""

    def __init__(self, tpm: SimulatedNitroTPM) -> None:
        self._tpm = tpm
        self.increments = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._tpm, name)

    def counter_increment(self, counter: int, **named: bytes | None) -> int:
        self.increments += 1
        if self.increments > MAX_RELEASE_ADVANCE:
            pytest.fail("boot kept incrementing the release counter past the cap")
        return self._tpm.counter_increment(counter, **named)


@pytest.mark.parametrize("version", [MAX_RELEASE_ADVANCE + 2, 10**9, 2**63])
def test_release_far_above_the_counter_is_refused(tmp_path: Path, version: int) -> None:
    kit = ReleaseKit(install_root=tmp_path / "install")
    tpm = SimulatedNitroTPM.from_seed(
        "huge-version", clock=ManualClock(int(NOW.timestamp() * 1000))
    )
    counted = _CountedIncrements(tpm)
    files = kit.publish(version, models={MODEL: WEIGHTS})
    with pytest.raises(BootError) as caught:
        measured_boot(
            kit.boot_inputs(files, MODEL, kit.node_state_dir(tpm)),
            tpm=counted,  # type: ignore[arg-type]
            random=SystemRandom(),
            now=NOW,
        )
    assert caught.value.check is BootCheck.VERSION_JUMP
    assert f"more than {MAX_RELEASE_ADVANCE} above" in str(caught.value)
    assert counted.increments == 0
    assert tpm.counter_read(RELEASE_COUNTER) == 1  # defined at first boot, never advanced
    for index in APPLICATION_PCRS:
        assert tpm.pcr_read(index) == PCR_RESET_VALUE


def test_a_release_at_the_cap_boots(tmp_path: Path) -> None:
    kit = ReleaseKit(install_root=tmp_path / "install")
    tpm = SimulatedNitroTPM.from_seed("at-the-cap", clock=ManualClock(int(NOW.timestamp() * 1000)))
    files = kit.publish(1 + MAX_RELEASE_ADVANCE, models={MODEL: WEIGHTS})
    measured_boot(
        kit.boot_inputs(files, MODEL, kit.node_state_dir(tpm)),
        tpm=tpm,
        random=SystemRandom(),
        now=NOW,
    )
    assert tpm.counter_read(RELEASE_COUNTER) == 1 + MAX_RELEASE_ADVANCE
