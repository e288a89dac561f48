"""``mantle attest``: inspect and verify an attestation document.

    mantle attest inspect FILE --root ROOT.pem [--nonce HEX] [--public-key HEX]
                               [--max-age SECONDS] [--at UNIX_MS] [--policy FILE]

Prints the document's fields and the verdict. Exit status: 0 verified,
1 rejected (the failed check is named), 2 unusable input or configuration.
``--at`` verifies as of a past moment (certificate validity and freshness are
judged at that time). ``--policy`` is a PCR policy in the JSON form described
in :mod:`protocol.attestation._policy`.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path
from typing import TextIO

from mantle.commands import MAX_SECONDS, MAX_UNIX_MS, IntegerIn, NumberIn
from protocol.attestation import (
    MAX_EVIDENCE_BYTES,
    AttestationError,
    ConfigurationError,
    Expectations,
    NitroAuthenticator,
    PcrPolicy,
    TrustAnchor,
    appraise,
    unverified_payload,
)

EXIT_VERIFIED = 0
EXIT_REJECTED = 1
EXIT_UNUSABLE = 2


def _hex_bytes(text: str) -> bytes:
    with contextlib.suppress(ValueError):
        return bytes.fromhex(text)
    raise argparse.ArgumentTypeError("expected hexadecimal bytes")


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bytes):
        return f"{value.hex()} ({len(value)} bytes)" if value else "(0 bytes)"
    return str(value)


def _print_unverified(document: bytes, out: TextIO) -> None:
    """Best-effort field dump for a rejected document, clearly marked."""
    try:
        fields = unverified_payload(document)
    except AttestationError:
        print("fields: (not decodable)", file=out)
        return
    print("fields (NOT verified):", file=out)
    for name, value in fields.items():
        if name in ("certificate", "cabundle"):
            count = len(value) if isinstance(value, list) else 1
            print(f"  {name}: {count} certificate(s)", file=out)
        elif isinstance(value, dict):
            print(f"  {name}: {len(value)} entries", file=out)
        else:
            print(f"  {name}: {_describe(value)}", file=out)


def _inspect(args: argparse.Namespace) -> int:
    out: TextIO = sys.stdout
    try:
        # Read at most one byte past the bound: the size is judged on what was
        # read, not on a stat that the file can outgrow before the read.
        with Path(args.file).open("rb") as file:
            document = file.read(MAX_EVIDENCE_BYTES + 1)
        if len(document) > MAX_EVIDENCE_BYTES:
            print(
                f"verdict: REJECTED (check: size) - larger than {MAX_EVIDENCE_BYTES} bytes",
                file=out,
            )
            return EXIT_REJECTED
        anchor = TrustAnchor.from_pem(Path(args.root).read_bytes())
        policy = (
            PcrPolicy.from_json(Path(args.policy).read_bytes()) if args.policy is not None else None
        )
    except (OSError, ConfigurationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE

    now_ms = args.at if args.at is not None else time.time_ns() // 1_000_000
    expectations = Expectations(
        pcr_policy=policy,
        max_age_ms=None if args.max_age is None else round(args.max_age * 1000),
        expected_nonce=args.nonce,
        expected_public_key=args.public_key,
    )
    print(f"document: {args.file} ({len(document)} bytes)", file=out)
    print(f"root: sha256 {anchor.sha256.hex()}", file=out)
    print(f"verified as of: {now_ms} ms", file=out)
    try:
        authenticated = NitroAuthenticator(anchor).authenticate_document(document, now_ms=now_ms)
        verified = appraise(authenticated.claims, expectations, now_ms=now_ms)
    except AttestationError as exc:
        _print_unverified(document, out)
        print(f"verdict: REJECTED (check: {exc.check.value}) - {exc.detail}", file=out)
        return EXIT_REJECTED

    payload = authenticated.payload
    print(f"module_id: {payload.module_id}", file=out)
    print(f"digest: {payload.digest}", file=out)
    print(
        f"timestamp: {payload.timestamp_ms} ms (age {now_ms - payload.timestamp_ms} ms)", file=out
    )
    print(f"{payload.pcrs_field}:", file=out)
    for index, value in payload.pcrs.items():
        print(f"  {index:2d}: {value.hex()}", file=out)
    print(f"certificate chain: {len(payload.cabundle) + 1} certificates", file=out)
    print(f"public_key: {_describe(payload.public_key)}", file=out)
    print(f"user_data: {_describe(payload.user_data)}", file=out)
    print(f"nonce: {_describe(payload.nonce)}", file=out)
    if verified.debug_mode:
        print("debug mode: yes (PCR0 is all zeros)", file=out)
    release = verified.release if verified.release is not None else "(no policy given)"
    print(f"release: {release}", file=out)
    print("verdict: VERIFIED", file=out)
    return EXIT_VERIFIED


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``attest`` command group to ``mantle``."""
    attest = subparsers.add_parser("attest", help="attestation documents")
    commands = attest.add_subparsers(dest="attest_command", required=True)
    inspect = commands.add_parser("inspect", help="print and verify an attestation document")
    inspect.add_argument("file", help="attestation document (raw COSE_Sign1 bytes)")
    inspect.add_argument("--root", required=True, help="pinned root certificate (PEM)")
    inspect.add_argument("--nonce", type=_hex_bytes, default=None, help="expected nonce (hex)")
    inspect.add_argument(
        "--public-key", type=_hex_bytes, default=None, help="expected bound public key (hex)"
    )
    # Bounded before any arithmetic: NaN would pass the age comparison, 1e308
    # overflowed round(), a negative age means nothing.
    inspect.add_argument(
        "--max-age",
        type=NumberIn(0, MAX_SECONDS),
        default=None,
        help=f"maximum age in seconds (at most {MAX_SECONDS})",
    )
    inspect.add_argument(
        "--at", type=IntegerIn(0, MAX_UNIX_MS), default=None, help="verify as of UNIX_MS"
    )
    inspect.add_argument("--policy", default=None, help="PCR policy file (JSON)")
    inspect.set_defaults(handler=_inspect)
