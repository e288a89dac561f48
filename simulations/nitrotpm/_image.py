"""The simulated boot chain: a node image, and what the firmware measures of it.

An EC2 instance launched from an attestable AMI shows its image in three
registers before any of its code runs: PCR 4 (boot manager code: the Unified
Kernel Image), PCR 7 (the UEFI Secure Boot policy) and PCR 12 (the command line
passed to the UKI). AWS's ``nitro-tpm-pcr-compute`` computes their reference
values from the image at build time, and Mantle releases list that output.

Here a :class:`NodeImage` stands for such an image by the three digests the
firmware and the boot stub measure, and :func:`firmware_pcrs` is the simulated
firmware: the value of every register after power-on, before the OS runs. The
simulated NitroTPM starts every boot from it, and :func:`reference_measurements`
(what ``nitro-tpm-pcr-compute`` prints) reads PCR 4, 7 and 12 from the same
function, so a release built for an image matches exactly the nodes that boot it.

Simulated event sequence, a simplified TCG PC Client log (digests SHA-384):

* PCR 0: the firmware measures itself (:data:`FIRMWARE_MEASUREMENT`); constant,
  as AWS keeps PCR 0 and 1 constant;
* PCR 1: the firmware's configuration, then a separator;
* PCR 2, 3, 5, 6: a separator only (no option ROMs, no extra boot variables);
* PCR 4: the ``EV_EFI_ACTION`` "Calling EFI Application from Boot Option", a
  separator, then the UKI (``EV_EFI_BOOT_SERVICES_APPLICATION``, its digest);
* PCR 7: the Secure Boot policy (the ``SecureBoot``/PK/KEK/db/dbx variables,
  as one digest), then a separator;
* PCR 12: the command line passed to the UKI (systemd-stub's measurement).

In development and tests the image is derived from the code that runs
(:func:`development_image`): the simulated UKI commits to the source manifest
of the installed Mantle packages, as a real one commits (through the dm-verity
root hash on its command line) to the root file system holding them. A node
started from a different tree attests a different PCR 4.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from protocol.measurement import PLATFORM_PCRS, encode_image_measurements, pcr_extend_value

PCR_COUNT: Final = 24
_DIGEST_SIZE: Final = 48

#: What the simulated firmware extends into PCR0 at every boot.
FIRMWARE_MEASUREMENT: Final = hashlib.sha384(b"mantle-sim/nitrotpm/firmware/v1").digest()
#: The simulated firmware's configuration (PCR 1).
FIRMWARE_CONFIG_MEASUREMENT: Final = hashlib.sha384(
    b"mantle-sim/nitrotpm/firmware-config/v1"
).digest()
#: TCG ``EV_SEPARATOR``: the digest of four zero bytes.
SEPARATOR_MEASUREMENT: Final = hashlib.sha384(bytes(4)).digest()
#: TCG ``EV_EFI_ACTION`` measured into PCR 4 before the boot application.
CALLING_EFI_APPLICATION: Final = hashlib.sha384(
    b"Calling EFI Application from Boot Option"
).digest()
#: The Secure Boot policy of development images (Secure Boot off, default keys).
DEVELOPMENT_SECURE_BOOT_POLICY: Final = hashlib.sha384(
    b"mantle-sim/secure-boot-policy/v1\x00disabled"
).digest()


def reset_value(index: int) -> bytes:
    """A PCR's value after a platform reset (TCG PC client, as NitroTPM reports)."""
    return b"\xff" * _DIGEST_SIZE if 17 <= index <= 22 else bytes(_DIGEST_SIZE)


@dataclass(frozen=True, slots=True)
class NodeImage:
    """A node image, by the digests the boot chain measures of it."""

    #: Digest of the Unified Kernel Image (PCR 4, boot manager code).
    uki_digest: bytes
    #: Digest of the UEFI Secure Boot policy (PCR 7).
    secure_boot_policy_digest: bytes
    #: Digest of the command line passed to the UKI (PCR 12).
    command_line_digest: bytes

    def __post_init__(self) -> None:
        for name in ("uki_digest", "secure_boot_policy_digest", "command_line_digest"):
            value = getattr(self, name)
            if type(value) is not bytes or len(value) != _DIGEST_SIZE:
                raise ValueError(f"{name} is a 48-byte SHA-384 digest")


def boot_chain_events(image: NodeImage) -> tuple[tuple[int, bytes], ...]:
    """The ``(pcr, digest)`` extends the simulated firmware makes, in order."""
    separators = tuple((index, SEPARATOR_MEASUREMENT) for index in (2, 3, 5, 6))
    return (
        (0, FIRMWARE_MEASUREMENT),
        (1, FIRMWARE_CONFIG_MEASUREMENT),
        (1, SEPARATOR_MEASUREMENT),
        *separators,
        (7, image.secure_boot_policy_digest),
        (7, SEPARATOR_MEASUREMENT),
        (4, CALLING_EFI_APPLICATION),
        (4, SEPARATOR_MEASUREMENT),
        (4, image.uki_digest),
        (12, image.command_line_digest),
    )


def firmware_pcrs(image: NodeImage) -> tuple[bytes, ...]:
    """Every register after power-on with ``image``, before any node code runs."""
    values = [reset_value(index) for index in range(PCR_COUNT)]
    for index, digest in boot_chain_events(image):
        values[index] = pcr_extend_value(values[index], digest)
    return tuple(values)


def reference_measurements(image: NodeImage) -> Mapping[int, bytes]:
    """PCR 4, 7 and 12 of a node booted with ``image`` (what nitro-tpm-pcr-compute computes)."""
    values = firmware_pcrs(image)
    return {index: values[index] for index in PLATFORM_PCRS}


def image_measurements_file(image: NodeImage) -> bytes:
    """The ``nitro-tpm-pcr-compute`` JSON for ``image``: the release artifact."""
    return encode_image_measurements(reference_measurements(image))


def development_image(source_manifest: bytes) -> NodeImage:
    """The simulated image holding the Mantle tree that ``source_manifest`` lists."""
    tree = hashlib.sha384(source_manifest).digest()
    return NodeImage(
        uki_digest=hashlib.sha384(b"mantle-sim/uki/v1\x00" + tree).digest(),
        secure_boot_policy_digest=DEVELOPMENT_SECURE_BOOT_POLICY,
        command_line_digest=hashlib.sha384(
            b"mantle-sim/uki-command-line/v1\x00roothash=" + tree.hex().encode()
        ).digest(),
    )


@functools.cache
def running_image() -> NodeImage:
    """The development image of the code this process runs (computed once)."""
    # Imported here: nodes depends on simulations (the demo), not the reverse,
    # except for this one question about the running code.
    from nodes.release import running_source_manifest

    return development_image(running_source_manifest())
