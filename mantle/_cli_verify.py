"""``mantle verify``: check a Mantle cluster's ingress the way the client does.

    mantle verify URL --tls-cert CERT.pem [--pins DIR] [--root PEM]
                      [--tlog-key PATH] [--release-root PATH]
                      [--release-dir DIR] [--state PATH]

Checks the release (signatures under the pinned release root, inclusion in
the log under the pinned log key, the release floor kept in the trust
state), then the ingress's attestation document over a fresh nonce of its
own (chain to the pinned root, the release's PCRs, the pinned certificate's
TLS key bound in it), and prints what it verified: module id, release
version, PCRs, the TLS key binding, and whether the attestation PKI is a
simulated one. Exit status: 0 verified, 1 refused (the failed check is
named), 2 unusable input (a pin or certificate that cannot be read).
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

import anyio

from mantle._cli_trust import (
    EXIT_REFUSED,
    EXIT_UNUSABLE,
    EXIT_VERIFIED,
    CheckedIngress,
    CheckFailed,
    UnusableInput,
    add_trust_options,
    check_ingress,
)
from mantle.commands import NumberIn

#: The longest wait for any one answer the command accepts.
MAX_TIMEOUT_S = 600.0
DEFAULT_TIMEOUT_S = 30.0


def describe(checked: CheckedIngress) -> list[str]:
    """The lines ``mantle verify`` prints for a verified ingress."""
    ingress = checked.ingress
    attestation, release = ingress.attestation, ingress.release
    lines = [
        f"ingress: {ingress.url}",
        f"release: version {release.version} (floor {release.min_version}), "
        f"{checked.release_source}; signed by the pinned release root, in the pinned log",
        f"release digest: sha384 {release.release_digest.hex()}",
        f"module id: {attestation.module_id}",
        f"document: {attestation.kind.value}, over this command's own nonce",
        "pcrs:",
        *(f"  {index:2d}: {value.hex()}" for index, value in sorted(attestation.pcrs.items())),
        f"tls key: SPKI sha256 {ingress.tls_spki_sha256.hex()} (the pinned certificate's, "
        "bound in the document)",
    ]
    if ingress.simulated:
        lines.append(
            "simulated: yes - the attestation root is not AWS's Nitro root; this proves "
            "the code paths, nothing about hardware"
        )
    else:
        lines.append("simulated: no (AWS Nitro attestation root)")
    lines.append("verdict: VERIFIED")
    return lines


def _verify(args: argparse.Namespace) -> int:
    out: TextIO = sys.stdout
    try:
        checked = anyio.run(check_ingress, args, args.timeout, backend="trio")
    except UnusableInput as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_UNUSABLE
    except CheckFailed as failed:
        print(f"verdict: REFUSED (check: {failed.check}) - {failed.detail}", file=out)
        return EXIT_REFUSED
    for line in describe(checked):
        print(line, file=out)
    return EXIT_VERIFIED


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``verify`` command to ``mantle``."""
    verify = subparsers.add_parser(
        "verify", help="check a cluster's ingress and release against your pins"
    )
    add_trust_options(verify)
    verify.add_argument(
        "--timeout",
        type=NumberIn(1, MAX_TIMEOUT_S),
        default=DEFAULT_TIMEOUT_S,
        help=f"seconds to wait for each answer (1-{MAX_TIMEOUT_S:g})",
    )
    verify.set_defaults(handler=_verify)
