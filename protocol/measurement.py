"""What a booting node measures, and the PCR values that result (docs/architecture.md §9).

A node's attestation shows two kinds of register, and a verifier pins both:

* the **platform registers** (PCR 4, 7 and 12), written by the firmware and the
  boot stub before any Mantle code runs. They name the node *image*: on an EC2
  attestable AMI, PCR 4 is the boot manager code (the Unified Kernel Image,
  whose embedded command line carries the dm-verity root hash of the read-only
  root file system that holds Mantle), PCR 7 the UEFI Secure Boot policy, and
  PCR 12 the command line passed to the UKI. A release lists the image's
  reference values exactly as AWS's ``nitro-tpm-pcr-compute`` prints them
  (:func:`parse_image_measurements`); they reach every verifier through the
  release's signed metadata (``VerifiedRelease.image_measurements``);
* the **application registers** (:data:`APPLICATION_PCRS`), which Mantle's own
  boot (``nodes/boot.py``) extends with the release, model and config digests.

Neither half is enough alone. The application registers are extended by user
space: any machine running any firmware, kernel or code can extend the
published event digests into them. The platform registers say which code runs,
but not which release, model and config it loaded. A policy entry therefore
pins both, and no policy can be built without the platform half
(:class:`MissingPlatformRegisters`).

One function, :func:`expected_pcrs`, turns a release's three digests into the
values of the application PCRs. A node uses it (through :func:`boot_extends`)
to know what to extend at boot; a client or a ``keys`` node uses it to know
what an honest node on that release must attest. Because both sides run the
same code, a release in the transparency log maps to exactly one policy entry.

Which application registers
---------------------------
A NitroTPM is a TPM 2.0 with a SHA-384 bank of 24 PCRs, laid out per the TCG
PC Client profile (and AWS's NitroTPM documentation):

* 0-7   firmware, option ROMs, boot manager code (PCR 4), Secure Boot policy
        (PCR 7) -- written by the platform before the OS runs;
* 8-15  "defined for use by the static operating system": never resettable
        (only a platform reset returns them to zero);
* 16    debug: resettable by any software at locality 0, so worthless;
* 17-22 dynamic root of trust (DRTM): reset and extended only at localities
        user space does not have;
* 23    "application support": resettable at locality 0, so worthless.

A measurement is only worth something in a register that software cannot
reset: a resettable register can be reset and re-extended with the digests of
a release the machine is not running. That leaves 8-15, and of those Mantle
must take registers that no boot path of an attestable AMI writes, or an
honest node would find them already extended. Who writes what:

* 9  -- the kernel's EFI stub measures the initrd (GRUB also uses it);
* 10 -- IMA;
* 11 -- systemd-stub measures the UKI's sections, systemd-pcrphase the boot
        phases: written on every UKI boot;
* 12 -- systemd-stub measures the command line and credentials passed to the
        UKI: AWS validates attestable AMIs with it (together with PCR 4), so
        it is a platform register and pinned from the release's image;
* 15 -- systemd-pcrmachine / systemd-pcrfs / systemd-cryptsetup (machine id,
        file systems, volume keys) on UKI boots with newer systemd, and per
        machine, so never a fleet-wide value;
* 8  -- GRUB's command lines, and systemd-stub before systemd 251 (its
        "compatibility" copy of PCR 12). An attestable AMI boots a UKI without
        GRUB, on a newer systemd;
* 13 -- systemd-stub measures system-extension images it finds next to the
        UKI; the node image ships none;
* 14 -- shim's MOK lists; an attestable AMI boots without shim.

So Mantle takes 8, 13 and 14:

* PCR 8  -- the release digest (SHA-384 of the verified release metadata);
* PCR 13 -- the model digest (SHA-384 of the GGUF the node will load, or
            :data:`NO_MODEL_DIGEST` on nodes that serve no model);
* PCR 14 -- the config digest (SHA-384 of the release's cluster config).

Boot refuses to continue if any of them is not at its reset value, so an image
that did write them (a GRUB boot -- the genuine NitroTPM documents in
``tests/data/nitro/nitrotpm`` come from one and show PCR 8 extended -- a sysext
dropped next to the UKI, a shim) fails loudly instead of attesting values no
policy contains. The same check is what makes the platform registers bind the
application ones: on the pinned image the only code that runs is Mantle's, and
it extends each register once, from reset.

Each digest is extended once, wrapped in a domain-separated event digest
(:func:`event_digest`), so a value extended for another purpose can never be
read as a Mantle measurement.

Release floor
-------------
The release signers publish the cluster's minimum version in each release's
signed targets metadata (``VerifiedRelease.min_version``). The policy builders
here take the highest floor among the releases they are given and leave out
every release below it (:func:`current_releases`), so a verifier that knows a
newer release never admits a node, nor releases a key to one, on an older one.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from protocol.attestation import PcrPolicy, PcrRelease

if TYPE_CHECKING:
    from protocol.release import VerifiedRelease

DIGEST_SIZE: Final = 48  # SHA-384, the NitroTPM bank
PCR_COUNT: Final = 24

RELEASE_PCR: Final = 8
MODEL_PCR: Final = 13
CONFIG_PCR: Final = 14
APPLICATION_PCRS: Final = (RELEASE_PCR, MODEL_PCR, CONFIG_PCR)

#: The registers that name the node image (boot manager code, Secure Boot
#: policy, UKI command line), in the order ``nitro-tpm-pcr-compute`` prints them.
PLATFORM_PCRS: Final = (4, 7, 12)

#: Every register that pins a measured node's state -- the image's platform
#: registers and Mantle's application registers -- in ascending order: what
#: every policy entry pins (:func:`require_measured`), and the state a keys
#: node's KEKs and keyring are bound to.
MEASURED_PCRS: Final = tuple(sorted((*PLATFORM_PCRS, *APPLICATION_PCRS)))

# TPM 2.0 PCRs 0-15 reset to all zeros at platform reset.
PCR_RESET_VALUE: Final = bytes(DIGEST_SIZE)

# The NV monotonic counter that holds the highest release version this TPM
# has accepted (rollback protection, I4).
RELEASE_COUNTER: Final = 0

_EVENT_LABELS: Final = {
    RELEASE_PCR: b"mantle/measure/release/v1\x00",
    MODEL_PCR: b"mantle/measure/model/v1\x00",
    CONFIG_PCR: b"mantle/measure/config/v1\x00",
}

# Nodes without a model (ingress, keys) still extend the model PCR, with this
# value: an untouched register could later be extended by anything running then.
NO_MODEL_DIGEST: Final = hashlib.sha384(b"mantle/no-model/v1").digest()


class MeasurementError(ValueError):
    """A digest or PCR value has the wrong shape."""


class ImageMeasurementsError(MeasurementError):
    """A node image's reference measurements are not the JSON that
    ``nitro-tpm-pcr-compute`` prints (see :func:`parse_image_measurements`)."""


class MissingPlatformRegisters(MeasurementError):
    """A release names no node image, so no policy may admit its nodes: the
    application registers alone can be extended by any code on any image."""


def _check_digest(name: str, digest: bytes) -> bytes:
    if not isinstance(digest, bytes) or len(digest) != DIGEST_SIZE:
        raise MeasurementError(f"{name} must be a 48-byte SHA-384 digest")
    return digest


def pcr_extend_value(old: bytes, digest: bytes) -> bytes:
    """The PCR value after extending ``old`` by ``digest``: SHA-384(old || digest)."""
    return hashlib.sha384(
        _check_digest("PCR value", old) + _check_digest("digest", digest)
    ).digest()


def event_digest(pcr_index: int, digest: bytes) -> bytes:
    """The 48-byte value extended into application PCR ``pcr_index`` for ``digest``."""
    label = _EVENT_LABELS.get(pcr_index) if type(pcr_index) is int else None
    if label is None:
        raise MeasurementError("not an application PCR")
    return hashlib.sha384(label + _check_digest("digest", digest)).digest()


# -- the node image's reference measurements ---------------------------------------------

#: The release artifact holding the image's ``nitro-tpm-pcr-compute`` output.
#: Its parsed values also travel in the artifact's TUF ``custom`` field, so a
#: verifier that holds only the metadata (a client, a keys node) pins them.
IMAGE_MEASUREMENTS_ARTIFACT: Final = "image/pcr-measurements.json"
MAX_IMAGE_MEASUREMENTS_BYTES: Final = 4096
IMAGE_HASH_ALGORITHM: Final = "SHA384"
_IMAGE_FIELDS: Final = {f"PCR{index}": index for index in PLATFORM_PCRS}
_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{96}")


def _check_platform_pcrs(pcrs: Mapping[int, bytes]) -> Mapping[int, bytes]:
    if not pcrs:
        raise MissingPlatformRegisters("no platform registers (the node image is not named)")
    if set(pcrs) != set(PLATFORM_PCRS):
        raise MeasurementError("platform registers are exactly PCR 4, 7 and 12")
    for index in PLATFORM_PCRS:
        _check_digest(f"PCR {index} value", pcrs[index])
    return MappingProxyType({index: pcrs[index] for index in PLATFORM_PCRS})


def image_measurements_from_object(document: object) -> Mapping[int, bytes]:
    """PCR 4, 7 and 12 from the decoded ``nitro-tpm-pcr-compute`` object::

        {"Measurements": {"HashAlgorithm": "SHA384", "PCR4": hex, "PCR7": hex, "PCR12": hex}}

    Exactly those keys; the algorithm is SHA384 (the NitroTPM bank); each value
    is 96 hex digits. Raises :class:`ImageMeasurementsError`.
    """
    if not isinstance(document, dict) or set(document) != {"Measurements"}:
        raise ImageMeasurementsError('image measurements are an object with one "Measurements"')
    measurements = document["Measurements"]
    if not isinstance(measurements, dict) or set(measurements) != {"HashAlgorithm", *_IMAGE_FIELDS}:
        raise ImageMeasurementsError(
            '"Measurements" holds exactly HashAlgorithm, PCR4, PCR7 and PCR12'
        )
    if measurements["HashAlgorithm"] != IMAGE_HASH_ALGORITHM:
        raise ImageMeasurementsError("image measurements must use the SHA384 bank")
    values: dict[int, bytes] = {}
    for field, index in _IMAGE_FIELDS.items():
        text = measurements[field]
        if not isinstance(text, str) or not _HEX_DIGEST.fullmatch(text):
            raise ImageMeasurementsError(f"{field} must be 96 hex digits")
        values[index] = bytes.fromhex(text)
    return _check_platform_pcrs(values)


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    mapping = dict(pairs)
    if len(mapping) != len(pairs):
        # json.loads keeps the last of duplicate keys: one value could hide another.
        raise ImageMeasurementsError("image measurements repeat a key")
    return mapping


def parse_image_measurements(data: bytes) -> Mapping[int, bytes]:
    """The platform registers from the file ``nitro-tpm-pcr-compute`` wrote."""
    if not isinstance(data, bytes) or len(data) > MAX_IMAGE_MEASUREMENTS_BYTES:
        raise ImageMeasurementsError(
            f"image measurements are at most {MAX_IMAGE_MEASUREMENTS_BYTES} bytes"
        )
    document: object = None
    decoded = False
    try:
        document = json.loads(data.decode("utf-8"), object_pairs_hook=_unique_keys)
        decoded = True
    except (UnicodeDecodeError, ValueError, RecursionError):
        pass  # ImageMeasurementsError (a ValueError) from _unique_keys lands here too
    if not decoded:
        # Raised outside the handler: the chained exception would hold the input.
        raise ImageMeasurementsError("image measurements are not a JSON object of unique keys")
    return image_measurements_from_object(document)


def image_measurements_object(pcrs: Mapping[int, bytes]) -> dict[str, dict[str, str]]:
    """The ``nitro-tpm-pcr-compute`` object for ``pcrs`` (PCR 4, 7, 12)."""
    checked = _check_platform_pcrs(pcrs)
    measurements = {"HashAlgorithm": IMAGE_HASH_ALGORITHM}
    for field, index in _IMAGE_FIELDS.items():
        measurements[field] = checked[index].hex()
    return {"Measurements": measurements}


def encode_image_measurements(pcrs: Mapping[int, bytes]) -> bytes:
    """The file ``nitro-tpm-pcr-compute`` prints for these platform registers."""
    return json.dumps(image_measurements_object(pcrs), indent=2).encode("utf-8") + b"\n"


# -- what a node on a release measures ---------------------------------------------------


@dataclass(frozen=True)
class ReleaseMeasurement:
    """What an honest node on one release (serving one model) attests: the three
    digests its boot extends, and the platform registers of the image it runs on
    (measured by the firmware and the boot stub before it)."""

    release_digest: bytes
    model_digest: bytes
    config_digest: bytes
    platform_pcrs: Mapping[int, bytes]

    def __post_init__(self) -> None:
        _check_digest("release digest", self.release_digest)
        _check_digest("model digest", self.model_digest)
        _check_digest("config digest", self.config_digest)
        object.__setattr__(self, "platform_pcrs", _check_platform_pcrs(self.platform_pcrs))

    def digest_for(self, pcr_index: int) -> bytes:
        return {
            RELEASE_PCR: self.release_digest,
            MODEL_PCR: self.model_digest,
            CONFIG_PCR: self.config_digest,
        }[pcr_index]


def boot_extends(measurement: ReleaseMeasurement) -> tuple[tuple[int, bytes], ...]:
    """The ``(pcr_index, event_digest)`` extends a node performs at boot, in order."""
    return tuple(
        (index, event_digest(index, measurement.digest_for(index))) for index in APPLICATION_PCRS
    )


def expected_pcrs(
    release_digest: bytes, model_digest: bytes, config_digest: bytes
) -> Mapping[int, bytes]:
    """The application PCR values of a node that booted this release from reset.

    Used by nodes and by verifiers alike; the mapping is read-only.
    """
    values = {}
    for index, digest in (
        (RELEASE_PCR, release_digest),
        (MODEL_PCR, model_digest),
        (CONFIG_PCR, config_digest),
    ):
        values[index] = pcr_extend_value(PCR_RESET_VALUE, event_digest(index, digest))
    return MappingProxyType(values)


def expected_pcrs_for(measurement: ReleaseMeasurement) -> Mapping[int, bytes]:
    """The application PCR values of a node with ``measurement``."""
    return expected_pcrs(
        measurement.release_digest, measurement.model_digest, measurement.config_digest
    )


def attested_pcrs(measurement: ReleaseMeasurement) -> Mapping[int, bytes]:
    """Every register a policy entry pins for ``measurement``: platform and application."""
    return MappingProxyType({**measurement.platform_pcrs, **expected_pcrs_for(measurement)})


# Release artifact names the measurement reads. The config artifact is the
# release's cluster-wide configuration (per-node settings such as addresses
# are not measured: they would give every node a different config PCR). A
# model artifact lists the *plaintext* GGUF (length and SHA-384): that is the
# model identity the model PCR commits to, stable across data-key rotations,
# and the model loader refuses decrypted weights whose digest differs.
CONFIG_ARTIFACT: Final = "config/cluster.json"
MODEL_ARTIFACT_PREFIX: Final = "models/"
MODEL_ARTIFACT_SUFFIX: Final = ".gguf"
MEASUREMENT_HASH: Final = "sha384"


def model_artifact_name(model_id: str) -> str:
    """The release artifact that names model ``model_id``'s plaintext weights."""
    return f"{MODEL_ARTIFACT_PREFIX}{model_id}{MODEL_ARTIFACT_SUFFIX}"


