"""Measured boot (docs/architecture.md §14 "A node boots", up to the first attestation).

In order, and nothing is changed on the TPM until every check passed (but for
the release counter a node's first boot defines in step 1):

1. open the release monotonic counter through :mod:`actors.counter_guard`:
   the counter must be the one this node defined, as the binding in
   ``state_dir`` records (a counter the TPM owner deleted, re-created, or whose
   binding was removed is refused, never read as zero). On a node's first boot
   (no binding, no counter) the counter is defined and its binding written; a
   counter defined afresh starts above every count a deleted counter held, so
   an owner who deletes counter and binding still gets every release up to the
   last one accepted refused here, before anything is measured. Its verified
   value is the floor;
2. verify the release metadata (root pinned or rotated from the pin, threshold
   of release signatures, expiry, version >= the floor, and at most
   :data:`MAX_RELEASE_ADVANCE` above it);
3. verify that the release is in the transparency log (signed tree head under
   the pinned log key, inclusion proof of the release's entry);
4. verify every installed artifact against the release (length and hashes).
   Model artifacts name plaintext weights, which exist only in memory after
   the data key arrives; the model loader checks them there;
5. check the node image: the release names one (its ``nitro-tpm-pcr-compute``
   output, ``image/pcr-measurements.json``, whose installed file step 4 found
   to hold exactly the values the signed metadata carries); and this machine's platform
   registers (PCR 4, 7, 12, written by the firmware before this code ran)
   equal them -- a node on another image would attest values no policy holds;
6. check the running code: hash every file of the installed Mantle packages
   (the directories this process imports from) and compare with the release's
   source manifest; any modified or missing file, or any unlisted ``.py``,
   ``.pyc`` or ``.so`` file, stops boot. Bytecode caches are code too (Python
   runs a ``__pycache__`` file whose header agrees with the source, whatever
   code it holds): each must be exactly what this interpreter writes for its
   listed source -- the released bytes recompiled, the header's mtime and
   size or source hash agreeing with them -- and a cache that differs, names
   no listed source or is another interpreter's stops boot, as does a
   ``sys.pycache_prefix`` (caches elsewhere cannot be checked). Outside this
   check on a development machine: the interpreter, site-packages, ``.pth``
   files and ``sitecustomize``, which run before boot does. On EC2 the
   read-only image's dm-verity root hash, inside the UKI that PCR 4 measures,
   covers all of them and is what makes this airtight: code that was changed
   could skip its own check, but not the measurement of the image it came
   from;
7. check that the application PCRs are at their reset value;
8. verify the counter again (it may have risen since step 1: refuse as a
   rollback; it may have been deleted or swapped: refuse) and advance only that
   verified counter to this release's version, one increment at a time, each
   adding exactly one, then read it back (a newer release raises the floor for
   ever; the same version leaves it alone);
9. extend the release, model and config digests into the application PCRs
   (:data:`~protocol.measurement.APPLICATION_PCRS`; see
   :mod:`protocol.measurement` for which registers and why) and read them back;
10. generate the node's Noise static key in memory and attest, binding it.

Any failure raises :class:`BootError`, whose :attr:`~BootError.check` names the
step and whose message says what was wrong, so an operator reading "boot
stopped [rollback]: ..." knows what to fix. The node does not start.

The counter on the node cannot carry rollback protection alone: the TPM owner
can delete it (see :mod:`actors.counter_guard` for what the TPM does and does
not guarantee). What stops an old release everywhere is the verifiers' floor;
what boot adds is that a deleted or re-created counter is refused by name and
that boot never advances a counter it did not verify.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

from actors.counter_guard import (
    MAX_ADVANCE,
    CounterBinding,
    CounterCheck,
    CounterRefused,
    advance_counter,
    open_counter,
)
from actors.key_custody import NodeKeyCustody
from actors.seams.random import Random
from actors.seams.tpm import TPM, TPMError
from nodes.counter_binding import read_binding, write_binding
from nodes.release import (
    SourceTree,
    SourceTreeCheck,
    SourceTreeError,
    verify_installed_artifacts,
    verify_source_tree,
)
from protocol.measurement import (
    APPLICATION_PCRS,
    IMAGE_MEASUREMENTS_ARTIFACT,
    MODEL_ARTIFACT_PREFIX,
    PCR_RESET_VALUE,
    PLATFORM_PCRS,
    RELEASE_COUNTER,
    MeasurementError,
    MissingPlatformRegisters,
    ReleaseMeasurement,
    boot_extends,
    expected_pcrs_for,
    model_artifact_name,
    release_measurement,
)
from protocol.release import (
    MAX_SOURCE_MANIFEST_BYTES,
    SOURCE_MANIFEST_ARTIFACT,
    ArtifactCheck,
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
    #: The release counter this node defined is gone (the TPM owner deleted it).
    COUNTER_MISSING = "counter_missing"
    #: A release counter stands, but not the one this node defined.
    COUNTER_RECREATED = "counter_recreated"
    #: A release counter stands, but the node's record of it is gone.
    COUNTER_BINDING_MISSING = "counter_binding_missing"
    #: The node's record of its release counter does not decode.
    COUNTER_BINDING_MALFORMED = "counter_binding_malformed"
    #: The counter moved underneath boot, or an increment did not add one.
    COUNTER_UNEXPECTED = "counter_unexpected"
    #: The release would raise the counter by more than MAX_RELEASE_ADVANCE.
    VERSION_JUMP = "version_jump"
    #: The state directory cannot be read or written.
    STATE_DIR = "state_dir"


_COUNTER_CHECKS: Final = {
    CounterCheck.MISSING: BootCheck.COUNTER_MISSING,
    CounterCheck.RECREATED: BootCheck.COUNTER_RECREATED,
    CounterCheck.BINDING_MISSING: BootCheck.COUNTER_BINDING_MISSING,
    CounterCheck.MALFORMED_BINDING: BootCheck.COUNTER_BINDING_MALFORMED,
    CounterCheck.UNEXPECTED_VALUE: BootCheck.COUNTER_UNEXPECTED,
    CounterCheck.TPM: BootCheck.TPM,
}

#: The file in ``BootInputs.state_dir`` recording which definition of the
#: release counter this node made (a :class:`CounterBinding`).
RELEASE_COUNTER_BINDING: Final = "release-counter.binding"

#: The most one boot raises the release counter. A TPM counter has no "set":
#: every step is a name-bound TPM2_NV_Increment (an NV write, rate-limited and
#: wearing NV on hardware; about 11 ms on swtpm), so a signed version far above
#: the floor (say 10**9, a signers' slip) would stall boot for months; it is
#: refused (VERSION_JUMP) before anything is measured or advanced. The bound
#: is the guard's own limit, 4096 steps (about 45 s on swtpm): room for a node
#: that is new (a fresh TPM's counter starts at 1) or long offline to catch up
#: with a release numbered in the low thousands. A node further behind cannot
#: boot that release: it boots an intermediate release first (each boot raises
#: the counter by up to the cap), or the fleet's numbering stays within reach.
MAX_RELEASE_ADVANCE: Final = MAX_ADVANCE


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
    (``install_root / "config/cluster.json"`` and so on). ``state_dir`` is
    this machine's persistent node state (it keeps the release counter's
    binding; losing it while the counter exists stops boot). ``model_id`` is
    the model this node serves (``None`` for ingress and keys nodes).
    """

    root_metadata: bytes
    targets_metadata: bytes
    log_proof: bytes
    trusted_root: bytes
    log_public_key: bytes
    install_root: Path
    state_dir: Path
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
    #: The bundle files boot verified (``root.json``, ``targets.json``,
    #: ``log-proof.json``), which an ingress hands to clients as they are.
    root_metadata: bytes = b""
    targets_metadata: bytes = b""
    log_proof: bytes = b""


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
    if isinstance(error, ArtifactMismatch) and error.check is ArtifactCheck.IMAGE_MEASUREMENTS:
        # The image file matches its hash but not the values the release signed.
        return BootError(BootCheck.IMAGE, str(error))
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


