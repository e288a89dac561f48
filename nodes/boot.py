"""Measured boot (ARCHITECTURE §10 "A node boots", up to the first attestation).

In order, and nothing is changed on the TPM until every check passed:

1. read the release monotonic counter from the TPM;
2. verify the release metadata (root pinned or rotated from the pin, threshold
   of release signatures, expiry, version >= the counter);
3. verify that the release is in the transparency log (signed tree head under
   the pinned log key, inclusion proof of the release's entry);
4. verify every installed artifact against the release (length and hashes).
   Model artifacts name plaintext weights, which exist only in memory after
   the data key arrives; the model loader checks them there;
5. check the node image: the release names one (its ``nitro-tpm-pcr-compute``
   output, ``image/pcr-measurements.json``); the installed file holds exactly
   the values the signed metadata carries; and this machine's platform
   registers (PCR 4, 7, 12, written by the firmware before this code ran)
   equal them -- a node on another image would attest values no policy holds;
6. check the running code: hash every file of the installed Mantle packages
   (the directories this process imports from) and compare with the release's
   source manifest; any modified or missing file, or any unlisted ``.py``,
   ``.pyc`` or ``.so`` file, stops boot. (On EC2 the image's dm-verity root
   hash, inside the UKI that PCR 4 measures, is what makes this airtight: code
   that was changed could skip its own check, but not the measurement of the
   image it came from);
7. check that the application PCRs are at their reset value;
8. read the counter again (it may have risen since step 1: refuse as a
   rollback) and advance it to this release's version (a newer release raises
   the floor for ever; the same version leaves it alone);
9. extend the release, model and config digests into the application PCRs
   (:data:`~protocol.measurement.APPLICATION_PCRS`; see
   :mod:`protocol.measurement` for which registers and why) and read them back;
10. generate the node's Noise static key in memory and attest, binding it.

Any failure raises :class:`BootError`, whose :attr:`~BootError.check` names the
step and whose message says what was wrong, so an operator reading "boot
stopped [rollback]: ..." knows what to fix. The node does not start.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from actors.key_custody import NodeKeyCustody
from actors.seams.random import Random
from actors.seams.tpm import TPM, TPMError
from nodes.release import (
    SourceTree,
    SourceTreeError,
    verify_installed_artifacts,
    verify_source_tree,
)
from protocol.measurement import (
    APPLICATION_PCRS,
    IMAGE_MEASUREMENTS_ARTIFACT,
    MAX_IMAGE_MEASUREMENTS_BYTES,
    MODEL_ARTIFACT_PREFIX,
    PCR_RESET_VALUE,
    PLATFORM_PCRS,
    RELEASE_COUNTER,
    ImageMeasurementsError,
    MeasurementError,
    MissingPlatformRegisters,
    ReleaseMeasurement,
    boot_extends,
    expected_pcrs_for,
    model_artifact_name,
    parse_image_measurements,
    release_measurement,
)
from protocol.release import (
    ArtifactMismatch,
    BelowThreshold,
    Expired,
    MalformedRelease,
    NotInLog,
    ReleaseError,
    ReleaseLogProof,
    SourceTreeMismatch,
    UntrustedRoot,
    VerifiedRelease,
    VersionRollback,
    verify_release_in_log,
    verify_release_metadata,
)
from protocol.release._source import MAX_SOURCE_MANIFEST_BYTES, SOURCE_MANIFEST_ARTIFACT


class BootCheck(enum.StrEnum):
    """The boot step that stopped the node."""

    MALFORMED_RELEASE = "malformed_release"
    SIGNATURES = "signatures"
    UNTRUSTED_ROOT = "untrusted_root"
    EXPIRED = "expired"
    ROLLBACK = "rollback"
    NOT_IN_LOG = "not_in_log"
    ARTIFACT = "artifact"
    IMAGE = "image"
    PLATFORM_PCRS = "platform_pcrs"
    SOURCE_TREE = "source_tree"
    MODEL_NOT_IN_RELEASE = "model_not_in_release"
    PCR_STATE = "pcr_state"
    TPM = "tpm"


class BootError(Exception):
    """The node must not start; :attr:`check` names why."""

    def __init__(self, check: BootCheck, detail: str) -> None:
        self.check = check
        self.detail = detail
        super().__init__(f"boot stopped [{check.value}]: {detail}")


@dataclass(frozen=True)
class BootInputs:
    """What a node boots from.

    ``install_root`` holds the release's artifacts at their release names
    (``install_root / "config/cluster.json"`` and so on). ``model_id`` is the
    model this node serves (``None`` for ingress and keys nodes).
    """

    root_metadata: bytes
    targets_metadata: bytes
    log_proof: bytes
    trusted_root: bytes
    log_public_key: bytes
    install_root: Path
    model_id: str | None = None


@dataclass(frozen=True)
class BootedNode:
    """A node that passed measured boot."""

    release: VerifiedRelease
    measurement: ReleaseMeasurement
    pcrs: Mapping[int, bytes]
    custody: NodeKeyCustody
    #: The first attestation document, binding the node's Noise static key.
    document: bytes


def _release_failure(error: ReleaseError) -> BootError:
    # Most specific first: UnknownSigner and BadSignature are BelowThreshold.
    table: tuple[tuple[type[ReleaseError], BootCheck], ...] = (
        (VersionRollback, BootCheck.ROLLBACK),
        (Expired, BootCheck.EXPIRED),
        (BelowThreshold, BootCheck.SIGNATURES),
        (UntrustedRoot, BootCheck.UNTRUSTED_ROOT),
        (NotInLog, BootCheck.NOT_IN_LOG),
        (ArtifactMismatch, BootCheck.ARTIFACT),
        (MalformedRelease, BootCheck.MALFORMED_RELEASE),
    )
    for kind, check in table:
        if isinstance(error, kind):
            return BootError(check, str(error))
    return BootError(BootCheck.MALFORMED_RELEASE, str(error))


def _installed_artifacts(release: VerifiedRelease, install_root: Path) -> dict[str, Path]:
    return {
        name: install_root / name
        for name in release.artifacts
        if not name.startswith(MODEL_ARTIFACT_PREFIX)
    }


def verify_release(inputs: BootInputs, *, tpm: TPM, now: datetime) -> VerifiedRelease:
    """Steps 1-4: a release that may run on this TPM, or :class:`BootError`."""
    try:
        floor = tpm.counter_read(RELEASE_COUNTER)
    except TPMError as error:
        raise BootError(BootCheck.TPM, f"cannot read the release counter: {error}") from None
    try:
        release = verify_release_metadata(
            inputs.root_metadata,
            inputs.targets_metadata,
            trusted_root=inputs.trusted_root,
            now=now,
            min_version=floor,
        )
        if release.version < floor:  # belt and braces: the floor is this module's promise
            raise VersionRollback("targets", release.version, floor)
        try:
            proof = ReleaseLogProof.from_json_bytes(inputs.log_proof)
        except MalformedRelease as error:
            # Unreadable evidence is missing evidence, as `release verify` reports it.
            raise NotInLog(f"the log proof is malformed: {error}") from None
        verify_release_in_log(release, proof, inputs.log_public_key)
        verify_installed_artifacts(release, _installed_artifacts(release, inputs.install_root))
    except VersionRollback as error:
        raise BootError(
            BootCheck.ROLLBACK,
            f"release version {error.version} is lower than this TPM's release counter"
            f" {floor}; refusing to roll back",
        ) from None
    except ReleaseError as error:
        raise _release_failure(error) from None
    return release


def _read_verified_artifact(
    release: VerifiedRelease, install_root: Path, name: str, limit: int, check: BootCheck
) -> bytes:
    """The installed bytes of artifact ``name``, read once and checked against
    its signed SHA-384 (what is parsed is exactly what was hashed)."""
    spec = release.artifacts.get(name)
    if spec is None or spec.length > limit:
        raise BootError(check, f"release {release.version} lists no usable {name}")
    try:
        with (install_root / name).open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError as error:
        raise BootError(check, f"cannot read the installed {name}: {error.strerror}") from None
    expected = spec.hashes.get("sha384")
    if expected is None or not hmac.compare_digest(hashlib.sha384(data).digest(), expected):
        raise BootError(check, f"the installed {name} changed after it was verified")
    return data


def check_node_image(inputs: BootInputs, release: VerifiedRelease, *, tpm: TPM) -> None:
    """Step 5: the release names this machine's image, consistently."""
    if not release.image_measurements:
        raise BootError(
            BootCheck.IMAGE,
            f"release {release.version} names no node image ({IMAGE_MEASUREMENTS_ARTIFACT});"
            " no verifier would admit this node",
        )
    data = _read_verified_artifact(
        release,
        inputs.install_root,
        IMAGE_MEASUREMENTS_ARTIFACT,
        MAX_IMAGE_MEASUREMENTS_BYTES,
        BootCheck.IMAGE,
    )
    installed: Mapping[int, bytes] | None = None
    with contextlib.suppress(ImageMeasurementsError):  # refused below, outside the handler
        installed = parse_image_measurements(data)
    if installed is None or any(
        not hmac.compare_digest(installed[index], release.image_measurements[index])
        for index in PLATFORM_PCRS
    ):
        raise BootError(
            BootCheck.IMAGE,
            f"the installed {IMAGE_MEASUREMENTS_ARTIFACT} differs from the values"
            f" release {release.version} signed",
        )
    try:
        measured = {index: tpm.pcr_read(index) for index in PLATFORM_PCRS}
    except TPMError as error:
        raise BootError(BootCheck.TPM, f"cannot read the platform PCRs: {error}") from None
    differing = [
        index
        for index in PLATFORM_PCRS
        if not hmac.compare_digest(measured[index], release.image_measurements[index])
    ]
    if differing:
        listed = ", ".join(str(index) for index in differing)
        raise BootError(
            BootCheck.PLATFORM_PCRS,
            f"this machine did not boot the image release {release.version} names"
            f" (PCR {listed} differ from its reference measurements)",
        )


