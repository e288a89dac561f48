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
5. check that the application PCRs are at their reset value;
6. read the counter again (it may have risen since step 1: refuse as a
   rollback) and advance it to this release's version (a newer release raises
   the floor for ever; the same version leaves it alone);
7. extend the release, model and config digests into PCRs 12, 13 and 14
   (see :mod:`protocol.measurement` for why those) and read them back;
8. generate the node's Noise static key in memory and attest, binding it.

Any failure raises :class:`BootError`, whose :attr:`~BootError.check` names the
step and whose message says what was wrong, so an operator reading "boot
stopped [rollback]: ..." knows what to fix. The node does not start.
"""

from __future__ import annotations

import enum
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from actors.key_custody import NodeKeyCustody
from actors.seams.random import Random
from actors.seams.tpm import TPM, TPMError
from nodes.release import verify_installed_artifacts
from protocol.measurement import (
    APPLICATION_PCRS,
    MODEL_ARTIFACT_PREFIX,
    PCR_RESET_VALUE,
    RELEASE_COUNTER,
    MeasurementError,
    ReleaseMeasurement,
    boot_extends,
    expected_pcrs_for,
    model_artifact_name,
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
    UntrustedRoot,
    VerifiedRelease,
    VersionRollback,
    verify_release_in_log,
    verify_release_metadata,
)


class BootCheck(enum.StrEnum):
    """The boot step that stopped the node."""

    MALFORMED_RELEASE = "malformed_release"
    SIGNATURES = "signatures"
    UNTRUSTED_ROOT = "untrusted_root"
    EXPIRED = "expired"
    ROLLBACK = "rollback"
    NOT_IN_LOG = "not_in_log"
    ARTIFACT = "artifact"
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


def measured_boot(inputs: BootInputs, *, tpm: TPM, random: Random, now: datetime) -> BootedNode:
    """Verify, measure and attest; see the module docstring for the steps."""
    release = verify_release(inputs, tpm=tpm, now=now)

    if inputs.model_id is not None and model_artifact_name(inputs.model_id) not in (
        release.artifacts
    ):
        raise BootError(
            BootCheck.MODEL_NOT_IN_RELEASE,
            f"release {release.version} does not list model {inputs.model_id!r}",
        )
    try:
        measurement = release_measurement(release, inputs.model_id)
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