def _artifact_digest(release: VerifiedRelease, name: str) -> bytes:
    spec = release.artifacts.get(name)
    if spec is None:
        raise MeasurementError(f"release {release.version} lists no artifact {name!r}")
    digest = spec.hashes.get(MEASUREMENT_HASH)
    if digest is None:
        raise MeasurementError(f"release artifact {name!r} has no {MEASUREMENT_HASH} hash")
    return digest


def release_models(release: VerifiedRelease) -> tuple[str, ...]:
    """The model ids a release lists, sorted."""
    return tuple(
        sorted(
            name[len(MODEL_ARTIFACT_PREFIX) : -len(MODEL_ARTIFACT_SUFFIX)]
            for name in release.artifacts
            if name.startswith(MODEL_ARTIFACT_PREFIX) and name.endswith(MODEL_ARTIFACT_SUFFIX)
        )
    )


def release_platform_pcrs(release: VerifiedRelease) -> Mapping[int, bytes]:
    """The platform registers of the image ``release`` names; raises
    :class:`MissingPlatformRegisters` if it names none."""
    if not release.image_measurements:
        raise MissingPlatformRegisters(
            f"release {release.version} names no node image ({IMAGE_MEASUREMENTS_ARTIFACT})"
        )
    return _check_platform_pcrs(release.image_measurements)


