"""Machines that boot Mantle releases, for the release-counter attack tests.

A machine is a TPM and the node's state directory that goes with it, plus the
powers of the machine's owner (root, holding the TPM owner authorisation):
reboot, undefine the release counter, define one of their own. Two kinds:

* ``simulated``: the simulated NitroTPM, whose counters follow the TPM 2.0
  rules as swtpm shows them;
* ``swtpm``: the tpm2-pytss device backend on a real TPM 2.0 implementation
  (libtpms), the owner acting through its own ESAPI connection with owner
  authorisation, as ``tpm2_nvundefine`` would.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import pytest
from _release_kit import NOW, ReleaseFiles, ReleaseKit
from _swtpm import (
    Swtpm,
    owner_define_counter,
    owner_undefine,
    power_on_image,
    read_nv_public,
    require_swtpm,
)

from actors.seams.tpm import TPM
from nodes.boot import BootedNode, BootError, measured_boot
from nodes.random import SystemRandom
from protocol.measurement import APPLICATION_PCRS, PCR_RESET_VALUE, RELEASE_COUNTER
from simulations.clock import ManualClock
from simulations.nitrotpm import SimulatedNitroTPM

if TYPE_CHECKING:
    from nodes.tpm import TpmDeviceBackend

os.environ.setdefault("TSS2_LOG", "all+NONE")

WEIGHTS = b"GGUF" + bytes(range(256)) * 4
MODEL = "smol"


class Machine(Protocol):
    kind: str
    state_dir: Path

    @property
    def tpm(self) -> TPM: ...

    def reboot(self) -> None: ...

    def owner_undefine_release_counter(self) -> None: ...

    def owner_define_release_counter(self) -> None:
        """Define a counter at the release counter's number, as tpm2-tools would."""
        ...

    def owner_read_release_counter(self) -> int:
        """The value at the release counter's handle, whoever defined it."""
        ...


class SimulatedMachine:
    kind = "simulated"

    def __init__(self, root: Path) -> None:
        self._tpm = SimulatedNitroTPM.from_seed(
            "counter-attack", clock=ManualClock(int(NOW.timestamp() * 1000))
        )
        self.state_dir = root / "node-state"

    @property
    def tpm(self) -> TPM:
        return self._tpm

    def reboot(self) -> None:
        self._tpm.reboot()

    def owner_undefine_release_counter(self) -> None:
        self._tpm.owner_undefine_counter(RELEASE_COUNTER)

    def owner_define_release_counter(self) -> None:
        self._tpm.counter_define(RELEASE_COUNTER)

    def owner_read_release_counter(self) -> int:
        return self._tpm.counter_read(RELEASE_COUNTER)


class SwtpmMachine:
    kind = "swtpm"

    def __init__(self, root: Path) -> None:
        require_swtpm()
        self._swtpm = Swtpm(root / "swtpm")
        self._swtpm.start()
        self._backend: TpmDeviceBackend | None = self._open()
        self.state_dir = root / "node-state"

    def _open(self) -> TpmDeviceBackend:
        from nodes.tpm import TpmDeviceBackend

        backend = TpmDeviceBackend(self._swtpm.tcti)
        power_on_image(backend)  # the machine's firmware boots the released image
        return backend

    @property
    def tpm(self) -> TPM:
        assert self._backend is not None
        return self._backend

    @property
    def nv_index(self) -> int:
        from nodes.tpm._device import COUNTER_NV_BASE

        return COUNTER_NV_BASE + RELEASE_COUNTER

    def reboot(self) -> None:
        # swtpm starts with TPM2_Startup(CLEAR): PCRs reset, NV (counters) kept.
        self.close()
        self._swtpm.start()
        self._backend = self._open()

    def owner_undefine_release_counter(self) -> None:
        owner_undefine(self._swtpm.tcti, self.nv_index)

    def owner_define_release_counter(self, *, initialise: bool = True) -> None:
        owner_define_counter(self._swtpm.tcti, self.nv_index, initialise=initialise)

    def owner_read_release_counter(self) -> int:
        from tpm2_pytss import ESAPI

        with ESAPI(self._swtpm.tcti) as esapi:
            nv = esapi.tr_from_tpmpublic(self.nv_index)
            return int.from_bytes(bytes(esapi.nv_read(nv, 8)), "big")

    def owner_copy_release_counter(self) -> None:
        """Delete the counter and define its public area again, byte for byte."""
        public = read_nv_public(self._swtpm.tcti, self.nv_index)
        owner_undefine(self._swtpm.tcti, self.nv_index)
        owner_define_counter(self._swtpm.tcti, self.nv_index, copy_of=public)

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None
        self._swtpm.stop()


#: Every kind of machine the attack tests run on.
MACHINE_KINDS = ("simulated", "swtpm")


@contextmanager
def open_machine(kind: str, root: Path) -> Iterator[SimulatedMachine | SwtpmMachine]:
    """A fresh machine of ``kind`` under ``root``; swtpm stopped afterwards."""
    if kind == "simulated":
        yield SimulatedMachine(root)
        return
    opened = SwtpmMachine(root)
    try:
        yield opened
    finally:
        opened.close()


def boot(machine: Machine, kit: ReleaseKit, files: ReleaseFiles) -> BootedNode:
    inputs = kit.boot_inputs(files, MODEL, machine.state_dir)
    return measured_boot(inputs, tpm=machine.tpm, random=SystemRandom(), now=NOW)


def refused(machine: Machine, kit: ReleaseKit, files: ReleaseFiles) -> BootError:
    """The BootError booting ``files`` raises; the TPM's application PCRs stay at reset."""
    with pytest.raises(BootError) as caught:
        boot(machine, kit, files)
    for index in APPLICATION_PCRS:
        assert machine.tpm.pcr_read(index) == PCR_RESET_VALUE
    return caught.value


def publish(kit: ReleaseKit, version: int) -> ReleaseFiles:
    return kit.publish(version, models={MODEL: WEIGHTS}, expires=NOW + timedelta(days=30))
