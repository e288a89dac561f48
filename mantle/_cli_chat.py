"""``mantle chat``: ask a Mantle cluster one question, sealed end to end.

    mantle chat URL [--pins DIR] [--root PEM] [--tlog-key PATH]
                    [--release-root PATH] [--tls-cert PEM] [--state PATH]
                    [-m MODEL] [--api-key K] [--max-tokens N]
                    [--save-receipt FILE] "prompt"

Built on :class:`mantle.AsyncClient`: before anything is sent the client
verifies the release the ingress serves (the user's pins, the release floor
and the log's tree head kept in the trust state), then the inference nodes
serving the model (each one's document over the client's own nonce, the
release's PCRs for the model, its static key and receipt key bound). The
prompt is sealed to those nodes only; the ingress and the scheduler relay
ciphertext. The answer streams to standard output as it is opened; a short
line naming the serving node and the release goes to standard error, and
``--save-receipt`` writes the completion's :class:`protocol.e2e.SavedReceipt`
for ``mantle receipt verify``.

The model defaults to the first the cluster lists; the API key to
``$MANTLE_API_KEY``; pins not given as options come from ``MANTLE_*`` or the
client's config file (``MANTLE_CONFIG``), and a missing one stops the command.
Exit status: 0 answered, 1 refused or failed (the check, the HTTP status or
the retry delay is named, never the prompt or the answer), 2 unusable input.
"""

from __future__ import annotations

import argparse
import ssl
import sys
from pathlib import Path
from typing import Final, TextIO

import anyio
import httpx2

from mantle._cli_trust import (
    API_KEY_ENV,
    EXIT_REFUSED,
    EXIT_UNUSABLE,
    EXIT_VERIFIED,
    STATE_ENV,
    CheckFailed,
    UnusableInput,
    add_pin_options,
    api_key_of,
    client_pins,
    default_state_path,
    failure_of,
    first_model,
)
from mantle._client import AsyncClient
from mantle._errors import ClientConfigError
from mantle._ingress import _is_https, pinned_tls_context
from mantle._walk import VerifiedNodes
from mantle.commands import IntegerIn, NumberIn
from protocol.e2e import SavedReceipt

MAX_TOKENS_LIMIT: Final = 8192
DEFAULT_MAX_TOKENS: Final = 256
MAX_TIMEOUT_S: Final = 600.0
DEFAULT_TIMEOUT_S: Final = 120.0
#: The verification fetches' deadline, at most.
VERIFY_TIMEOUT_S: Final = 30.0


def add_client_options(parser: argparse.ArgumentParser) -> None:
    """The end-to-end client's options: the URL, the user's pins, the state."""
    add_pin_options(parser)
    parser.add_argument(
        "--tls-cert",
        type=Path,
        default=None,
        help="the ingress's TLS certificate (PEM) to pin (default: the system's trust store)",
    )
    parser.add_argument(
        "--state",
        type=Path,
        default=None,
        help=f"the trust state keeping the release floor and the log's tree head "
        f"(default ${STATE_ENV}, else $XDG_STATE_HOME/mantle/trust.json)",
    )
    parser.add_argument(
        "--api-key", default=None, help=f"the tenant's API key (default ${API_KEY_ENV})"
    )


def make_client(args: argparse.Namespace, api_key: str, timeout_s: float) -> AsyncClient:
    """An :class:`AsyncClient` on the options; :class:`UnusableInput` for a
    missing or unusable pin, :class:`CheckFailed` for a URL without TLS."""
    if not _is_https(args.url):
        raise CheckFailed("ingress.url", "the ingress is reached over https:// only")
    problem: str | None = None
    pins = client_pins(args)
    try:
        return AsyncClient(
            args.url,
            api_key,
            attestation_root=pins["attestation_root"],
            release_root=pins["release_root"],
            tlog_key=pins["tlog_key"],
            tls_cert=args.tls_cert,
            trust_state=args.state if args.state is not None else default_state_path(),
            timeout=timeout_s,
            verify_timeout=min(VERIFY_TIMEOUT_S, timeout_s),
        )
    except ClientConfigError as error:
        problem = str(error)
    raise UnusableInput(problem)


