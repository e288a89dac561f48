"""``mantle receipt verify``: check a saved receipt offline, against your pins.

    mantle receipt verify FILE [--pins DIR] [--root PEM] [--release-root PATH]
                               [--tlog-key PATH] --release-dir DIR

Nothing is fetched. The file (``mantle chat --save-receipt``, a
:class:`protocol.e2e.SavedReceipt`, read up to its size bound) is checked in
this order, and the first check that fails is named:

1. ``receipt.*`` -- it decodes; the receipt is signed by its receipt key over
   the request and response hashes it carries;
2. ``release.*`` -- the bundle in ``--release-dir`` is signed under the
   pinned release root and in the log under the pinned log key, as of the
   document's time (a receipt speaks about the moment it was made);
3. ``receipt.release`` / ``receipt.model`` -- the receipt names that
   release's version and the model digest that release lists for its model;
4. ``document.*`` -- the saved attestation document chains to the pinned
   root and verifies at its own timestamp, shows the PCRs that release's
   policy gives the model, and its ``user_data`` is the binding of the
   receipt's key: the key that signed is held by code the release measured.

Exit status: 0 verified, 1 refused (the check is named), 2 unusable input (a
pin or file that cannot be read). The file holds hashes, never the prompt or
the answer.
"""

from __future__ import annotations

import argparse
import hmac
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, TextIO

from mantle._bundle import ReleaseDirectory
from mantle._cli_trust import (
    EXIT_REFUSED,
    EXIT_UNUSABLE,
    EXIT_VERIFIED,
    CheckFailed,
    UnusableInput,
    _snake,
    load_trust_pins,
)
from mantle._files import KeyFileError, read_bounded_file, read_metadata_file
from mantle._trust import TrustPins, verify_release_bytes
from protocol.attestation import (
    AttestationError,
    AttestationVerifier,
    Expectations,
    NitroAuthenticator,
    VerifiedAttestation,
    unverified_payload,
)
from protocol.e2e import MAX_SAVED_RECEIPT_BYTES, ReceiptError, SavedReceipt
from protocol.measurement import MeasurementError, model_policy, release_measurement
from protocol.release import (
    MAX_LOG_PROOF_BYTES,
    MAX_ROOT_BYTES,
    MAX_TARGETS_BYTES,
    ReleaseError,
    VerifiedRelease,
)

#: Past releases are checked as of the document's time, not against today's
#: floor: whether a release was current then is what the node's own counter
#: and the floor at every verifier decided when the receipt was made.
RECEIPT_RELEASE_FLOOR: Final = 0


def _read_receipt(path: Path) -> SavedReceipt:
    data = read_bounded_file(
        path, MAX_SAVED_RECEIPT_BYTES, "receipt file", error=lambda m: UnusableInput(m)
    )
    refusal: ReceiptError | None = None
    try:
        saved = SavedReceipt.decode(data)
        saved.verify_receipt()
    except ReceiptError as error:
        refusal = error
    else:
        return saved
    raise CheckFailed(refusal.check.value, str(refusal))


def _document_time_ms(saved: SavedReceipt) -> int:
    """The document's own timestamp: when its chain, and the release, are judged.
    Read before the signature is checked; a document that then verifies was
    signed with exactly this time."""
    timestamp: object = None
    try:
        timestamp = unverified_payload(saved.document).get("timestamp")
    except AttestationError:
        timestamp = None
    if type(timestamp) is not int or timestamp <= 0 or timestamp >= 1 << 63:
        raise CheckFailed("document.malformed", "the saved document has no timestamp")
    return timestamp


def _release(bundle: ReleaseDirectory, pins: TrustPins, at: datetime) -> VerifiedRelease:
    failure: CheckFailed | None = None
    try:
        release, _ = verify_release_bytes(
            read_metadata_file(bundle.root, MAX_ROOT_BYTES, "root metadata"),
            read_metadata_file(bundle.targets, MAX_TARGETS_BYTES, "targets metadata"),
            read_metadata_file(bundle.log_proof, MAX_LOG_PROOF_BYTES, "log proof"),
            pins=pins,
            now=at,
            floor=RECEIPT_RELEASE_FLOOR,
        )
    except ReleaseError as error:
        failure = CheckFailed(f"release.{_snake(type(error).__name__)}", str(error))
    except KeyFileError as error:
        failure = CheckFailed("release.malformed_release", str(error))
    else:
        return release
    raise failure