def _counter_failure(refused: CounterRefused) -> BootError:
    return BootError(_COUNTER_CHECKS[refused.check], f"release counter: {refused.detail}")


def _open_release_counter(inputs: BootInputs, tpm: TPM) -> tuple[int, CounterBinding]:
    """Step 1: the release counter's verified value and its binding."""
    path = inputs.state_dir / RELEASE_COUNTER_BINDING
    failure: BootError | None = None
    try:
        stored = read_binding(path)
        value, binding = open_counter(tpm, RELEASE_COUNTER, stored)
        if stored is None:
            # First use: the counter now exists; without this record every
            # later boot would stop at BINDING_MISSING.
            write_binding(path, binding)
    except CounterRefused as refused:
        failure = _counter_failure(refused)
    except OSError as error:
        failure = BootError(
            BootCheck.STATE_DIR,
            f"cannot keep the release counter's binding in the state directory"
            f" ({type(error).__name__}, errno {error.errno})",
        )
    if failure is not None:
        raise failure
    return value, binding


def _verify_release(inputs: BootInputs, *, floor: int, now: datetime) -> VerifiedRelease:
    """Steps 2-4 against the verified ``floor``."""
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
        if release.version - floor > MAX_RELEASE_ADVANCE:
            raise BootError(
                BootCheck.VERSION_JUMP,
                f"release version {release.version} is more than {MAX_RELEASE_ADVANCE} above"
                f" this TPM's release counter {floor}; refusing to advance it that far",
            )
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


