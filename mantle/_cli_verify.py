"""``mantle verify``: check a Mantle cluster the way the client does.

    mantle verify URL --tls-cert CERT.pem [--pins DIR] [--root PEM]
                      [--tlog-key PATH] [--release-root PATH]
                      [--release-dir DIR] [--state PATH]
                      [--api-key K] [-m MODEL]

Checks the release (signatures under the pinned release root, inclusion in
the log under the pinned log key, the release floor kept in the trust
state), then the ingress's attestation document over a fresh nonce of its
own (chain to the pinned root, the release's PCRs, the pinned certificate's
TLS key bound in it), and prints what it verified: module id, release
version, PCRs, the TLS key binding, and whether the attestation PKI is a
simulated one. Then the inference nodes serving the model (default: the
first listed; the API key defaults to ``$MANTLE_API_KEY``), as
:meth:`mantle.AsyncClient.verify` checks them before it seals a request: the
release the ingress serves and the log's tree head, then each node's document
over the client's own nonce (pinned root, the release's PCRs for the model,
its static key and receipt key bound); it prints each verified node (name,
module id, release, PCRs, receipt key binding) and each node left out.
Exit status: 0 verified (the ingress and at least one node), 1 refused (the
failed check is named), 2 unusable input (a pin, certificate or API key
missing or unreadable).
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

import anyio

from mantle._cli_chat import choose_model, make_client
from mantle._cli_trust import (
    API_KEY_ENV,
    EXIT_REFUSED,
    EXIT_UNUSABLE,
    EXIT_VERIFIED,
    CheckedIngress,
    CheckFailed,
    UnusableInput,
    add_trust_options,
    api_key_of,
    check_ingress,
    failure_of,
    load_trust,
)
from mantle._walk import VerifiedNodes
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
    return lines


def describe_nodes(verified: VerifiedNodes) -> list[str]:
    """The lines for the inference nodes the client verified for a model."""
    release = verified.release
    lines = [
        f"model: {verified.model}; nodes verified against release {release.version} "
        "as the ingress serves it (signed by the pinned release root, in the pinned log, "
        f"consistent with the log's tree head of size {verified.tree_head.tree_size})",
    ]
    for node in verified.nodes:
        attestation = node.attestation
        lines += [
            f"node: {node.name}",
            f"  module id: {attestation.module_id}",
            f"  release: version {release.version} (its PCRs for {verified.model}), "
            f"document over this command's own nonce",
            "  pcrs:",
            *(
                f"    {index:2d}: {value.hex()}"
                for index, value in sorted(attestation.claims.pcrs.items())
            ),
            f"  static key: {node.static_key.hex()} (bound in the document)",
            f"  receipt key binding: {node.receipt_key_binding.hex()} (the document's user_data)",
        ]
    for name, check in verified.refused:
        lines.append(f"node left out: {name} (check: {check})")
    return lines


async def _check(args: argparse.Namespace) -> list[str]:
    load_trust(args)  # a missing pin is named first, before the API key
    api_key = api_key_of(args)
    checked = await check_ingress(args, args.timeout)
    lines = describe(checked)
    client = make_client(args, api_key, args.timeout)
    failure: CheckFailed | None = None
    try:
        async with client:
            model = await choose_model(client, args.model, args.timeout)
            lines += describe_nodes(await client.verify(model))
    except Exception as error:  # mapped to a named check below, or re-raised
        failure = failure_of(error)
        if failure is None:
            raise
    if failure is not None:
        raise failure
    return [*lines, "verdict: VERIFIED"]


def _verify(args: argparse.Namespace) -> int:
    out: TextIO = sys.stdout
    try:
        lines = anyio.run(_check, args, backend="trio")
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
    """Add the ``verify`` command to ``mantle``."""
    verify = subparsers.add_parser(
        "verify", help="check a cluster's ingress, release and inference nodes against your pins"
    )
    add_trust_options(verify)
    verify.add_argument(
        "--api-key", default=None, help=f"the tenant's API key (default ${API_KEY_ENV})"
    )
    verify.add_argument(
        "-m", "--model", default=None, help="the model whose nodes to check (default: first listed)"
    )
    verify.add_argument(
        "--timeout",
        type=NumberIn(1, MAX_TIMEOUT_S),
        default=DEFAULT_TIMEOUT_S,
        help=f"seconds to wait for each answer (1-{MAX_TIMEOUT_S:g})",
    )
    verify.set_defaults(handler=_verify)
