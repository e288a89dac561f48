"""``mantle-node release`` and ``mantle-node tlog``: operator tooling.

Release workflow (signing keys stay in operators' files, never on a node)::

    mantle-node release keygen --out alice.pem             # alice.pem + alice.pub.pem
    mantle-node release init --root root.json --threshold 2 --expires-days 365
    mantle-node release add-signer --root root.json --key alice.pub.pem --role targets
    mantle-node release add-signer --root root.json --key owner.pub.pem --role root
    mantle-node release sign root.json --key owner.pem
    mantle-node release build --out targets.json --version 7 --floor 6 --expires-days 90 \\
        --artifact config/cluster.json=./cluster.json --dir ./wheelhouse \\
        --model ./store/smollm2/manifest.json \\
        --image-measurements ./pcr-measurements.json
    # --model: the manifest `mantle-node model add` wrote; --image-measurements: the
    # node image's `nitro-tpm-pcr-compute --image UKI.efi` output; --floor: the
    # cluster's minimum release version, signed and logged with this release
    mantle-node release sign targets.json --key alice.pem --key bob.pem
    mantle-node tlog append --db tlog.sqlite --key log.pem --release-dir ./rel \\
        --trusted-root pinned-root.json
    mantle-node release verify --release-dir ./rel --trusted-root pinned-root.json \\
        --log-key log.pub.pem --artifacts-dir /opt/mantle --min-version 7

Transparency log::

    mantle-node tlog keygen --out log.pem
    mantle-node tlog init --db tlog.sqlite --key log.pem
    mantle-node tlog append --db tlog.sqlite --key log.pem --release-dir ./rel \\
        --trusted-root pinned-root.json
    mantle-node tlog prove --db tlog.sqlite --log-key log.pub.pem --release-dir ./rel \\
        --trusted-root pinned-root.json
    mantle-node tlog serve --db tlog.sqlite --log-key log.pub.pem --bind 127.0.0.1:8964
    mantle-node tlog verify --db tlog.sqlite --log-key log.pub.pem

Every command that verifies a release (``release verify``, ``tlog append``,
``tlog prove``) needs ``--trusted-root``: the root metadata the operator pins,
from a file they keep (e.g. a copy taken when the root was signed), never the
release directory's own ``root.json``.

Exit status: 0 success, 1 the release or log was refused (the failed check is
named on stderr), 2 unusable input (missing file, bad argument).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from securesystemslib.signer import CryptoSigner, SSlibKey  # type: ignore[attr-defined]

from actors.seams.store import StoreError
from mantle.commands import MAX_SECONDS, IntegerIn
from nodes.clock import TrioClock
from nodes.model_store import ModelStoreError, SealedModelInfo
from nodes.release import (
    LOG_PROOF_FILE,
    KeyFileError,
    ReleaseDirectory,
    artifact_paths_in,
    check_log_proof,
    hash_artifact,
    inclusion_proof_of,
    load_private_key,
    load_public_key,
    load_verified_metadata,
    read_metadata_file,
    read_small_file,
    verify_installed_artifacts,
    write_keypair,
    write_new_file,
)
from nodes.store import SqliteStore
from nodes.tlog import (
    TlogHttpApp,
    TransparencyLog,
    load_log_public_key,
    load_log_signing_key,
    serve_tlog,
    write_log_keypair,
)
from protocol.measurement import (
    IMAGE_MEASUREMENTS_ARTIFACT,
    MAX_IMAGE_MEASUREMENTS_BYTES,
    ImageMeasurementsError,
    model_artifact_name,
    parse_image_measurements,
)
from protocol.release import (
    DEFAULT_HASH_ALGORITHM,
    HASH_ALGORITHMS,
    MAX_ROOT_BYTES,
    MAX_TARGETS_BYTES,
    SIGNER_ROLES,
    ArtifactSpec,
    ReleaseError,
    VerifiedRelease,
    add_signer,
    metadata_from_bytes,
    metadata_to_bytes,
    new_root,
    new_targets,
    release_log_entry,
    sign_metadata,
)
from protocol.tlog import MerkleTree, TlogError, verify_consistency, verify_sth

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_UNUSABLE = 2
_KEY_TYPES = ("ed25519", "ecdsa-p256", "ecdsa-p384")


class _Unusable(Exception):
    """Input the command cannot work with (exit 2)."""


def _err(message: str) -> None:
    print(message, file=sys.stderr)


def _expiry(days: int) -> datetime:
    if days < 1:
        raise _Unusable("--expires-days must be at least 1")
    return datetime.now(UTC).replace(microsecond=0) + timedelta(days=days)


def _read_metadata(path: Path, role: str) -> Any:
    limit = MAX_ROOT_BYTES if role == "root" else MAX_TARGETS_BYTES
    return metadata_from_bytes(read_metadata_file(path, limit, f"{role} metadata"), role)


def _write_replacing(path: Path, data: bytes) -> None:
    # Write beside and rename, so a reader never sees half a metadata file.
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(data)
    temporary.replace(path)


def _signer(path: Path) -> CryptoSigner:
    return CryptoSigner(load_private_key(path))


def _name_and_path(spec: str) -> tuple[str, Path]:
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise _Unusable(f"--artifact wants NAME=PATH, got {spec!r}")
    return name, Path(path)


# -- release -------------------------------------------------------------------------


def _release_keygen(args: argparse.Namespace) -> int:
    key: Any
    if args.type == "ed25519":
        key = Ed25519PrivateKey.generate()
    elif args.type == "ecdsa-p256":
        key = ec.generate_private_key(ec.SECP256R1())
    else:
        key = ec.generate_private_key(ec.SECP384R1())
    public_path = write_keypair(args.out, key)
    keyid = SSlibKey.from_crypto(key.public_key()).keyid
    print(f"wrote {args.out} (keep it off every node) and {public_path}; keyid {keyid}")
    return EXIT_OK


def _release_init(args: argparse.Namespace) -> int:
    root = new_root(
        expires=_expiry(args.expires_days),
        targets_threshold=args.threshold,
        root_threshold=args.root_threshold,
    )
    write_new_file(args.root, metadata_to_bytes(root), 0o644)
    print(
        f"wrote {args.root}: targets threshold {args.threshold}, root threshold "
        f"{args.root_threshold}; add signers, then sign it with the root keys"
    )
    return EXIT_OK


def _release_add_signer(args: argparse.Namespace) -> int:
    root = _read_metadata(args.root, "root")
    key = SSlibKey.from_crypto(load_public_key(args.key))
    if key.keyid in root.signed.roles[args.role].keyids:
        raise _Unusable(f"key {key.keyid} already signs for {args.role}")
    had_signatures = bool(root.signatures)
    add_signer(root, key, args.role)
    role = root.signed.roles[args.role]
    _write_replacing(args.root, metadata_to_bytes(root))
    print(f"added {key.keyid} to {args.role} ({len(role.keyids)} keys, threshold {role.threshold})")
    if had_signatures:
        print("root changed: its signatures were removed; sign it again with the root keys")
    return EXIT_OK


def _release_build(args: argparse.Namespace) -> int:
    algorithms = args.hash or [DEFAULT_HASH_ALGORITHM]
    sources: dict[str, Path] = {}
    for spec in args.artifact or []:
        name, path = _name_and_path(spec)
        sources[name] = path
    for directory in args.dir or []:
        if not directory.is_dir():
            raise _Unusable(f"{directory} is not a directory")
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            sources.setdefault(path.relative_to(directory).as_posix(), path)
    # A model is listed by its plaintext digest, which the provider's sealing
    # manifest records: the operator never needs the plaintext weights, and
    # the inference node checks the decrypted bytes against this entry.
    models: dict[str, ArtifactSpec] = {}
    for manifest in args.model or []:
        if "sha384" not in algorithms:
            raise _Unusable("--model needs the sha384 hash (the model PCR measures it)")
        try:
            info = SealedModelInfo.from_json(read_small_file(manifest, 64 << 10, "manifest"))
        except ModelStoreError as error:
            raise _Unusable(f"{manifest}: {error}") from None
        name = model_artifact_name(info.model_id)
        if name in sources or name in models:
            raise _Unusable(f"{name} is listed twice")
        models[name] = ArtifactSpec(info.plaintext_length, {"sha384": info.plaintext_sha384})
    # The node image's reference measurements, as nitro-tpm-pcr-compute printed
    # them: listed as an artifact, and parsed into its signed `custom` field so
    # clients and keys nodes (which hold only metadata) pin PCR 4, 7 and 12.
    image: bytes | None = None
    if args.image_measurements is not None:
        if IMAGE_MEASUREMENTS_ARTIFACT in sources:
            raise _Unusable(f"{IMAGE_MEASUREMENTS_ARTIFACT} is listed twice")
        image = read_small_file(
            args.image_measurements, MAX_IMAGE_MEASUREMENTS_BYTES, "image measurements"
        )
        try:
            parse_image_measurements(image)
        except ImageMeasurementsError as error:
            raise _Unusable(f"{args.image_measurements}: {error}") from None
    elif IMAGE_MEASUREMENTS_ARTIFACT in sources:
        raise _Unusable(f"list {IMAGE_MEASUREMENTS_ARTIFACT} with --image-measurements")
    if not sources and not models and image is None:
        raise _Unusable("a release needs at least one --artifact, --dir or --model")
    if args.floor > args.version:
        raise _Unusable("--floor cannot be above the release's own --version")
    artifacts: dict[str, ArtifactSpec] = dict(models)
    for name, path in sorted(sources.items()):
        artifacts[name] = hash_artifact(path, algorithms)
    for name in sorted(artifacts):
        print(f"  {name}: {artifacts[name].length} bytes")
    targets = new_targets(
        version=args.version,
        expires=_expiry(args.expires_days),
        artifacts=artifacts,
        min_version=args.floor,
        image_measurements=image,
    )
    write_new_file(args.out, metadata_to_bytes(targets), 0o644)
    listed = len(targets.signed.targets)
    print(
        f"wrote {args.out}: release version {args.version} (floor {args.floor}), {listed}"
        f" artifacts{'' if image is not None else ', no node image'}, unsigned"
    )
    return EXIT_OK


def _release_sign(args: argparse.Namespace) -> int:
    data = read_metadata_file(args.metadata, MAX_TARGETS_BYTES, "metadata")
    try:
        role = metadata_from_bytes(data, "targets")
    except ReleaseError:
        role = metadata_from_bytes(data, "root")
    for key_path in args.key:
        keyid = sign_metadata(role, _signer(key_path))
        print(f"signed {role.signed.type} v{role.signed.version} with {keyid}")
    _write_replacing(args.metadata, metadata_to_bytes(role))
    return EXIT_OK


def _parse_now(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)
    moment: datetime | None = None
    with contextlib.suppress(ValueError):
        moment = datetime.fromisoformat(text)
    if moment is None:
        raise _Unusable("--now is not an ISO 8601 time")
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _pinned_root(path: Path, release: ReleaseDirectory) -> bytes:
    """The root metadata the operator pins, from a file they name.

    Never the release directory's own root.json: a root vouching for itself
    would let whoever wrote the directory sign anything.
    """
    if path.resolve() == release.root.resolve():
        raise _Unusable("--trusted-root names the release's own root.json; pin a copy you keep")
    return read_metadata_file(path, MAX_ROOT_BYTES, "pinned root")


def _release_verify(args: argparse.Namespace) -> int:
    release = ReleaseDirectory(args.release_dir)
    verified = load_verified_metadata(
        release,
        trusted_root=_pinned_root(args.trusted_root, release),
        now=_parse_now(args.now),
        min_version=args.min_version,
    )
    if args.log_key is not None:
        check_log_proof(
            verified, args.log_proof or release.log_proof, load_log_public_key(args.log_key)
        )
    elif not args.skip_log:
        raise _Unusable("give --log-key (the pinned log key), or --skip-log for a dry run")
    paths: dict[str, Path] = {}
    if args.artifacts_dir is not None:
        paths = artifact_paths_in(args.artifacts_dir, verified)
    for spec in args.artifact or []:
        name, path = _name_and_path(spec)
        paths[name] = path
    if paths:
        verify_installed_artifacts(verified, paths, require_all=args.artifacts_dir is not None)
    print(
        f"release version {verified.version} verified: signed by "
        f"{len(verified.signer_keyids)} release signer(s), {len(verified.artifacts)} artifacts"
        f"{' checked' if paths else ' (not checked: no --artifacts-dir)'}"
        f"{', in the log' if args.log_key else ''}; digest {verified.release_digest.hex()}"
    )
    return EXIT_OK


# -- tlog ---------------------------------------------------------------------------


def _open_log(db: Path, *, key: Path | None = None, log_key: Path | None = None) -> TransparencyLog:
    clock = TrioClock()
    if key is not None:
        return TransparencyLog(SqliteStore(db), clock=clock, signing_key=load_log_signing_key(key))
    assert log_key is not None
    return TransparencyLog(
        SqliteStore(db, read_only=True), clock=clock, public_key=load_log_public_key(log_key)
    )


def _write_proof(log: TransparencyLog, verified: VerifiedRelease, out: Path) -> None:
    document = inclusion_proof_of(log, release_log_entry(verified))
    _write_replacing(out, document.to_json_bytes())


def _tlog_keygen(args: argparse.Namespace) -> int:
    public_path = write_log_keypair(args.out)
    print(f"wrote {args.out} (the log's signing key) and {public_path} (pin this in clients)")
    return EXIT_OK


def _tlog_init(args: argparse.Namespace) -> int:
    log = _open_log(args.db, key=args.key)
    print(f"log at {args.db}: {log.size} entries; public key {log.public_key.hex()}")
    return EXIT_OK


def _tlog_append(args: argparse.Namespace) -> int:
    release = ReleaseDirectory(args.release_dir)
    # Only releases signed under the pinned root enter the log; expiry and
    # version are the node's business at boot.
    verified = load_verified_metadata(
        release,
        trusted_root=_pinned_root(args.trusted_root, release),
        now=datetime.now(UTC),
        min_version=0,
    )
    log = _open_log(args.db, key=args.key)
    index = log.append(release_log_entry(verified))
    out = args.proof_out or release.log_proof
    _write_proof(log, verified, out)
    print(f"release version {verified.version} is entry {index} of {log.size}; proof in {out}")
    return EXIT_OK


def _tlog_prove(args: argparse.Namespace) -> int:
    release = ReleaseDirectory(args.release_dir)
    verified = load_verified_metadata(
        release,
        trusted_root=_pinned_root(args.trusted_root, release),
        now=datetime.now(UTC),
        min_version=0,
    )
    log = _open_log(args.db, log_key=args.log_key)
    out = args.out or release.log_proof
    _write_proof(log, verified, out)
    print(f"proof of release version {verified.version} against tree size {log.size} in {out}")
    return EXIT_OK


def _tlog_serve(args: argparse.Namespace) -> int:
    import trio

    log = _open_log(args.db, log_key=args.log_key)
    app = TlogHttpApp(log, prefix=args.prefix)
    print(f"serving {args.db} read-only at http://{args.bind}{args.prefix}")
    trio.run(serve_tlog, app, args.bind)
    return EXIT_OK


def _tlog_verify(args: argparse.Namespace) -> int:
    """Audit the whole store: recompute the tree from the entries and check
    every stored head's signature, root, and consistency with the previous."""
    log = _open_log(args.db, log_key=args.log_key)
    size = log.size
    tree = MerkleTree()
    batch = 1024
    for start in range(0, size, batch):
        for entry in log.entries(start, min(size, start + batch) - 1):
            tree.append(entry)
    heads = log.tree_heads()
    previous = None
    for sth in heads:
        verify_sth(sth, log.public_key)
        if sth.tree_size > size or tree.root_hash(sth.tree_size) != sth.root_hash:
            raise TlogError(f"tree head at size {sth.tree_size} disagrees with the entries")
        if previous is not None:
            verify_consistency(
                previous.tree_size,
                sth.tree_size,
                previous.root_hash,
                sth.root_hash,
                log.consistency_proof(previous.tree_size, sth.tree_size),
            )
        previous = sth
    # Every append signs a head in the same transaction as its entries.
    if not heads or heads[-1].tree_size != size:
        raise TlogError(f"no signed tree head covers all {size} entries")
    print(f"log verified: {size} entries, {len(heads)} signed tree heads consistent")
    return EXIT_OK


