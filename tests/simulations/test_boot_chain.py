"""The simulated boot chain: node images measured into PCRs 0-7 and 12 at power-on."""

from __future__ import annotations

import hashlib

from nodes.release import running_source_manifest
from protocol.measurement import APPLICATION_PCRS, PLATFORM_PCRS, parse_image_measurements
from simulations.clock import ManualClock
from simulations.nitrotpm import (
    NodeImage,
    NvState,
    SimulatedNitroTPM,
    boot_chain_events,
    development_image,
    firmware_pcrs,
    image_measurements_file,
    reference_measurements,
    reset_value,
    running_image,
)

OTHER = hashlib.sha384(b"other").digest()


def _tpm(image: NodeImage | None = None) -> SimulatedNitroTPM:
    return SimulatedNitroTPM.from_seed("chain", clock=ManualClock(0), image=image)


def test_reference_measurements_are_what_a_booted_tpm_shows() -> None:
    tpm = _tpm()
    assert tpm.image == running_image()
    reference = reference_measurements(tpm.image)
    assert set(reference) == set(PLATFORM_PCRS)
    for index, value in reference.items():
        assert tpm.pcr_read(index) == value
    assert dict(parse_image_measurements(image_measurements_file(tpm.image))) == reference


def test_firmware_writes_only_0_to_7_and_12() -> None:
    written = {index for index, _ in boot_chain_events(running_image())}
    assert written == {*range(8), 12}
    values = firmware_pcrs(running_image())
    for index in set(range(24)) - written:
        assert values[index] == reset_value(index)
    assert not written & set(APPLICATION_PCRS)


def test_each_image_field_moves_exactly_its_register() -> None:
    base = running_image()
    variants = {
        4: NodeImage(OTHER, base.secure_boot_policy_digest, base.command_line_digest),
        7: NodeImage(base.uki_digest, OTHER, base.command_line_digest),
        12: NodeImage(base.uki_digest, base.secure_boot_policy_digest, OTHER),
    }
    before = firmware_pcrs(base)
    for register, image in variants.items():
        after = firmware_pcrs(image)
        assert [i for i in range(24) if after[i] != before[i]] == [register]


def test_another_tree_is_another_image() -> None:
    manifest = running_source_manifest()
    assert running_image() == development_image(manifest)
    other = development_image(manifest + b"0" * 96 + b"  nodes/extra.py\n")
    assert other.uki_digest != running_image().uki_digest
    assert reference_measurements(other)[4] != reference_measurements(running_image())[4]


def test_reboot_measures_the_image_again_and_keeps_nv_state() -> None:
    nv = NvState()
    tpm = SimulatedNitroTPM.from_seed("chain", clock=ManualClock(0), nv=nv)
    booted = [tpm.pcr_read(index) for index in range(24)]
    tpm.pcr_extend(4, OTHER)
    tpm.pcr_extend(APPLICATION_PCRS[0], OTHER)
    draws = nv.random_draws
    tpm.random_bytes(8)
    tpm.reboot()
    assert [tpm.pcr_read(index) for index in range(24)] == booted
    assert nv.random_draws == draws + 1
    # The same machine started on another image shows that image.
    other = SimulatedNitroTPM.from_seed(
        "chain", clock=ManualClock(0), nv=nv, image=development_image(b"x")
    )
    assert other.pcr_read(4) != booted[4]
    assert other.pcr_read(0) == booted[0]