def _receipt_names_release(saved: SavedReceipt, release: VerifiedRelease) -> None:
    receipt = saved.receipt
    if receipt.release_version != release.version:
        raise CheckFailed(
            "receipt.release",
            f"the receipt names release {receipt.release_version}, the bundle is "
            f"release {release.version}",
        )
    digest: bytes | None = None
    try:
        digest = release_measurement(release, receipt.model).model_digest
    except MeasurementError:
        digest = None
    if digest is None or not hmac.compare_digest(digest, receipt.model_sha384):
        raise CheckFailed(
            "receipt.model", "the release does not list the receipt's model with its digest"
        )


def _document(
    saved: SavedReceipt, pins: TrustPins, release: VerifiedRelease, at_ms: int
) -> VerifiedAttestation:
    policy = model_policy([release], saved.receipt.model)
    if policy is None:
        raise CheckFailed("receipt.model", "the release does not list the receipt's model")
    verifier = AttestationVerifier([NitroAuthenticator(pins.attestation_root)])
    refusal: AttestationError | None = None
    try:
        return verifier.verify(
            saved.document,
            kind=saved.document_kind,
            expectations=Expectations(
                pcr_policy=policy, expected_user_data=saved.receipt_key_binding()
            ),
            now_ms=at_ms,
        )
    except AttestationError as error:
        refusal = error
    raise CheckFailed(f"document.{refusal.check.value}", str(refusal))


def check_receipt(args: argparse.Namespace) -> list[str]:
    """Every check of the module docstring; the lines to print when all pass."""
    pins = load_trust_pins(args)
    saved = _read_receipt(args.file)
    at_ms = _document_time_ms(saved)
    at = datetime.fromtimestamp(at_ms / 1000, tz=UTC)
    release = _release(ReleaseDirectory(args.release_dir), pins, at)
    _receipt_names_release(saved, release)
    attestation = _document(saved, pins, release, at_ms)
    receipt = saved.receipt
    return [
        f"receipt: request {receipt.request_id.hex()}, model {receipt.model}",
        "signature: valid, by receipt key "
        f"{receipt.receipt_key.hex()} over request sha256 {receipt.request_sha256.hex()} "
        f"and response sha256 {receipt.response_sha256.hex()}",
        f"release: version {release.version}, sha384 {release.release_digest.hex()}; "
        "signed by the pinned release root, in the pinned log "
        f"(as of {at.isoformat(timespec='seconds')})",
        f"model digest: sha384 {receipt.model_sha384.hex()} (the release's)",
        f"document: {attestation.kind.value}, module id {attestation.module_id}, "
        f"made {at.isoformat(timespec='seconds')}, chains to the pinned root",
        "pcrs (matching the release's policy for the model):",
        *(
            f"  {index:2d}: {value.hex()}"
            for index, value in sorted(attestation.claims.pcrs.items())
        ),
        f"receipt key binding: {saved.receipt_key_binding().hex()} (the document's user_data)",
        "verdict: VERIFIED",
    ]


def _verify(args: argparse.Namespace) -> int:
    out: TextIO = sys.stdout
    try:
        lines = check_receipt(args)
    except UnusableInput as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_UNUSABLE
    except CheckFailed as failed:
        print(f"verdict: REFUSED (check: {failed.check}) - {failed.detail}", file=out)
        return EXIT_REFUSED
    for line in lines:
        print(line, file=out)
    return EXIT_VERIFIED


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``receipt verify`` to ``mantle``."""
    receipt = subparsers.add_parser("receipt", help="check saved completion receipts")
    commands = receipt.add_subparsers(dest="receipt_command", metavar="COMMAND", required=True)
    verify = commands.add_parser(
        "verify", help="check a saved receipt offline against your pins and a release"
    )
    verify.add_argument("file", type=Path, help="a receipt file (mantle chat --save-receipt)")
    verify.add_argument(
        "--pins", type=Path, default=None, help="a pins directory holding all three pins below"
    )
    verify.add_argument(
        "--root", type=Path, default=None, help="pinned attestation root certificate (PEM)"
    )
    verify.add_argument(
        "--tlog-key", type=Path, default=None, help="pinned transparency log public key (PEM)"
    )
    verify.add_argument(
        "--release-root", type=Path, default=None, help="pinned release root metadata (JSON)"
    )
    verify.add_argument(
        "--release-dir",
        type=Path,
        required=True,
        help="the bundle of the release the receipt names (root.json, targets.json, "
        "log-proof.json)",
    )
    verify.set_defaults(handler=_verify)