def release_measurement(release: VerifiedRelease, model_id: str | None) -> ReleaseMeasurement:
    """What a node on ``release`` serving ``model_id`` (or no model) attests."""
    model_digest = (
        NO_MODEL_DIGEST
        if model_id is None
        else _artifact_digest(release, model_artifact_name(model_id))
    )
    return ReleaseMeasurement(
        release_digest=release.release_digest,
        model_digest=model_digest,
        config_digest=_artifact_digest(release, CONFIG_ARTIFACT),
        platform_pcrs=release_platform_pcrs(release),
    )


def release_measurements(release: VerifiedRelease) -> Mapping[str, ReleaseMeasurement]:
    """Every measurement an honest node on ``release`` can have, by policy entry name:
    ``"v<version>"`` for a node without a model, ``"v<version>/<model>"`` per model."""
    named = {f"v{release.version}": release_measurement(release, None)}
    for model_id in release_models(release):
        named[f"v{release.version}/{model_id}"] = release_measurement(release, model_id)
    return MappingProxyType(named)


def model_measurements(release: VerifiedRelease, model_id: str) -> Mapping[str, ReleaseMeasurement]:
    """The measurement of a node on ``release`` serving ``model_id`` (none if unlisted)."""
    if model_artifact_name(model_id) not in release.artifacts:
        return MappingProxyType({})
    return MappingProxyType(
        {f"v{release.version}/{model_id}": release_measurement(release, model_id)}
    )


