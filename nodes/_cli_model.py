"""``mantle-node model``: a model provider seals a GGUF and registers its data key.

``model add`` is run by the model provider, where the plaintext weights
already are. It

1. verifies the keys node's attestation document (chain to the pinned root,
   signature, age, PCRs against the given policy, and that it binds the keys
   node's Noise static key given on the command line) -- the data key goes
   only to an attested keys node;
2. draws a fresh data key, seals the GGUF into ``STORE/<model>/v<n>.sealed``
   (streamed: the plaintext is read a block at a time) and writes a manifest
   with the plaintext's length and SHA-384 -- the values the release lists as
   the ``models/<model>.gguf`` artifact;
3. writes ``STORE/<model>/v<n>.import``: the data key in a Noise ``K``
   envelope from the provider's static key (``--provider-key``) to the keys
   node's attested key. Only that keys node can open it; the operator
   carrying the file learns nothing; and the keys node accepts it only
   because the release names this provider key for the model.

``model provider-key`` makes the provider's key: the private half into a new
file (mode 0600), the public half printed for the release to name.

The data key exists only in this process's memory. ``model list`` and
``model inspect`` read manifests and sealed-file headers (no keys needed).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import Any, Final

from actors.key_custody import KeyCustodyError
from mantle.commands import MAX_SECONDS, IntegerIn
from nodes.clock import TrioClock
from nodes.model_store import (
    MANIFEST_NAME,
    ModelStoreError,
    SealedModelInfo,
    model_dir,
    read_sealed_header,
    seal_model_file,
    sealed_path,
)
from nodes.random import SystemRandom
from protocol.attestation import (
    AttestationError,
    AttestationVerifier,
    ConfigurationError,
    DocumentKind,
    Expectations,
    NitroAuthenticator,
    PcrPolicy,
    TrustAnchor,
    aws_nitro_root,
    noise_key_binding,
)
from protocol.key_custody import ENVELOPE_PROTOCOL, seal_data_key_import
from protocol.measurement import MissingPlatformRegisters, model_artifact_name, require_measured
from protocol.noise import KeyPair
from protocol.sealed_model import (
    DATA_KEY_SIZE,
    DEFAULT_CHUNK_SIZE,
    MAX_CHUNK_SIZE,
    SealedModelError,
)

EXIT_OK: Final = 0
EXIT_REFUSED: Final = 1
EXIT_UNUSABLE: Final = 2
DEFAULT_MAX_DOCUMENT_AGE_S: Final = 600
_MAX_INPUT_FILE: Final = 1 << 20


class _Unusable(Exception):
    pass


def _err(message: str) -> None:
    print(message, file=sys.stderr)


def _read_small(path: Path, what: str) -> bytes:
    with path.open("rb") as handle:
        data = handle.read(_MAX_INPUT_FILE + 1)
    if len(data) > _MAX_INPUT_FILE:
        raise _Unusable(f"{what} at {path} is too large")
    return data


def _static_key(text: str) -> bytes:
    key = b""
    with contextlib.suppress(ValueError):
        key = bytes.fromhex(text)
    if len(key) != 32:
        raise _Unusable("--keys-static must be 64 hex digits")
    return key


def _provider_key(path: Path) -> KeyPair:
    """The model provider's static key pair from its private key file (hex)."""
    try:
        private = bytes.fromhex(_read_small(path, "provider key").decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        private = b""
    if len(private) != 32:
        raise _Unusable(f"{path} does not hold a provider key (64 hex digits)")
    return KeyPair.from_private(ENVELOPE_PROTOCOL.dh, private)


def _verify_keys_node(args: argparse.Namespace) -> bytes:
    """The keys node's static key, once its attestation document verified."""
    static = _static_key(args.keys_static)
    anchor = (
        TrustAnchor.from_pem(_read_small(args.trust_root, "trust root"))
        if args.trust_root
        else aws_nitro_root()
    )
    # A policy file pinning only the application registers would admit any
    # machine on any image that extended the published digests: refused.
    policy = require_measured(PcrPolicy.from_json(_read_small(args.keys_policy, "keys policy")))
    verifier = AttestationVerifier([NitroAuthenticator(anchor)])
    verifier.verify(
        _read_small(args.keys_document, "keys node document"),
        kind=DocumentKind.NITRO,
        expectations=Expectations(
            pcr_policy=policy,
            max_age_ms=args.max_document_age * 1000,
            expected_public_key=noise_key_binding(static),
        ),
        now_ms=TrioClock().wall_ms(),
    )
    return static


def _model_add(args: argparse.Namespace) -> int:
    if not args.gguf.is_file():
        raise _Unusable(f"{args.gguf} is not a file")
    with args.gguf.open("rb") as handle:
        if handle.read(4) != b"GGUF":
            raise _Unusable(f"{args.gguf} is not a GGUF file (magic)")
    provider = _provider_key(args.provider_key)
    keys_static = _verify_keys_node(args)
    destination = sealed_path(args.store, args.model_id, args.key_version)
    if destination.exists():
        raise _Unusable(f"{destination} exists; choose another --key-version")
    random = SystemRandom()
    data_key = random.token_bytes(DATA_KEY_SIZE)
    info = seal_model_file(
        args.gguf,
        destination,
        model_id=args.model_id,
        key_version=args.key_version,
        data_key=data_key,
        random=random,
        chunk_size=args.chunk_size,
    )
    envelope = seal_data_key_import(
        args.model_id,
        data_key,
        keys_static,
        random.token_bytes,
        provider=provider,
        key_version=args.key_version,
    )
    del data_key
    import_path = destination.with_suffix(".import")
    import_path.write_bytes(envelope.encode())
    (model_dir(args.store, args.model_id) / MANIFEST_NAME).write_bytes(info.to_json())
    print(f"sealed {args.model_id} v{args.key_version}: {destination}")
    print(f"data key import for the keys node: {import_path}")
    print(
        f"release artifact {model_artifact_name(args.model_id)}:"
        f" length {info.plaintext_length} sha384 {info.plaintext_sha384.hex()}"
    )
    return EXIT_OK


def _model_provider_key(args: argparse.Namespace) -> int:
    key = KeyPair.generate(ENVELOPE_PROTOCOL.dh, SystemRandom().token_bytes)
    # O_EXCL: never overwrite a key a release may already name.
    fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key.private.hex() + "\n")
    print(f"provider key written to {args.out}")
    print(f"provider static public key (for the release): {key.public.hex()}")
    return EXIT_OK


