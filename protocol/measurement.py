"""What a booting node measures, and the PCR values that result (ARCHITECTURE §7).

One function, :func:`expected_pcrs`, turns a release's three digests into the
values of the application PCRs. A node uses it (through :func:`boot_extends`)
to know what to extend at boot; a client or a ``keys`` node uses it to know
what an honest node on that release must attest. Because both sides run the
same code, a release in the transparency log maps to exactly one policy entry.

Which PCRs
----------
A NitroTPM is a TPM 2.0 with a SHA-384 bank of 24 PCRs, laid out per the TCG
PC Client profile (and AWS's NitroTPM documentation):

* 0-7   firmware, option ROMs, boot manager code (PCR 4), Secure Boot policy
        (PCR 7) -- written by the platform before the OS runs;
* 8-15  "defined for use by the static operating system": never resettable
        (only a platform reset returns them to zero). Linux conventions claim
        several: GRUB measures into 8 and 9, the kernel measures the initrd
        into 9, IMA uses 10, systemd-stub/systemd-pcrphase use 11, the UKI's
        command line and credentials go to 12, system extensions to 13, shim's
        MOK lists to 14, and systemd-pcrmachine/pcrfs measure the machine id
        and file systems into 15;
* 16    debug: resettable by any software at locality 0, so worthless;
* 17-22 dynamic root of trust (DRTM): read 0xff.. until a late launch and are
        reset at higher localities;
* 23    "application support": resettable at locality 0, so worthless.

A measurement is only worth something in a register that software cannot
reset: a resettable register can be reset and re-extended with the digests of
a release the machine is not running. That leaves 8-15. Of those, 8-11 are
written on every Linux boot path a Mantle node image uses (boot loader,
kernel, IMA, the UKI stub) and 15 would carry the per-machine id, which makes
its value differ per machine. The node image boots a UKI with its command
line built in and with no shim and no system extensions, so 12, 13 and 14
reach user space at their reset value (all zeros, as the genuine NitroTPM
documents in ``tests/data/nitro/nitrotpm`` show). Mantle takes them:

* PCR 12 -- the release digest (SHA-384 of the verified release metadata);
* PCR 13 -- the model digest (SHA-384 of the GGUF the node will load, or
            :data:`NO_MODEL_DIGEST` on nodes that serve no model);
* PCR 14 -- the config digest (SHA-384 of the release's cluster config).

Boot refuses to continue if any of them is not at its reset value, so an
image that did write them (a shim, a sysext) fails loudly instead of
attesting values no policy contains. The boot chain itself (PCR 4 or 7 on an
attestable AMI) belongs in the attestation policy too; :func:`policy_from_releases`
pins those in every entry.

Each digest is extended once, wrapped in a domain-separated event digest
(:func:`event_digest`), so a value extended for another purpose can never be
read as a Mantle measurement.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from protocol.attestation import PcrPolicy, PcrRelease

if TYPE_CHECKING:
    from protocol.release import VerifiedRelease

DIGEST_SIZE: Final = 48  # SHA-384, the NitroTPM bank

RELEASE_PCR: Final = 12
MODEL_PCR: Final = 13
CONFIG_PCR: Final = 14
APPLICATION_PCRS: Final = (RELEASE_PCR, MODEL_PCR, CONFIG_PCR)

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

# Nodes without a model (ingress, keys) still extend PCR 13, with this value:
# an untouched register could later be extended by anything running then.
NO_MODEL_DIGEST: Final = hashlib.sha384(b"mantle/no-model/v1").digest()


class MeasurementError(ValueError):
    """A digest or PCR value has the wrong shape."""


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
    try:
        label = _EVENT_LABELS[pcr_index]
    except KeyError:
        raise MeasurementError(f"PCR {pcr_index} is not an application PCR") from None
    return hashlib.sha384(label + _check_digest("digest", digest)).digest()


@dataclass(frozen=True)
class ReleaseMeasurement:
    """The three digests a node on one release (serving one model) measures."""

    release_digest: bytes
    model_digest: bytes
    config_digest: bytes

    def __post_init__(self) -> None:
        _check_digest("release digest", self.release_digest)
        _check_digest("model digest", self.model_digest)
        _check_digest("config digest", self.config_digest)

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
    measurement = ReleaseMeasurement(release_digest, model_digest, config_digest)
    values = {
        index: pcr_extend_value(PCR_RESET_VALUE, extended)
        for index, extended in boot_extends(measurement)
    }
    return MappingProxyType(values)


def expected_pcrs_for(measurement: ReleaseMeasurement) -> Mapping[int, bytes]:
    return expected_pcrs(
        measurement.release_digest, measurement.model_digest, measurement.config_digest
    )


# Release artifact names the measurement reads. The config artifact is the
# release's cluster-wide configuration (per-node settings such as addresses
# are not measured: they would give every node a different PCR 14). A model
# artifact lists the *plaintext* GGUF (length and SHA-384): that is the model
# identity PCR 13 commits to, stable across data-key rotations, and the model
# loader refuses decrypted weights whose digest differs.
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


def release_measurement(release: VerifiedRelease, model_id: str | None) -> ReleaseMeasurement:
    """What a node on ``release`` serving ``model_id`` (or no model) measures."""
    model_digest = (
        NO_MODEL_DIGEST
        if model_id is None
        else _artifact_digest(release, model_artifact_name(model_id))
    )
    return ReleaseMeasurement(
        release_digest=release.release_digest,
        model_digest=model_digest,
        config_digest=_artifact_digest(release, CONFIG_ARTIFACT),
    )


def release_measurements(release: VerifiedRelease) -> Mapping[str, ReleaseMeasurement]:
    """Every measurement an honest node on ``release`` can have, by policy entry name:
    ``"v<version>"`` for a node without a model, ``"v<version>/<model>"`` per model."""
    named = {f"v{release.version}": release_measurement(release, None)}
    for model_id in release_models(release):
        named[f"v{release.version}/{model_id}"] = release_measurement(release, model_id)
    return MappingProxyType(named)


def policy_from_releases(
    measurements: Mapping[str, ReleaseMeasurement],
    *,
    platform_pcrs: Mapping[int, bytes] | None = None,
) -> PcrPolicy:
    """The attestation verifier's PCR policy accepting exactly these measurements.

    A document passes if it matches ALL pinned registers of ANY one entry. (Per-
    index sets of allowed values would accept a mix of two releases' registers
    -- release A's code with release B's model -- which no honest node shows.)
    ``platform_pcrs`` (e.g. PCR 4 of the attestable node image) are pinned in
    every entry; they must not name an application PCR.
    """
    platform = dict(platform_pcrs or {})
    for index, value in platform.items():
        if index in APPLICATION_PCRS:
            raise MeasurementError(f"PCR {index} is an application PCR, not a platform PCR")
        if not 0 <= index < 24:
            raise MeasurementError(f"PCR {index} does not exist")
        _check_digest(f"PCR {index} value", value)
    if not measurements:
        raise MeasurementError("a policy needs at least one release measurement")
    return PcrPolicy(
        releases=tuple(
            PcrRelease.from_mapping(name, {**platform, **expected_pcrs_for(measurement)})
            for name, measurement in sorted(measurements.items())
        )
    )


def model_policy(
    releases: Iterable[VerifiedRelease],
    model_id: str,
    *,
    platform_pcrs: Mapping[int, bytes] | None = None,
) -> PcrPolicy | None:
    """The key policy for ``model_id``: nodes on a given (logged) release serving it.

    ``None`` if no release lists the model -- its key goes to nobody.
    """
    named = {
        f"v{release.version}/{model_id}": release_measurement(release, model_id)
        for release in releases
        if model_artifact_name(model_id) in release.artifacts
    }
    if not named:
        return None
    return policy_from_releases(named, platform_pcrs=platform_pcrs)


def cluster_policy(
    releases: Iterable[VerifiedRelease], *, platform_pcrs: Mapping[int, bytes] | None = None
) -> PcrPolicy:
    """The policy for any node of these (logged) releases, with or without a model."""
    named: dict[str, ReleaseMeasurement] = {}
    for release in releases:
        named.update(release_measurements(release))
    return policy_from_releases(named, platform_pcrs=platform_pcrs)