def release_floor(releases: Iterable[VerifiedRelease]) -> int:
    """The highest minimum version the release signers published in ``releases``."""
    return max((release.min_version for release in releases), default=0)


def current_releases(releases: Iterable[VerifiedRelease]) -> tuple[VerifiedRelease, ...]:
    """``releases`` at or above the highest published floor, in the given order."""
    listed = tuple(releases)
    floor = release_floor(listed)
    return tuple(release for release in listed if release.version >= floor)


def require_measured(policy: PcrPolicy) -> PcrPolicy:
    """``policy``, if every entry pins the platform and the application registers.

    The policy builders here never make anything else; this is the check at the
    places that release keys or admit a node or a prompt, for policies that come
    from elsewhere (a policy file, a caller's lookup): an entry that pins only
    the application registers admits any machine, on any image, that extended
    the published event digests. :class:`MissingPlatformRegisters` otherwise.
    """
    required = set(MEASURED_PCRS)
    for entry in policy.releases:
        if not required <= {index for index, _ in entry.pcrs}:
            raise MissingPlatformRegisters(
                "a policy entry does not pin both the node image's platform registers"
                f" (PCR {', '.join(map(str, PLATFORM_PCRS))}) and Mantle's application"
                f" registers (PCR {', '.join(map(str, APPLICATION_PCRS))})"
            )
    return policy