def _model_list(args: argparse.Namespace) -> int:
    if not args.store.is_dir():
        raise _Unusable(f"{args.store} is not a directory")
    for manifest in sorted(args.store.rglob(MANIFEST_NAME)):
        info = SealedModelInfo.from_json(_read_small(manifest, "manifest"))
        print(
            f"{info.model_id} v{info.key_version}: {info.plaintext_length} bytes,"
            f" sha384 {info.plaintext_sha384.hex()}"
        )
    return EXIT_OK


def _model_inspect(args: argparse.Namespace) -> int:
    header = read_sealed_header(args.sealed)
    print(
        f"model {header.model_id} key version {header.key_version}"
        f" chunk size {header.chunk_size} (header not yet authenticated)"
    )
    return EXIT_OK


def _run(handler: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            status: int = handler(args)
            return status
        except AttestationError as exc:
            _err(f"keys node attestation refused [{exc.check.value}]: {exc}")
            return EXIT_REFUSED
        except MissingPlatformRegisters as exc:
            _err(f"keys policy refused: {exc}")
            return EXIT_REFUSED
        except (SealedModelError, ModelStoreError, KeyCustodyError) as exc:
            _err(f"model refused [{type(exc).__name__}]: {exc}")
            return EXIT_REFUSED
        except (_Unusable, ConfigurationError, ValueError) as exc:
            _err(f"error: {exc}")
            return EXIT_UNUSABLE
        except OSError as exc:
            _err(f"error: {exc.strerror or exc}: {exc.filename or ''}")
            return EXIT_UNUSABLE

    return run


def register(subparsers: Any) -> None:
    """Add the ``model`` group to ``mantle-node``."""
    model = subparsers.add_parser("model", help="seal model weights and register their keys")
    msub = model.add_subparsers(dest="model_command", metavar="STEP", required=True)

    p = msub.add_parser("add", help="seal a GGUF and wrap its data key for an attested keys node")
    p.add_argument("gguf", type=Path, help="the plaintext GGUF")
    p.add_argument("--model-id", required=True)
    p.add_argument("--store", type=Path, required=True, help="model store directory")
    # The key version range a keys node accepts for an import: refused here,
    # before anything is sealed, so no file is left whose key cannot be imported.
    p.add_argument("--key-version", type=IntegerIn(1, (1 << 32) - 1), default=1)
    p.add_argument("--chunk-size", type=IntegerIn(1, MAX_CHUNK_SIZE), default=DEFAULT_CHUNK_SIZE)
    p.add_argument("--keys-document", type=Path, required=True, help="keys node attestation")
    p.add_argument("--keys-static", required=True, help="keys node Noise static key (hex)")
    p.add_argument("--keys-policy", type=Path, required=True, help="PCR policy JSON")
    p.add_argument(
        "--provider-key", type=Path, required=True, help="model provider's private key file"
    )
    p.add_argument("--trust-root", type=Path, help="pinned root PEM (default: AWS Nitro)")
    p.add_argument(
        "--max-document-age",
        type=IntegerIn(1, MAX_SECONDS),
        default=DEFAULT_MAX_DOCUMENT_AGE_S,
        help="seconds",
    )
    p.set_defaults(handler=_run(_model_add))

    p = msub.add_parser("provider-key", help="make a model provider's static key")
    p.add_argument("out", type=Path, help="new file for the private key (hex, mode 0600)")
    p.set_defaults(handler=_run(_model_provider_key))

    p = msub.add_parser("list", help="list sealed models in a store")
    p.add_argument("--store", type=Path, required=True)
    p.set_defaults(handler=_run(_model_list))

    p = msub.add_parser("inspect", help="show a sealed file's header")
    p.add_argument("sealed", type=Path)
    p.set_defaults(handler=_run(_model_inspect))