# -- wiring -------------------------------------------------------------------------


def _run(handler: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            status: int = handler(args)
            return status
        except ReleaseError as exc:
            _err(f"release refused [{type(exc).__name__}]: {exc}")
            return EXIT_REFUSED
        except TlogError as exc:
            _err(f"log refused [{type(exc).__name__}]: {exc}")
            return EXIT_REFUSED
        except (_Unusable, KeyFileError, StoreError, ValueError) as exc:
            _err(f"error: {exc}")
            return EXIT_UNUSABLE
        except OSError as exc:
            _err(f"error: {exc.strerror or exc}: {exc.filename or ''}")
            return EXIT_UNUSABLE

    return run


# Number bounds (every numeric option is a bounded type; see mantle.commands).
# Versions stay below 2**32: far beyond any release cadence, and boot advances
# the TPM release counter to a new version one step at a time.
_MAX_VERSION = (1 << 32) - 1
_MAX_THRESHOLD = 256
_MAX_EXPIRES_DAYS = MAX_SECONDS // 86400
_VERSION = IntegerIn(1, _MAX_VERSION)
_EXPIRES_DAYS = IntegerIn(1, _MAX_EXPIRES_DAYS)
_THRESHOLD = IntegerIn(1, _MAX_THRESHOLD)
_PORT = IntegerIn(0, 65535)


def _bind(text: str) -> str:
    """``HOST:PORT`` with the port a number in 0-65535 (checked here, not by the server)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise argparse.ArgumentTypeError("expected HOST:PORT")
    _PORT(port)
    return text


def register(subparsers: Any) -> None:
    """Add the ``release`` and ``tlog`` groups to ``mantle-node``."""
    release = subparsers.add_parser("release", help="build, sign and verify release metadata")
    rsub = release.add_subparsers(dest="release_command", metavar="STEP", required=True)

    p = rsub.add_parser("keygen", help="generate a signer key file (keep it off nodes)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--type", choices=_KEY_TYPES, default="ed25519")
    p.set_defaults(handler=_run(_release_keygen))

    p = rsub.add_parser("init", help="create an unsigned root naming no signers yet")
    p.add_argument("--root", type=Path, required=True)
    p.add_argument(
        "--threshold", type=_THRESHOLD, required=True, help="release signatures needed (k)"
    )
    p.add_argument("--root-threshold", type=_THRESHOLD, default=1)
    p.add_argument("--expires-days", type=_EXPIRES_DAYS, default=365)
    p.set_defaults(handler=_run(_release_init))

    p = rsub.add_parser("add-signer", help="name a public key as a release or root signer")
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--key", type=Path, required=True, help="public (or private) PEM key file")
    p.add_argument("--role", choices=SIGNER_ROLES, default="targets")
    p.set_defaults(handler=_run(_release_add_signer))

    p = rsub.add_parser("build", help="hash artifacts into unsigned targets metadata")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--version", type=_VERSION, required=True)
    p.add_argument("--expires-days", type=_EXPIRES_DAYS, default=90)
    p.add_argument("--artifact", action="append", metavar="NAME=PATH")
    p.add_argument("--dir", action="append", type=Path, help="add every file under DIR")
    p.add_argument("--hash", action="append", choices=sorted(HASH_ALGORITHMS))
    p.add_argument(
        "--model",
        action="append",
        type=Path,
        metavar="MANIFEST",
        help="list a sealed model by the manifest `mantle-node model add` wrote",
    )
    p.add_argument(
        "--image-measurements",
        type=Path,
        metavar="JSON",
        help="the node image's reference PCRs, as `nitro-tpm-pcr-compute` printed them"
        f" (listed as {IMAGE_MEASUREMENTS_ARTIFACT}); without it no verifier admits the release",
    )
    p.add_argument(
        "--floor",
        type=IntegerIn(0, _MAX_VERSION),
        default=0,
        help="the cluster's minimum release version, published with this release"
        " (signed and logged): verifiers refuse releases below it",
    )
    p.set_defaults(handler=_run(_release_build))

    p = rsub.add_parser("sign", help="add signatures to root or targets metadata")
    p.add_argument("metadata", type=Path)
    p.add_argument("--key", type=Path, action="append", required=True)
    p.set_defaults(handler=_run(_release_sign))

    p = rsub.add_parser("verify", help="verify a release as a node does at boot")
    p.add_argument("--release-dir", type=Path, required=True)
    # Required: without a pin any self-signed root would verify.
    p.add_argument(
        "--trusted-root", type=Path, required=True, help="pinned root metadata (required)"
    )
    p.add_argument("--min-version", type=IntegerIn(0, _MAX_VERSION), default=0)
    p.add_argument("--log-key", type=Path, help="pinned log public key (PEM)")
    p.add_argument("--log-proof", type=Path, help=f"default: RELEASE_DIR/{LOG_PROOF_FILE}")
    p.add_argument("--skip-log", action="store_true", help="dry run without the log check")
    p.add_argument("--artifacts-dir", type=Path)
    p.add_argument("--artifact", action="append", metavar="NAME=PATH")
    p.add_argument("--now", help="verify as of this ISO 8601 time")
    p.set_defaults(handler=_run(_release_verify))

    tlog = subparsers.add_parser("tlog", help="the release transparency log")
    tsub = tlog.add_subparsers(dest="tlog_command", metavar="STEP", required=True)

    p = tsub.add_parser("keygen", help="generate the log's Ed25519 signing key")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(handler=_run(_tlog_keygen))

    p = tsub.add_parser("init", help="create an empty log database")
    p.add_argument("--db", type=Path, required=True)
    p.add_argument("--key", type=Path, required=True)
    p.set_defaults(handler=_run(_tlog_init))

    p = tsub.add_parser("append", help="log a signed release and write its proof")
    p.add_argument("--db", type=Path, required=True)
    p.add_argument("--key", type=Path, required=True)
    p.add_argument("--release-dir", type=Path, required=True)
    p.add_argument("--trusted-root", type=Path, required=True, help="pinned root metadata")
    p.add_argument("--proof-out", type=Path)
    p.set_defaults(handler=_run(_tlog_append))

    p = tsub.add_parser("prove", help="write a release's proof against the newest tree head")
    p.add_argument("--db", type=Path, required=True)
    p.add_argument("--log-key", type=Path, required=True)
    p.add_argument("--release-dir", type=Path, required=True)
    p.add_argument("--trusted-root", type=Path, required=True, help="pinned root metadata")
    p.add_argument("--out", type=Path)
    p.set_defaults(handler=_run(_tlog_prove))

    p = tsub.add_parser("serve", help="serve the log read-only (RFC 6962 §4 shape)")
    p.add_argument("--db", type=Path, required=True)
    p.add_argument("--log-key", type=Path, required=True)
    p.add_argument("--bind", type=_bind, default="127.0.0.1:8964", help="HOST:PORT")
    p.add_argument("--prefix", default="/ct/v1/")
    p.set_defaults(handler=_run(_tlog_serve))

    p = tsub.add_parser("verify", help="audit the whole log against its signed tree heads")
    p.add_argument("--db", type=Path, required=True)
    p.add_argument("--log-key", type=Path, required=True)
    p.set_defaults(handler=_run(_tlog_verify))


__all__ = ["register"]