def check_source_tree(
    inputs: BootInputs, release: VerifiedRelease, source_tree: SourceTree | None
) -> int:
    """Step 6: the running code is the released code; returns the files hashed."""
    manifest = _read_verified_artifact(
        release,
        inputs.install_root,
        SOURCE_MANIFEST_ARTIFACT,
        MAX_SOURCE_MANIFEST_BYTES,
        BootCheck.SOURCE_TREE,
    )
    try:
        tree = source_tree if source_tree is not None else SourceTree.running()
        return verify_source_tree(manifest, tree)
    except (SourceTreeMismatch, MalformedRelease, SourceTreeError) as error:
        raise BootError(BootCheck.SOURCE_TREE, str(error)) from None


def measured_boot(
    inputs: BootInputs,
    *,
    tpm: TPM,
    random: Random,
    now: datetime,
    source_tree: SourceTree | None = None,
) -> BootedNode:
    """Verify, measure and attest; see the module docstring for the steps.

    ``source_tree``: the Mantle packages checked in step 6. ``None`` -- what a
    node always passes -- means the directories this process imports from
    (:meth:`SourceTree.running`); tests pass a copy of the tree to modify.
    """
    release = verify_release(inputs, tpm=tpm, now=now)
    check_node_image(inputs, release, tpm=tpm)
    check_source_tree(inputs, release, source_tree)

    if inputs.model_id is not None and model_artifact_name(inputs.model_id) not in (
        release.artifacts
    ):
        raise BootError(
            BootCheck.MODEL_NOT_IN_RELEASE,
            f"release {release.version} does not list model {inputs.model_id!r}",
        )
    try:
        measurement = release_measurement(release, inputs.model_id)
    except MissingPlatformRegisters as error:
        raise BootError(BootCheck.IMAGE, str(error)) from None
    except MeasurementError as error:
        raise BootError(BootCheck.MALFORMED_RELEASE, str(error)) from None

    try:
        for index in APPLICATION_PCRS:
            if not hmac.compare_digest(tpm.pcr_read(index), PCR_RESET_VALUE):
                raise BootError(
                    BootCheck.PCR_STATE,
                    f"PCR {index} is not at its reset value: something measured into it"
                    " before this node (a second start without a reboot, or a boot component"
                    " using a Mantle PCR); reboot the machine",
                )
        # Read again: the floor checked in step 2 may have risen since (another
        # start on this TPM); a release below the counter never gets measured.
        counter = tpm.counter_read(RELEASE_COUNTER)
        if counter > release.version:
            raise BootError(
                BootCheck.ROLLBACK,
                f"release version {release.version} is lower than this TPM's release counter"
                f" {counter}; refusing to roll back",
            )
        while counter < release.version:
            counter = tpm.counter_increment(RELEASE_COUNTER)
        for index, digest in boot_extends(measurement):
            tpm.pcr_extend(index, digest)
        expected = expected_pcrs_for(measurement)
        for index, value in expected.items():
            if not hmac.compare_digest(tpm.pcr_read(index), value):
                raise BootError(
                    BootCheck.PCR_STATE, f"PCR {index} does not hold the expected value after boot"
                )
        custody = NodeKeyCustody(random=random)
        document = custody.attest(tpm, nonce=None)
    except TPMError as error:
        raise BootError(BootCheck.TPM, f"TPM command failed during measurement: {error}") from None
    return BootedNode(
        release=release,
        measurement=measurement,
        pcrs=expected,
        custody=custody,
        document=document,
    )
