"""``mantle-sim tpm``: simulated NitroTPM documents and the simulated PKI's root.

    mantle-sim tpm attest --seed S [--nonce HEX] [--public-key HEX]
                          [--user-data HEX] [--pcr N=HEX ...]
                          [--timestamp-ms MS] [--policy-out FILE] -o FILE
    mantle-sim tpm root --seed S -o FILE.pem

``--pcr N=HEX`` extends PCR N with the 48-byte digest HEX after the simulated
boot (repeatable, applied in order). Without ``--timestamp-ms`` the document
carries the current time; with it, a seed reproduces the document byte for
byte. ``--policy-out`` writes a PCR policy (JSON, see
``protocol.attestation.PcrPolicy``) pinning every PCR of the document.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

from actors.seams.tpm import TPMError
from mantle.commands import MAX_UNIX_MS, IntegerIn
from protocol.attestation import PcrPolicy, PcrRelease
from simulations.clock import ManualClock
from simulations.nitrotpm import PCR_COUNT, SimulatedNitroTPM

_MAX_HEX_FIELD_BYTES = 1024
_PCR_INDEX = IntegerIn(0, PCR_COUNT - 1)


def _from_hex(text: str) -> bytes | None:
    # None rather than raising in the handler: argparse's error then carries
    # no __context__.
    with contextlib.suppress(ValueError):
        return bytes.fromhex(text)
    return None


def _hex_bytes(text: str) -> bytes:
    value = _from_hex(text)
    if value is None:
        raise argparse.ArgumentTypeError("expected hexadecimal bytes")
    if len(value) > _MAX_HEX_FIELD_BYTES:
        raise argparse.ArgumentTypeError(f"at most {_MAX_HEX_FIELD_BYTES} bytes")
    return value


def _pcr_extension(text: str) -> tuple[int, bytes]:
    index_text, sep, digest_text = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError("expected N=HEX")
    index = _PCR_INDEX(index_text)
    digest = _from_hex(digest_text)
    if digest is None:
        raise argparse.ArgumentTypeError("PCR digest must be hexadecimal")
    if len(digest) != 48:
        raise argparse.ArgumentTypeError("PCR digest must be 48 bytes (96 hex digits)")
    return index, digest


def _attest(args: argparse.Namespace) -> int:
    timestamp_ms = (
        args.timestamp_ms if args.timestamp_ms is not None else time.time_ns() // 1_000_000
    )
    tpm = SimulatedNitroTPM.from_seed(args.seed, clock=ManualClock(timestamp_ms))
    try:
        for index, digest in args.pcr:
            tpm.pcr_extend(index, digest)
        document = tpm.attest(
            nonce=args.nonce, public_key=args.public_key, user_data=args.user_data
        )
        pcrs = {index: tpm.pcr_read(index) for index in range(PCR_COUNT)}
    except (TPMError, ValueError) as exc:
        # ValueError: a timestamp before the simulated PKI's root (2020).
        print(f"error: {exc}", file=sys.stderr)
        return 1
    Path(args.output).write_bytes(document)
    if args.policy_out is not None:
        policy = PcrPolicy(releases=(PcrRelease.from_mapping("simulated", pcrs),))
        Path(args.policy_out).write_text(policy.to_json() + "\n")
    print(f"wrote {len(document)}-byte simulated document for {tpm.module_id} to {args.output}")
    return 0


def _root(args: argparse.Namespace) -> int:
    # The PKI's root does not depend on time, so any clock will do.
    tpm = SimulatedNitroTPM.from_seed(args.seed, clock=ManualClock(0))
    Path(args.output).write_bytes(tpm.pki.root_pem())
    print(f"wrote simulated root for seed {args.seed!r} to {args.output}")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``tpm`` command group to ``mantle-sim``."""
    tpm = subparsers.add_parser("tpm", help="simulated NitroTPM documents and PKI")
    commands = tpm.add_subparsers(dest="tpm_command", required=True)

    attest = commands.add_parser("attest", help="write a simulated NitroTPM document")
    attest.add_argument("--seed", required=True, help="seed of the simulated TPM and its PKI")
    attest.add_argument("--nonce", type=_hex_bytes, default=None, help="nonce (hex)")
    attest.add_argument("--public-key", type=_hex_bytes, default=None, help="public key (hex)")
    attest.add_argument("--user-data", type=_hex_bytes, default=None, help="user data (hex)")
    attest.add_argument(
        "--pcr",
        type=_pcr_extension,
        action="append",
        default=[],
        metavar="N=HEX",
        help="extend PCR N with a 48-byte digest (repeatable)",
    )
    attest.add_argument(
        "--timestamp-ms",
        type=IntegerIn(0, MAX_UNIX_MS),
        default=None,
        help="document time (ms since the epoch)",
    )
    attest.add_argument("--policy-out", default=None, help="also write a PCR policy JSON")
    attest.add_argument("-o", "--output", required=True, help="document file to write")
    attest.set_defaults(handler=_attest)

    root = commands.add_parser("root", help="write the simulated PKI's root certificate (PEM)")
    root.add_argument("--seed", required=True, help="seed of the simulated PKI")
    root.add_argument("-o", "--output", required=True, help="PEM file to write")
    root.set_defaults(handler=_root)