def verify_release(inputs: BootInputs, *, tpm: TPM, now: datetime) -> VerifiedRelease:
    """Steps 1-4: a release that may run on this TPM, or :class:`BootError`."""
    floor, _ = _open_release_counter(inputs, tpm)
    return _verify_release(inputs, floor=floor, now=now)


def _advance_release_counter(tpm: TPM, binding: CounterBinding, version: int) -> None:
    """Step 8: re-verify the counter, refuse a rollback, advance it to ``version``."""
    failure: BootError | None = None
    try:
        # The floor checked in step 2 may have risen since (another start on
        # this TPM), or the counter may have been swapped: verify it afresh.
        counter, _ = open_counter(tpm, RELEASE_COUNTER, binding)
        if counter > version:
            failure = BootError(
                BootCheck.ROLLBACK,
                f"release version {version} is lower than this TPM's release counter"
                f" {counter}; refusing to roll back",
            )
        else:
            advance_counter(tpm, binding, counter, version)
    except CounterRefused as refused:
        failure = _counter_failure(refused)
    if failure is not None:
        raise failure


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
    # Step 4 checked the installed image file: its hash, and that it holds
    # exactly the values the signed metadata carries (verify_installed_artifacts).
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
) -> SourceTreeCheck:
    """Step 6: the running code is the released code; returns what was checked."""
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
    floor, binding = _open_release_counter(inputs, tpm)
    release = _verify_release(inputs, floor=floor, now=now)
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
        # A release below the counter, or a counter boot did not verify,
        # never gets measured.
        _advance_release_counter(tpm, binding, release.version)
        for index, digest in boot_extends(measurement):
            tpm.pcr_extend(index, digest)
        expected = expected_pcrs_for(measurement)
        for index, value in expected.items():
            if not hmac.compare_digest(tpm.pcr_read(index), value):
                raise BootError(
                    BootCheck.PCR_STATE, f"PCR {index} does not hold the expected value after boot"
                )
        # An inference node (one with a model) signs receipts with a key born
        # here, in memory; its binding is in every document from this one on.
        custody = NodeKeyCustody(random=random, receipt_key=inputs.model_id is not None)
        document = custody.attest(tpm, nonce=None)
    except TPMError as error:
        raise BootError(BootCheck.TPM, f"TPM command failed during measurement: {error}") from None
    return BootedNode(
        release=release,
        measurement=measurement,
        pcrs=expected,
        custody=custody,
        document=document,
        root_metadata=inputs.root_metadata,
        targets_metadata=inputs.targets_metadata,
        log_proof=inputs.log_proof,
    )