def tls_context_of(client: AsyncClient) -> ssl.SSLContext:
    """The TLS check the client uses: the pinned certificate, or the system's."""
    pem = client.settings.tls_cert_pem
    return pinned_tls_context(pem) if pem is not None else ssl.create_default_context()


async def choose_model(client: AsyncClient, model: str | None, deadline_s: float) -> str:
    """``model``, else the first the cluster lists (a name only: the walk then
    proves the release lists it and the nodes serve it)."""
    if model is not None:
        return model
    async with httpx2.AsyncClient(verify=tls_context_of(client), timeout=deadline_s) as http:
        listed = await first_model(http, client.settings.url, client.settings.api_key, deadline_s)
    if listed is None:
        raise CheckFailed("models.none", "the cluster lists no model")
    return listed


def _verified_line(nodes: VerifiedNodes, saved: SavedReceipt) -> str:
    node = nodes.node_for_receipt_binding(saved.receipt_key_binding())
    name = node.name if node is not None else "?"
    module = node.attestation.module_id if node is not None else "?"
    return (
        f"verified: node {name} ({module}), release {saved.receipt.release_version}, "
        f"model {saved.receipt.model}; sealed to {len(nodes.nodes)} attested node(s), "
        "receipt signed by the node's attested key"
    )


async def _chat(args: argparse.Namespace, out: TextIO, err: TextIO) -> None:
    client = make_client(args, api_key_of(args), args.timeout)
    wrote = False
    saved: SavedReceipt | None = None
    nodes: VerifiedNodes | None = None
    failure: CheckFailed | None = None
    try:
        async with client:
            model = await choose_model(client, args.model, min(VERIFY_TIMEOUT_S, args.timeout))
            nodes = await client.verify(model)
            stream = await client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": args.prompt}],
                max_tokens=args.max_tokens,
                stream=True,
            )
            async with stream:
                async for chunk in stream:
                    for choice in chunk.choices:
                        # The user is the customer: showing their own answer is the point.
                        if choice.delta.content:
                            out.write(choice.delta.content)
                            out.flush()
                            wrote = True
            saved = stream.saved_receipt
    except Exception as error:  # mapped to a named check below, or re-raised
        failure = failure_of(error)
        if failure is None:
            raise
    if wrote:
        out.write("\n")
    if failure is not None:
        raise failure
    if saved is None or nodes is None:
        raise CheckFailed("attestation.receipt", "the answer ended without a receipt")
    if args.save_receipt is not None:
        _save(args.save_receipt, saved)
    print(_verified_line(nodes, saved), file=err)


def _save(path: Path, saved: SavedReceipt) -> None:
    """Write the receipt file (hashes and the node's document; no customer text)."""
    problem: str | None = None
    try:
        path.write_bytes(saved.encode())
    except OSError as error:
        problem = f"cannot write the receipt file {path}: {error.strerror}"
    if problem is not None:
        raise UnusableInput(problem)


def _run(args: argparse.Namespace) -> int:
    try:
        anyio.run(_chat, args, sys.stdout, sys.stderr, backend="trio")
    except UnusableInput as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_UNUSABLE
    except CheckFailed as failed:
        print(f"refused (check: {failed.check}) - {failed.detail}", file=sys.stderr)
        return EXIT_REFUSED
    return EXIT_VERIFIED


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``chat`` command to ``mantle``."""
    chat = subparsers.add_parser(
        "chat", help="verify a cluster's inference nodes, then ask them, end to end"
    )
    add_client_options(chat)
    chat.add_argument("prompt", help="the question")
    chat.add_argument("-m", "--model", default=None, help="model id (default: the first listed)")
    chat.add_argument(
        "--max-tokens",
        type=IntegerIn(1, MAX_TOKENS_LIMIT),
        default=DEFAULT_MAX_TOKENS,
        help=f"tokens to generate at most (1-{MAX_TOKENS_LIMIT})",
    )
    chat.add_argument(
        "--save-receipt",
        type=Path,
        default=None,
        help="write the completion's receipt here, for `mantle receipt verify`",
    )
    chat.add_argument(
        "--timeout",
        type=NumberIn(1, MAX_TIMEOUT_S),
        default=DEFAULT_TIMEOUT_S,
        help=f"seconds to wait for the answer (1-{MAX_TIMEOUT_S:g})",
    )
    chat.set_defaults(handler=_run)