def policy_from_measurements(measurements: Mapping[str, ReleaseMeasurement]) -> PcrPolicy:
    """The attestation verifier's PCR policy accepting exactly these measurements.

    A document passes if it matches ALL pinned registers of ANY one entry. (Per-
    index sets of allowed values would accept a mix of two releases' registers
    -- release A's code with release B's model -- which no honest node shows.)
    Each entry pins the platform and the application registers
    (:func:`attested_pcrs`); a :class:`ReleaseMeasurement` cannot exist without
    its platform half.
    """
    if not measurements:
        raise MeasurementError("a policy needs at least one release measurement")
    return PcrPolicy(
        releases=tuple(
            PcrRelease.from_mapping(name, attested_pcrs(measurement))
            for name, measurement in sorted(measurements.items())
        )
    )


def policy_from_releases(
    releases: Iterable[VerifiedRelease],
    entries: Callable[[VerifiedRelease], Mapping[str, ReleaseMeasurement]],
) -> PcrPolicy | None:
    """The policy admitting the ``entries`` of every current release.

    Every release given must name its node image (else
    :class:`MissingPlatformRegisters`, even for a release the floor leaves
    out: a verifier fed such a release is misconfigured). Releases below the
    highest published floor contribute nothing (:func:`current_releases`).
    ``None`` if no current release has an entry.
    """
    listed = tuple(releases)
    digests: dict[int, bytes] = {}
    for release in listed:
        release_platform_pcrs(release)
        # Entries are named by version: two different releases with one version
        # would shadow each other, and which one is admitted would depend on
        # the order the caller happened to pass them in.
        known = digests.setdefault(release.version, release.release_digest)
        if known != release.release_digest:
            raise MeasurementError(
                f"two different releases carry version {release.version}; refusing to choose"
            )
    named: dict[str, ReleaseMeasurement] = {}
    for release in current_releases(listed):
        named.update(entries(release))
    if not named:
        return None
    return policy_from_measurements(named)


def model_policy(releases: Iterable[VerifiedRelease], model_id: str) -> PcrPolicy | None:
    """The key policy for ``model_id``: nodes on a current (logged) release serving it,
    on the node image that release names.

    ``None`` if no current release lists the model -- its key goes to nobody.
    """
    return policy_from_releases(releases, lambda release: model_measurements(release, model_id))


def cluster_policy(releases: Iterable[VerifiedRelease]) -> PcrPolicy:
    """The policy for any node of the current (logged) releases, with or without a
    model, on the node image each release names."""
    policy = policy_from_releases(releases, release_measurements)
    if policy is None:
        raise MeasurementError("a policy needs at least one current release")
    return policy
